"""What the twentieth attack found (issue 27), each made for real."""

import numpy as np

from vaekit.cli import main
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
