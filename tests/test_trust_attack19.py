"""What the nineteenth attack left (issue 27), each made for real: a run's val_size against a smaller file, a range
refusal that names the TOML key instead of the flag typed, a table row named by its codes, vaekit.fit advising CLI
flags, and numbers on a changed data file given without a word."""

import json

import numpy as np
import pytest
import torch
from test_trust_attack5 import one_line

import vaekit
from vaekit.cli import main
from vaekit.data import load_dataset
from vaekit.errors import NonFiniteLossError, VaekitError

TINY = ("--likelihood", "gaussian", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--seed", "1")


def _rows(path, n, seed=0):
    np.save(path, np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32))
    return path


def _main(*argv):
    return main(["--quiet", *map(str, argv)])


def _evaluated(capsys, *argv):
    assert main(["--quiet", "evaluate", *map(str, argv), "--k", "2", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_run_with_val_size_reads_a_smaller_file_split_as_that_file_splits(tmp_path, capsys):
    """A run trained with --val-size 100 refused any file of fewer rows ("val_size 100 must be smaller than the 72
    training examples"), even for --split test: another file is split as it splits by default; the run's own bytes, at
    any path, keep the run's split."""
    mine = _rows(tmp_path / "g.npy", 400)
    assert _main("train", "--dataset", mine, *TINY, "--val-size", "100", "--out", tmp_path / "VS") == 0
    capsys.readouterr()
    small = tmp_path / "g80.npy"
    np.save(small, np.load(mine)[:80])
    default = load_dataset(str(small), support="real")
    for split in ("test", "val"):
        got = _evaluated(capsys, tmp_path / "VS", "--dataset", small, "--split", split)
        assert got["n"] == len(default.split(split)) < 100
    assert _main("encode", tmp_path / "VS", "--dataset", small, "--split", "all", "--out", tmp_path / "e.npz") == 0
    assert np.load(tmp_path / "e.npz")["mean"].shape == (80, 2)
    assert _main("reconstruct", tmp_path / "VS", "--dataset", small, "--out", tmp_path / "r.png") == 0
    copy = tmp_path / "copy.npy"
    copy.write_bytes(mine.read_bytes())
    capsys.readouterr()
    assert _evaluated(capsys, tmp_path / "VS", "--dataset", copy, "--split", "val")["n"] == 100
    assert _evaluated(capsys, tmp_path / "VS", "--split", "val")["n"] == 100


@pytest.mark.parametrize("argv, said", [
    (["--objective", "iwae", "--train-k", "100000000"], "--train-k must be > 0 and <= 10000, got 100000000"),
    (["--train-k", "5"], "--train-k is a setting of --objective iwae, not of elbo: add --objective iwae"),
    (["--gamma", "3"], ("--gamma is a setting of --objective capacity or factorvae, not of elbo: add --objective "
                       "capacity or factorvae")),
    (["--prior", "mog", "--prior-components", "0"], "--prior-components must be > 0 and <= 65536, got 0"),
    (["--latent-dim", "0"], "--latent-dim must be > 0, got 0"),
])
def test_a_refused_flag_is_named_as_typed(tmp_path, capsys, argv, said):
    """"command line: [train.objective] k must be …" named the TOML key of a value the user typed as --train-k."""
    assert one_line(capsys, "train", "--dataset", "digits", "--epochs", "1", *argv, "--out", tmp_path / "A") == said
    assert not (tmp_path / "A").exists()


def test_a_far_table_row_is_named_by_its_column(tmp_path, capsys):
    """A table's far-out row was named by its codes ("its value 1e+30 at position 5"): by the column's name now."""
    from palmerpenguins import load_penguins
    table = load_penguins()
    table.to_csv(tmp_path / "p.csv", index=False)
    assert _main("train", "--dataset", tmp_path / "p.csv", "--likelihood", "mixed", "--latent-dim", "2", "--hidden",
                 "16", "--epochs", "1", "--out", tmp_path / "T") == 0
    far = table.copy()
    far.loc[5, "body_mass_g"] = 1e30
    far.to_csv(tmp_path / "far.csv", index=False)
    capsys.readouterr()
    said = one_line(capsys, "encode", tmp_path / "T", "--dataset", tmp_path / "far.csv", "--split", "all", "--out",
                    tmp_path / "e.npz")
    assert "(its column 'body_mass_g': 1e+30): the model's distributions overflow on it" in said, said


def _digits_vae(likelihood="bernoulli"):
    torch.manual_seed(0)
    return vaekit.VAE(data_dim=64, latent_dim=2, hidden=(16,), likelihood=likelihood)


def test_vaekit_fit_advises_its_own_keywords_not_the_command_lines_flags():
    """vaekit.fit said "Try a smaller --lr, --grad-clip 100 …" and "use --binarize", flags it does not take."""
    x = load_dataset("digits").split("train").float() / 16
    with pytest.raises(VaekitError, match=r'use binarize="dynamic" \(or "static"\)') as grey:
        vaekit.fit(_digits_vae(), x, epochs=1, progress=False)
    with pytest.raises(NonFiniteLossError) as far:
        vaekit.fit(_digits_vae("gaussian"), x * 1e19, epochs=1, progress=False)
    with pytest.raises(NonFiniteLossError) as lr:
        vaekit.fit(_digits_vae(), x, epochs=1, lr=1e30, progress=False, binarize="dynamic")
    assert "skip_nonfinite=N skips N such batches" in str(far.value) and "grad_clip=100" in str(far.value)
    assert "with resume=True and a smaller lr" in str(lr.value)
    assert all("--" not in str(e.value) for e in (grey, far, lr))


def test_evaluate_on_a_changed_data_file_says_so_first(tmp_path, capsys, caplog):
    """`evaluate RUN` on a data file that changed since training gave numbers with no word (only the overflow paths and
    score read the sha256)."""
    data = _rows(tmp_path / "g.npy", 200)
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    assert _main("evaluate", tmp_path / "R", "--k", "2") == 0
    assert "changed" not in caplog.text
    np.save(data, np.concatenate([np.load(data), np.load(data)[:5]]))
    assert _main("evaluate", tmp_path / "R", "--k", "2") == 0
    err = caplog.text
    assert f"{data}, the run's data, changed since it was trained (its size is not the {json.loads((tmp_path / 'R' / 'config.json').read_text())['data']['size']:,} " \
           "bytes config.json records)" in err
