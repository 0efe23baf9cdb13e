"""What the twenty-first attack found (issue 27), each made for real."""

import hashlib
import html
import json
import logging
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_trust_attack5 import one_line
from test_trust_attack20 import refused_unhashed

from vaekit.cli import main
from vaekit.data import load_dataset
from vaekit.runs import opening

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


def _hashes(monkeypatch) -> list:
    """The paths `data_digest` is asked to hash from now on."""
    hashed, real = [], opening.data_digest
    monkeypatch.setattr(opening, "data_digest", lambda p: hashed.append(str(p)) or real(p))
    return hashed


def _grow(path, size=1 << 40):
    with open(path, "r+b") as f:
        f.truncate(size)


def test_the_runs_own_data_grown_huge_are_said_changed_unread(tmp_path, capsys, caplog, monkeypatch):
    """The run recorded no size, so its own .npy grown to 1 TB (or a 1 TB file dropped in its image folder) was hashed
    whole before evaluate said a word (~20 minutes). The size config.json records now tells the change unread; a file
    moved away and a 1 TB stranger named instead is not hashed either."""
    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    assert _main("train", "--dataset", data, *TINY, "--val-size", "100", "--out", tmp_path / "R") == 0
    recorded = json.loads((tmp_path / "R" / "config.json").read_text())["data"]
    assert recorded["size"] == data.stat().st_size
    assert recorded["digest"] == hashlib.sha256(b"\0" + hashlib.sha256(data.read_bytes()).digest()).hexdigest()
    hashed = _hashes(monkeypatch)
    shutil.copy(data, tmp_path / "keep.npy")
    _grow(data)
    assert _main("evaluate", tmp_path / "R", "--k", "2") == 0  # the reader reads the header's 300 rows
    assert f"{data}, the run's data, changed since it was trained (its size is not the {recorded['size']:,} bytes " \
           "config.json records)" in caplog.text
    assert hashed == []
    data.unlink()
    stranger = tmp_path / "big.npy"
    np.save(stranger, np.zeros((10, 4), np.float32))
    _grow(stranger)
    assert _main("evaluate", tmp_path / "R", "--dataset", stranger, "--k", "2") == 0
    assert hashed == []
    assert _main("evaluate", tmp_path / "R", "--dataset", tmp_path / "keep.npy", "--split", "val", "--k", "2",
                 "--json") == 0
    assert '"n": 100,' in capsys.readouterr().out and hashed == [str(tmp_path / "keep.npy")]  # the moved bytes: own


def _images(folder, n=40):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")


