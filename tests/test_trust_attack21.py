"""What the twenty-first attack found (issue 27), each made for real."""

import numpy as np
from test_trust_attack20 import refused_unhashed

from vaekit.cli import main

TINY = ("--likelihood", "gaussian", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--seed", "1")


def _main(*argv):
    return main(["--quiet", *map(str, argv)])


def test_the_runs_changed_file_by_another_spelling_is_said_changed(tmp_path, capsys, caplog):
    """The run's own file, changed since training and named `./../d/f` or through a link, got no warning (only the
    recorded string was compared) and its default split held training rows as "test"."""
    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    np.save(data, np.concatenate([np.load(data), np.load(data)[:1]]))
    (tmp_path / "link.npy").symlink_to(data)
    (tmp_path / "sub").mkdir()
    for spelling in (tmp_path / "link.npy", tmp_path / "sub" / ".." / "g.npy"):
        caplog.clear()
        assert _main("evaluate", tmp_path / "R", "--dataset", spelling, "--k", "2") == 0
        assert f"{spelling}, the run's data, changed since it was trained" in caplog.text, spelling


def test_a_folder_is_not_hashed_where_the_runs_own_file_is_gone(tmp_path, capsys, monkeypatch):
    """With the run's file moved away there is no size to compare, and a wrong folder named by --dataset was hashed
    whole (a 1 TB sparse file in it: ~20 minutes) before the reader refused it."""
    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    assert _main("train", "--dataset", data, *TINY, "--val-size", "100", "--out", tmp_path / "VM") == 0
    data.rename(tmp_path / "moved.npy")
    (tmp_path / "sp").mkdir()
    with open(tmp_path / "sp" / "big.png", "wb") as f:
        f.truncate(1 << 40)
    refused_unhashed(tmp_path / "VM", tmp_path / "sp", capsys, monkeypatch)
    assert _main("evaluate", tmp_path / "VM", "--dataset", tmp_path / "moved.npy", "--split", "val", "--k", "2",
                 "--json") == 0
    assert '"n": 100,' in capsys.readouterr().out  # the moved file is still the run's own bytes: its split
