"""What the eighth held-out attack left (issue 27), each made for real: a config.json edited by hand between
checkpoints, a seeded run's files that differed in their wall-clock seconds, `vaekit.load` on a device."""

import json

import pytest
import torch
from test_trust_attack5 import one_line

import vaekit
from vaekit.cli import main
from vaekit.runs.checkpoint import load_state

TRAIN = ("train", "--dataset", "digits", "--latent-dim", 2, "--hidden", 16, "--seed", 3)


def test_a_config_json_edited_between_checkpoints_is_refused_on_resume(tmp_path, capsys):
    """config.json was the only record of the settings: β changed in it by hand went on training another objective
    under the same run, silently. train_state.pt now records them; what a resume may change (lr) still changes."""
    run = tmp_path / "r"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "1", "--out", str(run)]) == 0
    original = (run / "config.json").read_text()
    edited = json.loads(original)
    edited["train"]["objective"]["beta"] = 4.0
    (run / "config.json").write_text(json.dumps(edited))
    said = one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume")
    assert said == (f"{run / 'config.json'}: [train.objective] beta = 4.0, but train_state.pt was trained with 1.0: "
                    "config.json was changed since the last checkpoint, and that setting cannot change on a resume; "
                    "restore it, or train a new run elsewhere")
    assert load_state(run)["epoch"] == 1  # nothing trained
    (run / "config.json").write_text(original)
    # a resume that changes a setting it may (lr) and stops before its next checkpoint leaves config.json ahead of
    # the state: the next resume goes on
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "1", "--lr", "5e-4", "--resume"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 5e-4
    assert json.loads(load_state(run)["config"])["train"]["lr"] == 1e-3
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "2", "--resume"]) == 0
    state = load_state(run)
    assert state["epoch"] == 2 and json.loads(state["config"])["train"]["lr"] == 5e-4
    on_disk = json.loads((run / "config.json").read_text())
    assert json.loads(state["config"]) == {k: on_disk[k] for k in ("model", "data", "train")}

def test_a_state_whose_recorded_config_is_no_json_is_refused(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "1", "--out", str(run)]) == 0
    state = load_state(run)
    state["config"] = "{not json"
    torch.save(state, run / "train_state.pt")
    said = one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume")
    assert said == (f"{run / 'train_state.pt'}: config is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); the file is damaged or belongs to another "
                    "run; restore it, or delete it and model.safetensors and pass --resume to start the run again "
                    "from step 0")


def test_a_seeded_run_writes_the_same_bytes_twice_metrics_included(tmp_path):
    """metrics.jsonl held each epoch's wall-clock seconds: two runs of one seed differed in it (the brief: files
    included). Every file of the two run directories is now the same, byte for byte."""
    for name in ("a", "b"):
        assert main(["--quiet", *map(str, TRAIN), "--epochs", "2", "--out", str(tmp_path / name)]) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_file())
    assert {"metrics.jsonl", "train_state.pt", "model.safetensors", "config.json"} <= set(files)
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir() if p.is_file())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    first = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[0]
    assert set(json.loads(first)) >= {"epoch", "step", "train/elbo", "val/elbo"}


def test_load_takes_a_device_and_refuses_one_it_cannot_use(tmp_path):
    """`vaekit.load(run, device=…)` was a TypeError; a model is now loaded where asked, or refused in one line."""
    run = tmp_path / "r"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "1", "--out", str(run)]) == 0
    model = vaekit.load(run, device=torch.device("cpu"))
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    reference = vaekit.load(run)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True))
    for device, said in [("tpu", "vaekit.load: device 'tpu': use cpu, cuda, cuda:N or auto"),
                         (3, "vaekit.load: device must be a name such as 'cpu' or 'cuda', got int")]:
        with pytest.raises(vaekit.VaekitError) as e:
            vaekit.load(run, device=device)
        assert str(e.value) == said
    if not torch.cuda.is_available():
        with pytest.raises(vaekit.VaekitError, match="^vaekit.load: device cuda: this torch build or machine has no CUDA"):
            vaekit.load(run, device="cuda")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_column_name_with_a_control_character_is_refused(tmp_path, suffix):
    """A header `a\\x00b` trained (exit 0): the name went invisibly into every output (imputed tables, reports)."""
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        path.write_text("a\x00b,c\n" + "".join(f"{i / 7},{'xy'[i % 2]}\n" for i in range(20)))
    else:
        pd = pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")
        pd.DataFrame({"a\x1bb": [i / 7 for i in range(20)], "c": list("xy" * 10)}).to_parquet(path, index=False)
    name = "'a\\x00b'" if suffix == ".csv" else "'a\\x1bb'"
    with pytest.raises(vaekit.VaekitError) as e:
        vaekit.read_table(path)
    assert str(e.value) == f"{path}: column 1 of the header, {name}, holds a control character; rename it"


def test_a_run_that_lost_its_weights_file_gets_it_back_from_its_state(tmp_path, capsys):
    """model.safetensors gone beside a train_state.pt: evaluate said only 'missing', and a resume with no epoch
    left wrote nothing (reproduce of a finished seed could never evaluate). The state holds the weights."""
    run = tmp_path / "r"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "1", "--out", str(run)]) == 0
    weights = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").unlink()
    said = one_line(capsys, "evaluate", run, "--k", 5)
    assert said == (f"{run / 'model.safetensors'}: missing; train_state.pt holds them: `vaekit train --out {run} "
                    "--resume` writes it")
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "1", "--resume"]) == 0
    assert (run / "model.safetensors").read_bytes() == weights