def test_an_image_folder_skips_hidden_folders_and_a_huge_file_in_it_is_told_unread(tmp_path, capsys, caplog,
                                                                                     monkeypatch):
    """Hidden sub-folders were read: Jupyter's .ipynb_checkpoints copies became duplicate examples, a .git/ folder made
    the folder unreadable. A 1 TB file dropped among the images was hashed whole before anything was said."""
    _images(tmp_path / "im")
    (tmp_path / "im" / ".ipynb_checkpoints").mkdir()
    shutil.copy(tmp_path / "im" / "00.png", tmp_path / "im" / ".ipynb_checkpoints" / "00-checkpoint.png")
    (tmp_path / "im" / ".git").mkdir()
    (tmp_path / "im" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    read = load_dataset(str(tmp_path / "im"), "none", "unit")
    assert sum(len(read.eval_split(s)) for s in ("train", "val", "test")) == 40
    assert _main("train", "--dataset", tmp_path / "im", "--latent-dim", "2", "--hidden", "8", "--epochs", "1",
                 "--out", tmp_path / "I") == 0
    recorded = json.loads((tmp_path / "I" / "config.json").read_text())["data"]
    assert recorded["size"] == sum(f.stat().st_size for f in (tmp_path / "im").glob("*.png"))
    hashed = _hashes(monkeypatch)
    with open(tmp_path / "im" / "zbig.png", "wb") as f:
        f.truncate(1 << 40)
    assert _main("evaluate", tmp_path / "I", "--k", "2") == 2
    assert "zbig.png: cannot read image" in capsys.readouterr().err
    assert "their size is not the" in caplog.text and hashed == []


def test_report_plot_and_fit_sampler_say_the_runs_data_changed(tmp_path, capsys, caplog):
    """report, plot and fit-sampler read the run's changed data with no word, and report.html presented the changed
    file's "test" numbers (mostly training rows) as held-out results."""
    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    np.save(data, np.concatenate([np.load(data), np.load(data)[:1]]))
    line = f"{data}, the run's data, changed since it was trained (its size is not the"
    assert _main("report", tmp_path / "R", "--k", "2") == 0
    page = (tmp_path / "R" / "report.html").read_text()
    assert page.count(html.escape(line)) == 1 and caplog.text.count(line) == 1
    for argv in (("plot", tmp_path / "R"), ("fit-sampler", tmp_path / "R", "--sampler", "gmm", "--components", "2")):
        caplog.clear()
        assert _main(*argv) == 0
        assert caplog.text.count(line) == 1, argv


def test_resume_finds_the_runs_data_by_another_spelling_or_moved(tmp_path, capsys, caplog):
    """`train --resume` refused the run's own file named `./../d/f` and its bytes moved elsewhere, advising a new run;
    with the file moved and none named it said only that the path does not exist. The same file and the same bytes
    (size, then sha256) are the run's data now; a moved run records the new place, and goes on as if never moved."""
    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    for run in ("R", "S"):
        assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / run) == 0
    (tmp_path / "sub").mkdir()
    assert _main("train", "--dataset", tmp_path / "sub" / ".." / "g.npy", *TINY[:-4], "--epochs", "2", "--seed", "1",
                 "--out", tmp_path / "R", "--resume") == 0
    data.rename(tmp_path / "moved.npy")
    capsys.readouterr()
    assert _main("train", "--out", tmp_path / "R", "--epochs", "3", "--resume") == 2
    assert capsys.readouterr().err.strip() == (
        f"vaekit: error: {tmp_path / 'R'}: its data {data} are gone (moved or removed); put them back there to resume, "
        "or name where they lie now with --dataset (their sha256 is checked against the run's)")
    with caplog.at_level(logging.INFO):
        assert _main("train", "--dataset", tmp_path / "moved.npy", "--out", tmp_path / "R", "--epochs", "3",
                     "--resume") == 0
    assert f"the data of {tmp_path / 'R'}, moved from {data} (the same bytes" in caplog.text
    assert json.loads((tmp_path / "R" / "config.json").read_text())["data"]["dataset"] == str(tmp_path / "moved.npy")
    data.symlink_to(tmp_path / "moved.npy")
    assert _main("train", "--out", tmp_path / "S", "--epochs", "3", "--resume") == 0  # never moved
    assert (tmp_path / "R" / "model.safetensors").read_bytes() == (tmp_path / "S" / "model.safetensors").read_bytes()
    np.save(tmp_path / "other.npy", np.load(tmp_path / "moved.npy")[::-1])  # the same size, other bytes: refused
    assert _main("train", "--dataset", tmp_path / "other.npy", "--out", tmp_path / "R", "--epochs", "4",
                 "--resume") == 2
    assert "[data] dataset = " in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_stdout_or_stderr_that_cannot_be_written_gives_one_line_and_status_2(tmp_path):
    """`vaekit … > /dev/full` ended in a traceback with exit status 1 after its work was done; a refusal whose stderr
    could not be written (`2> /dev/full`, `2>&-`) exited 1, not 2. The `vaekit` script now leaves as `python -m vaekit`
    does."""
    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32))
    cmd = [sys.executable, "-m", "vaekit", "--quiet"]
    train = [*cmd, "train", "--dataset", str(data), *TINY, "--out", str(tmp_path / "R")]
    with open("/dev/full", "w") as full:
        done = subprocess.run(train, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300, check=False)
        assert done.returncode == 2
        assert done.stderr == "vaekit: error: cannot write to standard output (No space left on device)\n"
        assert (tmp_path / "R" / "model.safetensors").exists()  # the work is done; only its lines are lost
        refused = subprocess.run([*cmd, "evaluate", str(tmp_path / "R"), "--k", "0"], stdout=subprocess.PIPE,
                                 stderr=full, text=True, timeout=300, check=False)
        assert (refused.returncode, refused.stdout) == (2, "")
    closed = subprocess.run([*cmd, "evaluate", str(tmp_path / "R"), "--k", "0"], capture_output=True, text=True,
                            timeout=300, check=False, preexec_fn=lambda: os.close(2))
    assert (closed.returncode, closed.stdout) == (2, "")  # not the refusal's line on stdout either
    assert pyproject_script() == "vaekit.cli:entry"


