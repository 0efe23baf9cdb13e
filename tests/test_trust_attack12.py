"""What the eleventh attack left (issue 27), each made for real: a Ctrl-C while the command starts, a data path that
became a link to the same bytes, a changed file of an image folder."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
from test_trust_attack5 import one_line

from vaekit.cli import main
from vaekit.runs.checkpoint import load_state

SMALL = ("--likelihood", "gaussian", "--latent-dim", "2", "--hidden", "8", "--seed", "3")


def test_a_ctrl_c_while_the_command_starts_is_one_line(tmp_path):
    """A Ctrl-C in a command's first seconds (Python importing torch and vaekit's modules) printed a KeyboardInterrupt
    traceback out of an import and ended by the signal (-2); it is one line and 130, as later, at any moment."""
    rng = random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for i, delay in enumerate([0.3, 0.7, *(rng.uniform(0.9, 2.0) for _ in range(3))]):
        p = subprocess.Popen([sys.executable, "-m", "vaekit", "train", "--dataset", "digits", "--epochs", "1",
                              "--out", str(tmp_path / f"r{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        lines = [line for line in err.splitlines() if line.startswith("vaekit:") or "Traceback" in line]
        assert p.returncode == 130 and "Traceback" not in err and len(lines) == 1, (delay, p.returncode, err)
        assert lines[0] in ("vaekit: interrupted while starting; nothing was written", "vaekit: interrupted")


def test_a_data_path_that_became_a_link_to_the_same_bytes_resumes(tmp_path, capsys):
    """The data file moved and a link to it left in its place: the resume blamed a config.json edit nobody made
    (paths are recorded resolved); the same bytes resume, other bytes behind the link are the digest's refusal."""
    data, run = tmp_path / "d.npy", tmp_path / "R"
    np.save(data, np.random.default_rng(0).random((200, 4), dtype=np.float32))
    assert main(["--quiet", "train", "--dataset", str(data), *SMALL, "--epochs", "1", "--out", str(run)]) == 0
    data.rename(tmp_path / "moved.npy")
    data.symlink_to(tmp_path / "moved.npy")
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "2", "--resume"]) == 0
    assert load_state(run)["epoch"] == 2 and json.loads((run / "config.json").read_text())["data"]["dataset"] == str(
        tmp_path / "moved.npy")  # the path it resolves to, from now on
    np.save(tmp_path / "moved.npy", np.random.default_rng(1).random((200, 4), dtype=np.float32))
    said = one_line(capsys, "train", "--out", run, "--epochs", 3, "--resume")
    assert said.startswith(f"{tmp_path / 'moved.npy'}: not the data this run was trained on (its sha256 differs")


def test_a_changed_image_folder_says_what_changed_in_it(tmp_path, capsys):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray((rng.random((6, 6)) * 255).astype("uint8")).save(folder / f"{i}.png")
    assert main(["--quiet", "train", "--dataset", str(folder), *SMALL, "--epochs", "1", "--out", str(tmp_path / "R")]) == 0
    (folder / "3.png").rename(folder / "30.png")
    assert one_line(capsys, "train", "--out", tmp_path / "R", "--epochs", 2, "--resume") == (
        f"{folder}: not the data this run was trained on (a file in this folder was added, removed, renamed or "
        "changed since the run recorded their sha256); restore them, or train a new run into another --out")
    (folder / "30.png").rename(folder / "3.png")
    assert main(["--quiet", "train", "--out", str(tmp_path / "R"), "--epochs", "2", "--resume"]) == 0
