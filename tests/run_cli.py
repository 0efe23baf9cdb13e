"""`python -m vaekit …` in a subprocess, as a user runs it: the helper the CLI tests share."""

import subprocess
import sys


def vaekit_cli(*args, check=True, env=None):
    proc = subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def resume_equals_uninterrupted(run, flags, tmp_path, epochs=3):
    """Continue a copy of `run` to `epochs` with --resume and train the same flags straight to `epochs`:
    assert the weights are bit-identical and the metrics equal (but for timings). Returns the weights."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file

    part = tmp_path / "part"
    shutil.copytree(run, part)
    vaekit_cli("--quiet", "train", *flags, "--epochs", str(epochs), "--resume", "--out", part)
    vaekit_cli("--quiet", "train", *flags, "--epochs", str(epochs), "--out", tmp_path / "full")
    resumed, full = load_file(part / "model.safetensors"), load_file(tmp_path / "full" / "model.safetensors")
    assert resumed.keys() == full.keys()
    for key in full:
        assert torch.equal(resumed[key], full[key]), key
    assert (part / "train_state.pt").read_bytes() == (tmp_path / "full" / "train_state.pt").read_bytes()  # files too

    def untimed(d):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (d / "metrics.jsonl").read_text().splitlines()]

    assert untimed(part) == untimed(tmp_path / "full") and len(untimed(part)) == epochs
    return full


def straight_and_resumed(train, root, epochs=2):
    """Train `train` (flags after `train`) `epochs` straight into root/straight and 1 + the rest with
    --resume into root/resumed, batch 64: the run pair a family's resume test compares."""
    for until, name, extra in ((epochs, "straight", ()), (1, "resumed", ()), (epochs, "resumed", ("--resume",))):
        vaekit_cli(*train, "--batch-size", "64", "--epochs", until, "--out", root / name, *extra)
    return root


def assert_resumed_equals_straight(root):
    """The weights of root/resumed and root/straight (`straight_and_resumed`) are equal bit for bit."""
    import torch
    from safetensors.torch import load_file

    straight, resumed = (load_file(root / name / "model.safetensors") for name in ("straight", "resumed"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    return straight


def assert_two_processes_match_one(train, tmp_path, atol=1e-4, val_rtol=1e-5):
    """One epoch of `train` in one process (batch 64) and under torchrun with two gloo processes (batch
    32 each): the same weights up to float rounding, and the same validation ELBO (to `val_rtol`).
    `atol` for the weights: Adam's step lr·m/√v turns a gradient within rounding of 0 into a step of
    either sign, so a head with many near-zero gradients (256 logits per pixel) may differ by ≈ lr there."""
    import json
    import os

    import torch
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "vaekit"]
    for launcher, batch, name in (([sys.executable, "-m", "vaekit"], "64", "one"), (torchrun, "32", "two")):
        proc = subprocess.run([*launcher, *map(str, train), "--epochs", "1", "--batch-size", batch,
                               "--out", tmp_path / name], capture_output=True, text=True, timeout=300, env=env,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=atol, rtol=1e-4)
    val = [json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])["val/elbo"] for name in ("one", "two")]
    assert abs(val[1] - val[0]) <= val_rtol * abs(val[0]), val
