"""What the sixteenth attack found (issue 27), each made for real: a file, a link, a label, a table cell."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_trust_attack5 import one_line

from vaekit.cli import main
from vaekit.evaluation.overflow import overflowing_rows
from vaekit.evaluation.tables import _scores, score
from vaekit.runs.checkpoint import load_run

TINY = ("--latent-dim", "2", "--hidden", "8", "--seed", "1", "--batch-size", "32")


def _train(capsys, *argv):
    assert main(["--quiet", "train", *map(str, argv)]) == 0
    capsys.readouterr()


def test_a_conditional_vaes_classes_are_bounded_and_cost_their_one_hot_rows(tmp_path, capsys):
    """A conditional VAE's one-hot codes came from `torch.eye(classes)`: one label of 99,999 in a 22 KB file asked
    for 40 GB (the sixteenth attack), and after that evaluate's draws and the report's pictures still carried a
    C-wide code each (the seventeenth). Conditioning takes at most 1,000 classes (ImageNet's); at that bound a run
    trains and evaluates under a 3 GB address-space limit, and its codes are the labels' one-hot rows."""
    rng = np.random.default_rng(0)
    x, y = (rng.random((300, 16)) > 0.5).astype(np.float32), rng.integers(0, 3, 300)
    y[0] = 99_999
    np.savez(tmp_path / "far.npz", x=x, y=y)
    said = one_line(capsys, "train", "--dataset", tmp_path / "far.npz", "--condition", "label", *TINY, "--epochs", 1,
                    "--out", tmp_path / "f")
    assert said == "far.npz has labels up to 99999; a conditional VAE takes at most 1,000 classes (0…999)"
    y[0] = 999
    np.savez(tmp_path / "lab.npz", x=x, y=y)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); from vaekit.cli import "
            "main; sys.exit(main(sys.argv[1:]))")
    run = tmp_path / "r"
    for argv in (["train", "--dataset", str(tmp_path / "lab.npz"), "--condition", "label", *TINY, "--epochs", "1",
                  "--out", str(run)], ["evaluate", str(run), "--k", "5"]):
        proc = subprocess.run([sys.executable, "-c", code, "--quiet", *argv], check=False, capture_output=True,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    model = load_run(run)[1]
    assert model.condition.classes == 1000
    codes = model.condition(torch.tensor([0, 999, 2]))
    assert codes.shape == (3, 1000) and codes.sum().item() == 3
    assert codes[1, 999] == 1 and codes[0, 0] == 1 and codes[2, 2] == 1


def test_condition_classes_past_the_labels_bound_is_one_line(tmp_path, capsys):
    """config.json's condition_classes of 10¹² ended in `torch.eye`'s integer-overflow traceback."""
    run = tmp_path / "r"
    _train(capsys, "--dataset", "digits", "--condition", "label", *TINY, "--epochs", "1", "--out", run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["condition_classes"] = 10**12
    (run / "config.json").write_text(json.dumps(cfg))
    for command in ("evaluate", "sample", "encode"):
        said = one_line(capsys, command, run, *(["--out", tmp_path / "o.npy"] if command != "evaluate" else []))
        assert "condition_classes" in said and "1000" in said, said


DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_json_in_every_file_read_is_one_line(tmp_path, capsys):
    """metrics.jsonl, tracking.json, a two-stage sampler's fitted_on.json and a --schema file nested past Python's
    stack gave a RecursionError traceback (and a run that could not resume): each is one line now."""
    run = tmp_path / "r"
    _train(capsys, "--dataset", "digits", *TINY, "--epochs", "1", "--out", run)
    metrics = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(metrics + DEEP + "\n")
    assert "line 2 is not a metrics record (nested too deeply)" in one_line(capsys, "plot", run)
    assert "nested too deeply" in one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume")
    (run / "metrics.jsonl").write_text(metrics)
    (run / "tracking.json").write_text("[" * 30_000 + "]" * 30_000)
    assert one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume") == (
        f"{run / 'tracking.json'}: not valid JSON; remove it to start a new tracked run")
    (tmp_path / "deep.json").write_text(DEEP)
    said = one_line(capsys, "train", "--dataset", "penguins", "--likelihood", "mixed", "--schema", tmp_path / "deep.json",
                    *TINY, "--epochs", "1", "--out", tmp_path / "t")
    assert said == f"{tmp_path / 'deep.json'}: not a JSON schema (nested too deeply)"


def test_a_sampler_folder_whose_record_is_nested_too_deeply_is_fitted_again(tmp_path, capsys):
    from vaekit.runs.samplers import fitted_on

    (tmp_path / "fitted_on.json").write_text("[" * 2000 + "]" * 2000)  # 4,000 bytes: under the file's bound
    assert fitted_on(tmp_path / "fitted_on.json") is None


@pytest.fixture
def table_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    lines = ["x,y,c"] + [f"{a:.3f},{b:.3f},{c}" for a, b, c in zip(rng.normal(size=200), rng.normal(5, 1, 200),
                                                                 rng.choice(["a", "b"], 200))]
    (folder / "t.csv").write_text("\n".join(lines) + "\n")
    run = folder / "run"
    assert main(["--quiet", "train", "--dataset", str(folder / "t.csv"), "--likelihood", "mixed", *TINY, "--epochs",
                 "2", "--out", str(run)]) == 0
    return folder, run, lines


def test_a_row_far_outside_the_training_data_is_named_and_scored_inf_not_blamed_on_the_weights(table_run, capsys,
                                                                                              caplog):
    """A cell of 1e30 made the model's distributions overflow: every command said the run's weights were damaged
    ('retrain'). score ranks that row first with an infinite score and the others as before; impute names its line."""
    folder, run, lines = table_run
    capsys.readouterr()
    data = folder / "far.csv"
    data.write_text("\n".join([lines[0], "1e30,5,a", *lines[2:40]]) + "\n")
    near = folder / "near.csv"
    near.write_text("\n".join([lines[0], *lines[2:40]]) + "\n")
    assert main(["--quiet", "score", str(run), "--data", str(data), "--out", str(folder / "s.csv"), "--k", "20"]) == 0
    assert f"{data}: line 2: the model's distributions overflow on it" in caplog.text
    got = list(csv.DictReader((folder / "s.csv").read_text().splitlines()))
    assert got[0]["line"] == "2" and got[0]["score"] == "inf" and got[0]["flagged"] == "1"
    assert main(["--quiet", "score", str(run), "--data", str(near), "--out", str(folder / "n.csv"), "--k", "20"]) == 0
    others = {r["line"]: r["score"] for r in csv.DictReader((folder / "n.csv").read_text().splitlines())}
    assert len(others) == 38 and all(float(v) < 1e3 for v in others.values())
    assert one_line(capsys, "impute", run, "--data", data, "--out", folder / "i.csv") == (
        f"{data}: line 2: the model's distributions overflow on it, not on the other rows nor on the rows the run was "
        "trained on: the values lie far outside them (Expected parameter scale)")


def test_the_rows_a_model_overflows_on_are_those_and_no_other(table_run):
    """The rows found are those whose score, computed alone, torch.distributions refuses or is not finite (valid
    distributions, a log-density inf − inf); the others score finite numbers in the batch."""
    model = load_run(table_run[1])[1]
    x = torch.tensor([[0.5, 5.0, 0.0], [1e30, 5.0, 1.0], [0.1, 4.0, 1.0], [-1e30, 5.0, 0.0], [3.0, 1e20, 1.0],
                      [1e3, 5.0, 0.0]], dtype=torch.float64)

    def refused_alone(i):
        try:
            return not bool(torch.isfinite(_scores(model, x[i : i + 1].float(), 10)[0]).all())
        except ValueError as e:
            assert "Expected parameter" in str(e)
            return True

    far = [i for i in range(len(x)) if refused_alone(i)]
    assert {1, 3, 4} <= set(far) and not {0, 2} & set(far)
    assert overflowing_rows(model, x) == far
    s = score(model, x, k=10)
    rest = [i for i in range(len(x)) if i not in far]
    assert torch.isinf(s.score[far]).all() and torch.isnan(s.columns[far]).all() and torch.isfinite(s.score[rest]).all()


def test_a_gaussian_run_on_data_a_million_spreads_out_names_the_data(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    np.save(tmp_path / "g.npy", x)
    x[:, 0] = 1e30
    np.save(tmp_path / "far.npy", x)
    run = tmp_path / "r"
    _train(capsys, "--dataset", tmp_path / "g.npy", "--likelihood", "gaussian", *TINY, "--epochs", "2", "--out", run)
    said = one_line(capsys, "evaluate", run, "--dataset", tmp_path / "far.npy", "--k", 5)
    assert said.startswith(f"{tmp_path / 'far.npy'}: example 0 of the test split (its value 1e+30 at position 0) and "
                           "every other one: the model's distributions overflow on every row, not on the rows the run "
                           "was trained on"), said
    x[:, 0] = np.load(tmp_path / "g.npy")[:, 0]
    x[7, 2] = 1e30  # one example: named by its value, as the split's order is not the file's
    np.save(tmp_path / "one.npy", x)
    said = one_line(capsys, "evaluate", run, "--dataset", tmp_path / "one.npy", "--k", 5, "--split", "train")
    assert "(its value 1e+30 at position 2): the model's distributions overflow on it, not on the other rows" in said
    x[:, 0] = 1e20  # encode wrote a standard deviation of inf with rc 0 (the seventeenth attack)
    np.save(tmp_path / "e20.npy", x)
    said = one_line(capsys, "encode", run, "--dataset", tmp_path / "e20.npy", "--out", tmp_path / "e.npz")
    assert "and every other one: the model's distributions overflow on every row, not on the rows the run was trained on" in said
    assert not (tmp_path / "e.npz").exists()


def test_damaged_weights_are_not_blamed_on_the_data(tmp_path, capsys):
    """The seventeenth attack (HIGH): a damaged weight overflows on some rows and not others, as far-out data do:
    evaluate blamed the run's own digits, score wrote a table of inf with rc 0. The data are blamed only where the
    run's own rows pass; score refuses where its validation rows overflow."""
    from safetensors.torch import load_file, save_file

    run = tmp_path / "r"
    _train(capsys, "--dataset", "digits", *TINY, "--epochs", "1", "--out", run)
    weights = load_file(run / "model.safetensors")
    weights["encoder.net.0.weight"][:, 20] = 1e30
    save_file(weights, run / "model.safetensors", metadata={"epoch": "1", "step": "41"})
    for argv in (("--split", "train"), ("--dataset", "digits")):
        said = one_line(capsys, "evaluate", run, "--k", 2, *argv)
        assert said.startswith("the model's weights make an invalid distribution (Expected parameter"), said


def test_score_refuses_where_the_runs_own_rows_overflow(table_run, capsys, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, run, _ = table_run
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    weights = load_file(broken / "model.safetensors")
    weights["encoder.net.0.weight"][:, 0] = 1e30
    save_file(weights, broken / "model.safetensors")
    said = one_line(capsys, "score", broken, "--data", folder / "t.csv", "--out", tmp_path / "s.csv", "--k", 5)
    assert "rows of the validation split of" in said and "its own data: model.safetensors is damaged" in said
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("name", ["config.json", "train_state.pt"])
def test_a_dangling_link_in_a_runs_file_slot_is_said_as_such(tmp_path, capsys, name):
    """A config.json (or train_state.pt) that is a link to a missing file was read as no file: --resume said 'no
    checkpoint', a fresh start said 'pass --resume', and one advice was to delete the only readable weights."""
    run = tmp_path / "r"
    _train(capsys, "--dataset", "digits", *TINY, "--epochs", "1", "--out", run)
    (run / name).unlink()
    (run / name).symlink_to(tmp_path / "gone" / name)
    for argv in (("--resume",), ("--dataset", "digits", *TINY)):
        said = one_line(capsys, "train", "--out", run, "--epochs", 2, *argv)
        assert said.startswith(f"{run / name}: a symbolic link to {tmp_path / 'gone' / name}, which leads to no file"), said
    assert (run / "model.safetensors").exists()
    (run / name).unlink()
    (run / name).symlink_to(run / name)  # a loop
    assert "which leads to no file (gone, or links in a loop)" in one_line(capsys, "train", "--out", run, "--resume")


def test_the_wording_the_sixteenth_attack_found(tmp_path, capsys, caplog):
    run = tmp_path / "r"
    _train(capsys, "--dataset", "digits", *TINY, "--epochs", "1", "--out", run)
    out = tmp_path / "x"
    (out / "certificate.json").mkdir(parents=True)  # found before 20 epochs of training, not after them
    assert one_line(capsys, "reproduce", "digits-demo", "--budget", "quick", "--out", out) == (
        f"{out / 'certificate.json'}: a folder where the certificate is to be written; remove it or choose another --out")
    assert not (out / "seed-0").exists()
    os.mkfifo(tmp_path / "fifo")
    assert one_line(capsys, "plot", run, "--out", tmp_path / "fifo") == (
        f"{tmp_path / 'fifo'}: is a FIFO, not a folder; choose another path")
    lock = tmp_path / "l"
    (lock / ".vaekit.lock").mkdir(parents=True)
    assert one_line(capsys, "train", "--dataset", "digits", *TINY, "--epochs", "1", "--out", lock) == (
        f"{lock / '.vaekit.lock'}: not a regular file (a folder); remove it")
    (tmp_path / "c.toml").write_text("[train.objective]\nkl_balance = 1\n")
    said = one_line(capsys, "train", "--dataset", "digits", "--config", tmp_path / "c.toml", "--out", tmp_path / "c")
    assert said.endswith("c.toml: [train.objective] kl_balance: expected bool, got int 1"), said  # the ELBO's table
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(["train", "--out", str(run), "--epochs", "1", "--resume"]) == 0
    assert "trained 1 epochs already (epochs = 1): nothing to train" in caplog.text and "resuming" not in caplog.text
