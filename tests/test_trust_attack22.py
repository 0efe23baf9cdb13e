"""What the twenty-second attack found (issue 27), each made for real."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_trust_attack5 import one_line

from vaekit.cli import main
from vaekit.data import folder_files, load_dataset
from vaekit.runs import opening

TINY = ("--likelihood", "gaussian", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--seed", "1")


def _main(*argv):
    return main(["--quiet", *map(str, argv)])


def _rows(path, n=300, seed=0):
    np.save(path, np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32))
    return path


def _edit_data(run, **values):
    cfg = json.loads((run / "config.json").read_text())
    for key, value in values.items():
        if value is None:
            cfg["data"].pop(key)
        else:
            cfg["data"][key] = value
    (run / "config.json").write_text(json.dumps(cfg, indent=2))


def test_a_run_of_before_sizes_hashes_no_stranger_when_its_file_is_gone(tmp_path, capsys, monkeypatch):
    """A run written before vaekit recorded sizes, its file moved away: a 1 TB --dataset was hashed whole (killed
    at 60 s), under evaluate and under train --resume. With nothing to compare, another path is another source."""
    data = _rows(tmp_path / "g.npy")
    assert _main("train", "--dataset", data, *TINY, "--val-size", "100", "--out", tmp_path / "R") == 0
    _edit_data(tmp_path / "R", size=None)
    data.rename(tmp_path / "moved.npy")
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((10, 4), np.float32))
    with open(big, "r+b") as f:
        f.truncate(1 << 40)
    hashed, real = [], opening.data_digest
    monkeypatch.setattr(opening, "data_digest", lambda p: hashed.append(str(p)) or real(p))
    assert _main("evaluate", tmp_path / "R", "--dataset", big, "--k", "2") == 0
    assert _main("train", "--dataset", big, "--out", tmp_path / "R", "--epochs", "2", "--resume") == 2  # refused
    assert hashed == []


def test_a_recorded_size_beyond_a_tebibyte_is_read(tmp_path, capsys, caplog):
    """vaekit writes the size of data over 1 TiB, and then refused its own config.json: "[data] size … out of range
    (at most 1099511627776)". A size is any whole number of bytes a file may have."""
    data = _rows(tmp_path / "g.npy")
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    _edit_data(tmp_path / "R", size=1 << 41)
    assert _main("evaluate", tmp_path / "R", "--k", "2") == 0
    assert f"its size is not the {1 << 41:,} bytes config.json records" in caplog.text
    _edit_data(tmp_path / "R", size=1 << 63)
    assert one_line(capsys, "evaluate", tmp_path / "R", "--k", "2").startswith(
        f"{tmp_path / 'R' / 'config.json'}: [data] size")


def test_folders_nested_thousands_deep_are_listed_not_a_recursion_error(tmp_path, capsys):
    """os.walk recurses: a folder 1,100 deep (even empty, in the run's own image folder) was a RecursionError."""
    folder = tmp_path / "im"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    assert _main("train", "--dataset", folder, "--latent-dim", "2", "--hidden", "8", "--epochs", "1",
                 "--out", tmp_path / "I") == 0
    deep = str(folder)
    for _ in range(1100):
        deep = os.path.join(deep, "d")
        os.mkdir(deep)
    assert sorted(folder_files(folder)) == sorted(folder.glob("*.png"))
    assert _main("evaluate", tmp_path / "I", "--k", "2", "--json") == 0
    assert '"n": 2,' in capsys.readouterr().out  # the run's 20 images, unchanged: nothing in the deep folders


def test_report_on_other_data_names_them(tmp_path, capsys):
    """`report RUN --dataset OTHER` wrote OTHER's numbers into RUN/report.html without naming OTHER."""
    data = _rows(tmp_path / "g.npy")
    other = _rows(tmp_path / "other.npy", seed=1)
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    assert _main("report", tmp_path / "R", "--k", "2") == 0
    page = (tmp_path / "R" / "report.html").read_text()
    assert f"Metrics (test split of {data}, n = 30)" in page and "not of the data the run" not in page
    assert _main("report", tmp_path / "R", "--k", "2", "--dataset", other) == 0
    page = (tmp_path / "R" / "report.html").read_text()
    assert f"Metrics (test split of {other}, n = 30)" in page
    assert f"these numbers and pictures are of {other}, not of the data the run was trained on ({data})" in page


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_closed_stdout_and_help_on_a_full_disk_are_said(tmp_path):
    """`vaekit evaluate RUN >&-` dropped its results with exit status 0 (print writes nothing where sys.stdout is
    None); `vaekit --help > /dev/full` said nothing and exited 0 (argparse swallows the OSError)."""
    data = _rows(tmp_path / "g.npy", 100)
    cmd = [sys.executable, "-m", "vaekit", "--quiet"]
    assert subprocess.run([*cmd, "train", "--dataset", str(data), *TINY, "--out", str(tmp_path / "R")],
                          capture_output=True, timeout=300, check=False).returncode == 0
    closed = subprocess.run([*cmd, "evaluate", str(tmp_path / "R"), "--k", "2"], stderr=subprocess.PIPE, text=True,
                            timeout=300, check=False, preexec_fn=lambda: os.close(1))
    assert (closed.returncode, closed.stderr) == (2, "vaekit: error: cannot write to standard output (it is closed)\n")
    with open("/dev/full", "w") as full:
        helped = subprocess.run([*cmd, "--help"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
                                check=False)
    assert (helped.returncode, helped.stderr) == (
        2, "vaekit: error: cannot write to standard output (No space left on device)\n")


def test_an_npz_of_given_splits_takes_their_labels(tmp_path, caplog):
    """An .npz of train, test and y dropped y without a word, and --condition label then asked for "an .npz with
    'y'", which the file had. Given splits take their labels as y_train and y_test (and y_val); y and factors beside
    them are said unused; labels for some splits only are refused."""
    rng = np.random.default_rng(0)
    train, test = rng.random((60, 4), np.float32), rng.random((10, 4), np.float32)
    np.savez(tmp_path / "y.npz", train=train, test=test, y=np.zeros(70, int))
    assert load_dataset(str(tmp_path / "y.npz"), "none", "unit").labels == {}
    assert "y.npz: ignoring the array y: with the splits given as train and test, their labels are y_train and " \
           "y_test (and y_val), and factors go with x" in caplog.text
    np.savez(tmp_path / "yy.npz", train=train, test=test, y_train=np.arange(60) % 3, y_test=np.arange(10) % 3)
    read = load_dataset(str(tmp_path / "yy.npz"), "none", "unit", val_size=0)
    assert read.labels_of("train").tolist() == (np.arange(60) % 3).tolist()
    assert read.labels_of("test").tolist() == (np.arange(10) % 3).tolist()
    np.savez(tmp_path / "y1.npz", train=train, test=test, y_train=np.arange(60) % 3)
    with pytest.raises(Exception, match="y1.npz: labels y_train given but not y_test; give one label array per split"):
        load_dataset(str(tmp_path / "y1.npz"), "none", "unit")
