import json

import pytest

from vaekit import Config
from vaekit.errors import VaekitError
from vaekit.runs.migrations import migrate


def test_roundtrip_through_json_keeps_every_setting_of_every_part():
    cfg = Config().replace(model={"hidden": [32, 16], "data_shape": [1, 8, 8], "prior": {"name": "mog", "components": 3}},
                           train={"objective": {"name": "factorvae", "gamma": 7}})
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["model"]["prior"] == {"name": "mog", "components": 3}
    assert d["train"]["objective"] == {"name": "factorvae", "kl": "auto", "gamma": 7.0, "discriminator_hidden": [1000] * 6}
    back = Config.from_dict(d)
    assert back == cfg and back.model.data_dim == 64 and back.train.objective["gamma"] == 7.0
    assert back.model.hidden == (32, 16) and back.model.prior["components"] == 3


def test_a_table_without_a_name_changes_the_settings_of_the_part_it_had():
    cfg = Config().replace(train={"objective": {"name": "capacity", "gamma": 5}})
    assert cfg.replace(train={"objective": {"capacity_max": 3}}).train.objective["gamma"] == 5.0
    fresh = cfg.replace(train={"objective": "factorvae"}).train.objective  # another part starts from its defaults
    assert fresh.name == "factorvae" and fresh["gamma"] == 40.0


@pytest.mark.parametrize(
    "d, message",
    [
        ({"modle": {}}, "unknown key 'modle'; did you mean 'model'"),
        ({"train": {"batchsize": 3}}, "did you mean 'batch_size'"),
        ({"train": {"epochs": "ten"}}, "epochs: expected int, got str 'ten'"),
        ({"train": {"epochs": 2.5}}, "epochs: expected int, got float"),
        ({"model": {"hidden": [10, -1]}}, "[model] hidden must be > 0, got -1"),
        ({"model": {"likelihood": {"name": "gaussian", "sigma": 0}}}, "[model.likelihood] sigma must be >= 1e-06, got 0"),
        ({"train": {"objective": {"name": "elbo", "beta": -1}}}, "[train.objective] beta must be >= 0, got -1"),
        ({"train": {"objective": {"name": "elbo", "gama": 1}}}, "objective 'elbo' has no setting 'gama'"),
        ({"train": {"objective": {"name": "capacity", "gama": 1}}}, "has no setting 'gama'; did you mean 'gamma'"),
        ({"model": {"sigma": 0.5}}, ("sigma is a setting of the likelihood since vaekit 0.3: write it in its table, "
                                     "[model.likelihood] sigma")),
        ({"train": {"train_k": 5}}, "[train.objective] k = …"),
        ({"train": {"lr": float("nan")}}, "lr must be finite and > 0, got nan"),
        ({"model": {"likelihood": "student-t"}}, "'student-t' is not one of bernoulli"),
    ],
)
def test_bad_config_names_field_and_value(d, message):
    with pytest.raises(VaekitError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Config.from_dict(d)


def test_readme_table_of_choices_comes_from_the_registries():
    from pathlib import Path

    from vaekit.cli.flags import registry_tables

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("<!-- registries -->\n")[1].split("<!-- /registries -->")[0]
    assert block == registry_tables(), "README's table is stale: paste vaekit.cli.flags.registry_tables() into it"
    for name in ("standard", "mog", "diagonal", "full", "bernoulli", "gaussian", "elbo", "iwae", "mlp", "conv"):
        assert f"| `{name}` |" in block


def test_a_config_json_of_0_2_is_read_with_its_flat_settings_moved_into_the_parts_that_read_them():
    old = {"model": {"likelihood": "gaussian", "sigma": 0.3, "prior": "standard", "prior_components": 10,
                     "posterior": "iaf", "flow_steps": 4, "data_shape": [6]},
           "train": {"objective": "iwae", "train_k": 5, "dreg": True, "beta": 1.0, "gamma": None, "num_samples": 3}}
    cfg = Config.from_dict(migrate(old))
    assert cfg.model.likelihood.as_dict() == {"name": "gaussian", "sigma": 0.3}
    assert cfg.model.posterior.as_dict() == {"name": "iaf", "flow_steps": 4}
    assert cfg.model.prior.as_dict() == {"name": "standard"}  # components: stored by 0.2, read by no standard prior
    assert cfg.train.objective.as_dict() == {"name": "iwae", "k": 5, "dreg": True}  # num_samples: iwae reads none


def test_a_run_directory_written_by_0_2_still_evaluates_to_the_same_numbers(tmp_path):
    """A run's config.json rewritten in 0.2's layout (every setting flat, the parts' included, as 0.2 wrote
    them) evaluates to the same numbers: the mixture keeps its 3 components and Q its 3 flow steps."""
    import shutil

    from run_cli import vaekit_cli

    import vaekit

    cfg = Config().replace(model={"latent_dim": [3], "hidden": [16], "prior": {"name": "mog", "components": 3},
                                  "posterior": {"name": "iaf", "flow_steps": 3}},
                           train={"epochs": 1, "batch_size": 128, "objective": {"name": "iwae", "k": 2}})
    vaekit.train_run(cfg, tmp_path / "new", progress=False)
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    new = json.loads((tmp_path / "new" / "config.json").read_text())
    model = {**new["model"], "likelihood": "bernoulli", "sigma": 0.1, "prior": "mog", "prior_components": 3,
             "posterior": "iaf", "flow_steps": 3, "arch": "mlp"}
    train = {**new["train"], "objective": "iwae", "train_k": 2, "dreg": False, "beta": 1.0, "kl_warmup_epochs": 0.0,
             "num_samples": 1, "kl": "auto", "estimator": "reparameterization", "tc_estimator": "mws",
             "dip_lambda_od": 10.0, "dip_lambda_d": None, "gamma": None, "discriminator_hidden": [1000] * 6,
             "capacity_max": 25.0, "capacity_epochs": 25.0}
    old = {"model": model, "data": new["data"], "train": train, "versions": {"vaekit": "0.2.0", "torch": "2.13.0"}}
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    numbers = [json.loads(vaekit_cli("evaluate", tmp_path / run, "--k", "5", "--json").stdout) for run in ("new", "old")]
    assert numbers[0] == numbers[1] and numbers[0]["n"] > 0
