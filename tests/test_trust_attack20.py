"""What the twentieth attack found (issue 27), each made for real."""

import numpy as np

from vaekit.cli import main
from vaekit.data import load_dataset
from vaekit.runs import opening

TINY = ("--likelihood", "gaussian", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--seed", "1")


def _main(*argv):
    return main(["--quiet", *map(str, argv)])


def test_another_source_is_told_without_hashing_it(tmp_path, capsys, monkeypatch):
    """Whether --dataset is the run's own source was decided by hashing it whole: a folder holding a 1 TB (sparse)
    file, or a 1 TB .npy, ran for ~20 minutes before the reader's one-line refusal. A size (a folder's file list)
    other than the run's file's tells another source unread; a byte-identical copy is still the run's own."""
    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    assert _main("train", "--dataset", data, *TINY, "--val-size", "100", "--out", tmp_path / "VS") == 0
    (tmp_path / "sp").mkdir()
    with open(tmp_path / "sp" / "big.png", "wb") as f:
        f.truncate(1 << 40)
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((10, 4), np.float32))
    with open(big, "r+b") as f:
        f.truncate(1 << 40)
    hashed = []
    real = opening.data_digest
    monkeypatch.setattr(opening, "data_digest", lambda p: hashed.append(str(p)) or real(p))
    capsys.readouterr()
    assert _main("evaluate", tmp_path / "VS", "--dataset", tmp_path / "sp", "--k", "2") == 2
    assert "big.png: cannot read image" in capsys.readouterr().err
    assert _main("evaluate", tmp_path / "VS", "--dataset", big, "--k", "2") == 0  # its 10 rows
    capsys.readouterr()
    assert not any("sp" in h or "big" in h for h in hashed), hashed
    copy = tmp_path / "copy.npy"
    copy.write_bytes(data.read_bytes())
    assert _main("evaluate", tmp_path / "VS", "--dataset", copy, "--split", "val", "--k", "2", "--json") == 0
    assert '"n": 100,' in capsys.readouterr().out and str(copy) in hashed


def test_the_runs_own_path_changed_since_is_another_source(tmp_path, capsys, caplog):
    """`evaluate RUN --dataset <the run's own path>` on a file changed since training gave no warning, and kept the run's
    split of other rows: one appended row reshuffled the seeded split, so most "test" rows were training rows. The
    path named or not, the change is said first, and the file is split as a new source."""
    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    assert _main("train", "--dataset", data, *TINY, "--val-size", "50", "--out", tmp_path / "R") == 0
    np.save(data, np.concatenate([np.load(data), np.load(data)[:1]]))
    capsys.readouterr()
    n = len(load_dataset(str(data), support="real").split("val"))  # the file's own default split, not the run's 50
    assert n != 50
    for given in ((), ("--dataset", data)):
        caplog.clear()
        assert _main("evaluate", tmp_path / "R", *given, "--split", "val", "--k", "2", "--json") == 0
        assert f'"n": {n},' in capsys.readouterr().out
        assert f"{data}, the run's data, changed since it was trained" in caplog.text, given


def test_an_impossible_analytic_kl_is_said_and_its_folder_can_be_trained_again(tmp_path, capsys):
    """--kl analytic with a pair that has no closed form ended as "non-finite values … no closed-form KL", and the
    config.json it left could be neither trained again ("already holds a run") nor resumed with another --kl."""
    run = tmp_path / "KA"
    argv = ("train", "--dataset", "digits", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--out", run,
            "--posterior", "iaf")
    assert _main(*argv, "--kl", "analytic") == 2
    assert capsys.readouterr().err.strip() == ("vaekit: error: kl 'analytic': no closed-form KL between Q "
                                               "(IAFDistribution) and p(z) (Independent); use kl 'auto' (the closed "
                                               "form where one exists) or 'mc'")
    hint = f" ({run} holds no checkpoint, only the config.json of a run stopped before its first: remove that file to " \
           "train another run there)"
    for resume in ((), ("--resume",)):
        assert _main(*argv, "--kl", "mc", *resume) == 2
        assert capsys.readouterr().err.strip().endswith(hint)
    (run / "config.json").unlink()
    assert _main(*argv, "--kl", "mc") == 0
    capsys.readouterr()
    assert _main(*argv, "--kl", "mc") == 2
    assert capsys.readouterr().err.strip() == f"vaekit: error: {run}: already holds a run; pass --resume to continue " \
                                              "it or choose another --out"