def pyproject_script() -> str:
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    return tomllib.loads(text)["project"]["scripts"]["vaekit"]


def test_sample_checks_its_label_first(tmp_path, capsys):
    """`sample --label` beyond int64 ended in a traceback; in range but no class it said "the label of example 0"."""
    assert _main("train", "--dataset", "digits", "--condition", "label", "--latent-dim", "2", "--hidden", "8",
                 "--epochs", "1", "--out", tmp_path / "CV") == 0
    for label in ("99999999999999999999", "-9223372036854775809", "10"):
        assert one_line(capsys, "sample", tmp_path / "CV", "--label", label, "--out", tmp_path / "s.png") == \
            f"--label {label}: the model's labels are 0…9"


def test_an_npz_held_out_array_beside_x_or_a_lone_train_is_said_unused(tmp_path, caplog):
    """An .npz of x and test (or val) read x alone and split it, dropping the held-out array without a word; a lone
    train array was read as all the data."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "xt.npz", x=rng.random((50, 4), np.float32), test=rng.random((10, 4), np.float32))
    np.savez(tmp_path / "tr.npz", train=rng.random((50, 4), np.float32))
    assert len(load_dataset(str(tmp_path / "xt.npz"), "none", "unit").eval_split("test")) == 5  # 10% of x
    assert "xt.npz: ignoring the array test: every split is drawn from x; to give the splits, name the arrays train " \
           "and test (and val)" in caplog.text
    assert len(load_dataset(str(tmp_path / "tr.npz"), "none", "unit").eval_split("test")) == 5
    assert "tr.npz: the array train alone is read as all the data: every split is drawn from it" in caplog.text


def test_wording_of_round_21(tmp_path, capsys):
    """Labels out of range name the file and split; an empty --plugin and a link loop as --dataset say so; the
    undecided overflow verdict says the run's own rows could not be read."""
    assert _main("train", "--dataset", "digits", "--condition", "label", "--latent-dim", "2", "--hidden", "8",
                 "--epochs", "1", "--out", tmp_path / "CV") == 0
    x = (np.random.default_rng(0).random((40, 8, 8)) > 0.5).astype(np.float32)
    np.savez(tmp_path / "lab.npz", x=x, y=np.arange(40) % 11)
    said = one_line(capsys, "evaluate", tmp_path / "CV", "--dataset", tmp_path / "lab.npz", "--k", "2")
    assert said.startswith("lab.npz [y]: labels must lie in 0…9 (the model's 10 classes); the label of example "), said
    assert one_line(capsys, "train", "--plugin", "", "--dataset", "digits") == \
        "--plugin is empty: name a .py file or an importable module"
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert one_line(capsys, "evaluate", tmp_path / "CV", "--dataset", tmp_path / "loop").startswith(
        f"{tmp_path / 'loop'}: a symbolic link to {tmp_path / 'loop'}, which leads to no file (gone, or links in a loop)")
    data = tmp_path / "g.npy"
    np.save(data, np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    assert _main("train", "--dataset", data, *TINY, "--out", tmp_path / "R") == 0
    far = np.load(data)
    far[::3] *= 1e20
    np.save(tmp_path / "far.npy", far)
    data.rename(tmp_path / "moved.npy")
    said = one_line(capsys, "evaluate", tmp_path / "R", "--dataset", tmp_path / "far.npy", "--k", "2")
    assert said.endswith(f"or was trained into overflow; the rows the run was trained on could not be read to tell "
                         f"which ({data}: the run's data are gone (moved or removed); put them back there)")
