"""What the twenty-second attack found (issue 27), each made for real."""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
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
    deep = [str(folder)]
    for _ in range(1100):
        deep.append(os.path.join(deep[-1], "d"))
        os.mkdir(deep[-1])
    try:
        assert sorted(folder_files(folder)) == sorted(folder.glob("*.png"))
        assert _main("evaluate", tmp_path / "I", "--k", "2", "--json") == 0
        assert '"n": 2,' in capsys.readouterr().out  # the run's 20 images, unchanged: nothing in the deep folders
    finally:  # removed here, deepest first: pytest's own clean-up (shutil.rmtree) recurses, and would fail on them
        for path in reversed(deep[1:]):
            os.rmdir(path)


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
           "y_test (and y_val), their factors factors_train and factors_test (and factors_val)" in caplog.text
    np.savez(tmp_path / "yy.npz", train=train, test=test, y_train=np.arange(60) % 3, y_test=np.arange(10) % 3)
    read = load_dataset(str(tmp_path / "yy.npz"), "none", "unit", val_size=0)
    assert read.labels_of("train").tolist() == (np.arange(60) % 3).tolist()
    assert read.labels_of("test").tolist() == (np.arange(10) % 3).tolist()
    np.savez(tmp_path / "y1.npz", train=train, test=test, y_train=np.arange(60) % 3)
    with pytest.raises(Exception, match="y1.npz: labels y_train given but not y_test; give one label array per split"):
        load_dataset(str(tmp_path / "y1.npz"), "none", "unit")


def _unsize(run):
    """A run as vaekit wrote it before sizes: none in config.json, nor in the state's record of its config."""
    _edit_data(run, size=None)
    state = torch.load(run / "train_state.pt", weights_only=True)
    record = json.loads(state["config"])
    del record["data"]["size"]
    state["config"] = json.dumps(record)
    torch.save(state, run / "train_state.pt")


def test_a_resume_records_the_size_a_run_of_before_sizes_lacks(tmp_path, capsys):
    """A run of before sizes stayed exposed for ever (its own file grown to 1 TB: hashed whole): a resume, which
    confirms the bytes, records their size."""
    data = _rows(tmp_path / "g.npy")
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    _unsize(tmp_path / "R")
    assert _main("train", "--out", tmp_path / "R", "--epochs", "2", "--resume") == 0
    assert json.loads((tmp_path / "R" / "config.json").read_text())["data"]["size"] == data.stat().st_size
    assert _main("train", "--out", tmp_path / "R", "--epochs", "3", "--resume") == 0  # the state's record lacks it


def test_data_written_to_while_hashed_are_refused(tmp_path, capsys, monkeypatch):
    """The sha256 and the size were taken at different moments: a file appended to in between left a run whose record
    no file matches, which could never resume. Both now come from the same open file, and a change is refused."""
    data = _rows(tmp_path / "g.npy")
    real = hashlib.file_digest

    def appending(stream, name):
        digest = real(stream, name)
        with open(data, "ab") as f:
            f.write(b"\0" * 24)
        return digest
    monkeypatch.setattr(opening.hashlib, "file_digest", appending)
    assert one_line(capsys, "train", "--dataset", data, *TINY, "--out", tmp_path / "R") == \
        f"{data}: written to while vaekit read it; try again once nothing writes to it"


def test_a_linked_folder_is_said_not_followed_and_a_non_image_refused_as_met(tmp_path, capsys, caplog):
    """A link to a folder inside an image folder was skipped without a word (its images silently not data)."""
    folder, other = tmp_path / "im", tmp_path / "cats"
    for where, n in ((folder, 6), (other, 4)):
        where.mkdir()
        for i in range(n):
            Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(where / f"{i:02d}.png")
    (folder / "cats").symlink_to(other)
    read = load_dataset(str(folder), "none", "unit", val_size=0)
    assert len(read.split("train")) + len(read.eval_split("test")) == 6  # not the 4 linked ones
    assert f"{folder / 'cats'}: a link to a folder, not followed (it may lead anywhere); put the images themselves, " \
           f"or links to the image files, in {folder}" in caplog.text
    (folder / "notes.txt").write_text("x")
    with pytest.raises(Exception, match="notes.txt: not a PNG or JPEG image"):
        load_dataset(str(folder), "none", "unit")


def test_resume_names_the_runs_data_where_other_bytes_are_named(tmp_path, capsys, caplog):
    """With the run's data gone, other bytes named by --dataset were refused as a change of path ("train a new run"),
    right after the advice to name where the data lie; a copy of them was called "moved"."""
    data = _rows(tmp_path / "g.npy")
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    changed = np.load(data)
    changed[5, 2] += 1
    np.save(tmp_path / "changed.npy", changed)
    shutil.copy(data, tmp_path / "copy.npy")
    with caplog.at_level(logging.INFO):
        assert _main("train", "--dataset", tmp_path / "copy.npy", "--out", tmp_path / "R", "--epochs", "2",
                     "--resume") == 0
    assert f"the data of {tmp_path / 'R'}, a copy of {data} (the same bytes" in caplog.text
    (tmp_path / "copy.npy").unlink()
    assert one_line(capsys, "train", "--dataset", tmp_path / "changed.npy", "--out", tmp_path / "R", "--epochs", "3",
                    "--resume") == (
        f"{tmp_path / 'changed.npy'}: not the data of {tmp_path / 'R'} (its sha256 differs from the one config.json "
        f"records); its data were {tmp_path / 'copy.npy'}: put them back there to resume, or name where they lie now "
        "with --dataset")
