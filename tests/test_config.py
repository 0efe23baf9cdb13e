import pytest

from vaekit import Config
from vaekit.errors import VaekitError


def test_roundtrip():
    cfg = Config().replace(model={"hidden": [32, 16], "data_shape": [1, 8, 8]})
    assert Config.from_dict(cfg.to_dict()) == cfg and cfg.model.data_dim == 64


@pytest.mark.parametrize(
    "d, message",
    [
        ({"modle": {}}, "unknown key 'modle'; did you mean 'model'"),
        ({"train": {"batchsize": 3}}, "did you mean 'batch_size'"),
        ({"train": {"epochs": "ten"}}, "epochs: expected int, got str 'ten'"),
        ({"train": {"epochs": 2.5}}, "epochs: expected int, got float"),
        ({"model": {"hidden": [10, -1]}}, "hidden sizes must be > 0"),
        ({"model": {"sigma": 0}}, "sigma must be > 0, got 0"),
        ({"train": {"beta": -1}}, "beta must be >= 0, got -1"),
        ({"train": {"lr": float("nan")}}, "lr must be > 0"),
        ({"model": {"likelihood": "student-t"}}, "'student-t' is not one of bernoulli"),
    ],
)
def test_bad_config_names_field_and_value(d, message):
    with pytest.raises(VaekitError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Config.from_dict(d)


def test_readme_table_of_choices_comes_from_the_registries():
    from pathlib import Path

    from vaekit.runs.config import registry_tables

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("<!-- registries -->\n")[1].split("<!-- /registries -->")[0]
    assert block == registry_tables(), "README's table is stale: paste vaekit.runs.config.registry_tables() into it"
    for name in ("standard", "mog", "diagonal", "full", "bernoulli", "gaussian", "elbo", "iwae", "mlp", "conv"):
        assert f"| `{name}` |" in block
