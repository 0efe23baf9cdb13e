"""The rest of what the twenty-second attack found (issue 27), and round 21's wording still open, each made for real."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from test_trust_attack5 import one_line

import vaekit
from vaekit.cli import main
from vaekit.data.table_files import MAX_TABLE_CELLS
from vaekit.runs.config import Config

TINY = ("--likelihood", "gaussian", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--seed", "1")


def _main(*argv):
    return main(["--quiet", *map(str, argv)])


def _rows(path, n=120, d=4, seed=0):
    np.save(path, np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))
    return path


def _vaekit(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "vaekit", *map(str, argv)], cwd=cwd, capture_output=True, text=True,
                          check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_newline_in_a_name_stays_on_the_refusals_and_the_warnings_one_line(tmp_path):
    """A file named with a newline broke the one-line rule (and an escape sequence reached the terminal): control
    characters are written as escapes, in a refusal, in argparse's, and in a warning."""
    refused = _vaekit("evaluate", "r\nun\x1b[31m", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr == "vaekit: error: r\\nun\\x1b[31m: no such run directory\n", refused.stderr
    parsed = _vaekit("train", "--latent-dim", "1\n2", cwd=tmp_path)
    assert parsed.returncode == 2 and parsed.stderr.count("\n") == 1 and "'1\\n2'" in parsed.stderr, parsed.stderr
    _rows(tmp_path / "d.npy")
    (tmp_path / "c\n.toml").write_text('[data]\ndataset = "d.npy"\ndigest = "00"\n')
    warned = _vaekit("train", "--config", "c\n.toml", *TINY, "--out", "R", cwd=tmp_path)
    assert warned.returncode == 0, warned.stderr
    assert "c\\n.toml: [data] digest: recorded by vaekit of the data it trains on, not a setting; not used\n" \
        in warned.stderr, warned.stderr


def test_a_config_files_digest_and_size_are_said_unused(tmp_path, caplog):
    """[data] digest and size in a --config file were overwritten without a word: they are what vaekit records."""
    _rows(tmp_path / "d.npy")
    (tmp_path / "c.toml").write_text(f'[data]\ndataset = "{tmp_path / "d.npy"}"\ndigest = "00"\nsize = 5\n')
    assert _main("train", "--config", tmp_path / "c.toml", *TINY, "--out", tmp_path / "R") == 0
    assert f"{tmp_path / 'c.toml'}: [data] digest and size: recorded by vaekit of the data it trains on, not " \
        "settings; not used" in caplog.text
    recorded = json.loads((tmp_path / "R" / "config.json").read_text())["data"]
    assert recorded["size"] == (tmp_path / "d.npy").stat().st_size and len(recorded["digest"]) == 64


def test_a_runs_data_gone_is_said_by_every_command_with_its_flag(tmp_path, capsys):
    """evaluate, reconstruct, encode, report on a run whose data file moved said "no such file"; they say the run's
    data are gone and how to name where they lie now. sample, which reads no data, still works."""
    data = _rows(tmp_path / "d.npy")
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    data.rename(tmp_path / "moved.npy")
    gone = f"{data}: the run's data are gone (moved or removed); put them back there, or name where they lie now " \
        "with --dataset"
    for command in (("evaluate",), ("reconstruct",), ("encode", "--out", tmp_path / "z.npz"), ("report", "--k", "2")):
        assert one_line(capsys, command[0], tmp_path / "R", *command[1:]) == gone
    assert _main("evaluate", tmp_path / "R", "--dataset", tmp_path / "moved.npy", "--k", "2") == 0
    assert _main("sample", tmp_path / "R", "--n", "4") == 0


def test_a_table_runs_data_gone_is_said_by_score_without_a_flag_it_lacks(tmp_path, capsys):
    """score's --data is the table to score: the run's own table (its threshold) gone is said, with no --dataset."""
    rows = pd.DataFrame({"x": np.linspace(0, 1, 40), "c": ["a", "b"] * 20})
    rows.to_csv(tmp_path / "t.csv", index=False)
    rows.to_csv(tmp_path / "u.csv", index=False)
    assert _main("train", "--dataset", tmp_path / "t.csv", "--likelihood", "mixed", "--latent-dim", "2", "--hidden",
                 "8", "--epochs", "1", "--out", tmp_path / "T") == 0
    assert one_line(capsys, "score", tmp_path / "T", "--data", tmp_path / "u.csv", "--k", "1", "--out",
                    tmp_path / "s.csv") == "--k 1 is out of range: importance samples per example from 2 to " \
        "1,000,000 (the Monte Carlo error needs two weights)"
    assert one_line(capsys, "impute", tmp_path / "T", "--data", tmp_path / "u.csv", "--draws", 10**9, "--out",
                    tmp_path / "i.csv") == "--draws 1,000,000,000: 1,000,000,000 completed tables of 80 cells " \
        f"exceed {MAX_TABLE_CELLS:,} cells, the most vaekit reads or writes in a table"
    (tmp_path / "t.csv").unlink()
    assert one_line(capsys, "score", tmp_path / "T", "--data", tmp_path / "u.csv", "--out", tmp_path / "s.csv") == \
        f"{tmp_path / 't.csv'}: the run's data are gone (moved or removed); put them back there"


def test_an_unfitted_sampler_is_refused_before_the_evaluation(tmp_path, capsys, monkeypatch):
    """evaluate --samples N --sampler gmm evaluated the whole test split, then said the sampler was never fitted."""
    from vaekit.cli import commands

    data = _rows(tmp_path / "d.npy")
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    monkeypatch.setattr(commands, "evaluate_all", lambda *a, **k: pytest.fail("evaluated before the refusal"))
    assert one_line(capsys, "evaluate", tmp_path / "R", "--samples", "20", "--sampler", "two-stage") == \
        f"{tmp_path / 'R' / 'samplers' / 'two-stage'}: missing; fit it first: vaekit fit-sampler {tmp_path / 'R'} " \
        "--sampler two-stage"
    assert one_line(capsys, "fit-sampler", tmp_path / "R", "--sampler", "two-stage", "--epochs", 10**23) == \
        f"--epochs must be a number of epochs from 1 to 1,099,511,627,776, got {10**23}"


def test_resume_refusals_name_the_config_file_the_python_words_and_no_advice_a_resume_refuses(tmp_path, capsys):
    """A --config file's setting refused on a resume did not name the file; Python callers of train_run were told
    --resume and --out; --flow-steps on a resume advised --posterior iaf, which the resume then refused."""
    data = _rows(tmp_path / "d.npy")
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    (tmp_path / "c.toml").write_text("[model]\nlatent_dim = 3\n")
    assert one_line(capsys, "train", "--resume", "--out", tmp_path / "R", "--config", tmp_path / "c.toml") == \
        f"--resume: [model] latent_dim = [3] (in {tmp_path / 'c.toml'}) differs from the run's [2], and it cannot " \
        "change on --resume; train a new run into another --out"
    assert one_line(capsys, "train", "--resume", "--out", tmp_path / "R", "--latent-dim", "3") == \
        "--resume: [model] latent_dim = [3] differs from the run's [2], and it cannot change on --resume; train a " \
        "new run into another --out"
    assert one_line(capsys, "train", "--resume", "--out", tmp_path / "R", "--flow-steps", "2") == \
        "--flow-steps is a setting of --posterior iaf, not of diagonal; the run's --posterior cannot change on --resume"
    assert one_line(capsys, "train", "--flow-steps", "2", "--dataset", data, "--out", tmp_path / "S") == \
        "--flow-steps is a setting of --posterior iaf, not of diagonal: add --posterior iaf"
    cfg = Config.from_dict({"data": {"dataset": str(data)}, "model": {"latent_dim": 3, "hidden": [8],
                                                                       "likelihood": "gaussian"}})
    with pytest.raises(vaekit.VaekitError, match=r"differs from the run's \[2\], and it cannot change on resume=True; "
                       r"train a new run into another out$"):
        vaekit.train_run(cfg, tmp_path / "R", resume=True, progress=False)


def test_data_of_another_shape_and_a_fit_runs_data_name_each_commands_flag(tmp_path, capsys):
    """The shape refusal told a CLI user to "point [data] dataset"; a vaekit.fit run's advice gave score --dataset,
    whose flag is --data."""
    data = _rows(tmp_path / "d.npy")
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    _rows(tmp_path / "wide.npy", d=6)
    assert one_line(capsys, "evaluate", tmp_path / "R", "--dataset", tmp_path / "wide.npy") == \
        f"wide.npy: examples of shape (6,), but the model of {tmp_path / 'R'} was trained on shape (4,); name data " \
        "of that shape (--dataset; dataset= in Python)"
    vaekit.fit(vaekit.VAE(data_dim=4, latent_dim=2, hidden=(8,), likelihood="gaussian"), torch.randn(60, 4),
               epochs=1, out=tmp_path / "F", progress=False)
    assert one_line(capsys, "evaluate", tmp_path / "F").endswith(
        "continue it with vaekit.fit(model, x, out=RUN, resume=True); evaluate and encode take the data as --dataset "
        "FILE, score as --data FILE")


def test_an_npz_of_given_splits_carries_their_factors(tmp_path, caplog):
    """factors_train and factors_test beside train and test were ignored without a word (disentanglement had no
    factors); they are the splits' factors, as y_train and y_test are their labels."""
    from vaekit.data import load_dataset

    rng = np.random.default_rng(0)
    x = {k: rng.standard_normal((n, 4)).astype(np.float32) for k, n in (("train", 30), ("test", 10))}
    f = {k: rng.integers(0, 3, (len(v), 2)) for k, v in x.items()}
    np.savez(tmp_path / "s.npz", **x, factors_train=f["train"], factors_test=f["test"].astype(np.float32) / 2,
             factor_names=np.array(["size", "shade"]))
    ds = load_dataset(str(tmp_path / "s.npz"), support="real")
    assert ds.factor_names == ("size", "shade")
    assert torch.equal(ds.factors["test"], torch.from_numpy(f["test"].astype(np.float32) / 2).double())
    assert ds.factors["test"].dtype == ds.factors["train"].dtype == torch.float64  # one split's values: all values
    assert sorted(ds.factors) == ["test", "train", "val"]  # val drawn from train, its factors with it
    assert len(ds.factors["train"]) + len(ds.factors["val"]) == 30 and len(ds.factors["val"]) == len(ds.splits["val"])
    np.savez(tmp_path / "part.npz", **x, factors_train=f["train"])
    with pytest.raises(vaekit.VaekitError, match=r"part.npz: factors factors_train given but not factors_test; give "
                       r"one factor array per split, or none$"):
        load_dataset(str(tmp_path / "part.npz"), support="real")
    np.savez(tmp_path / "wide.npz", **x, factors_train=f["train"], factors_test=np.zeros((10, 3)))
    with pytest.raises(vaekit.VaekitError, match=r"wide.npz: the splits' factors differ in number: factors_train 2, "
                       r"factors_test 3$"):
        load_dataset(str(tmp_path / "wide.npz"), support="real")
    np.savez(tmp_path / "x.npz", x=x["train"], factors_train=f["train"])
    load_dataset(str(tmp_path / "x.npz"), support="real")
    assert "ignoring the array factors_train: every split is drawn from x" in caplog.text
