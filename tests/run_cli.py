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

    def untimed(d):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (d / "metrics.jsonl").read_text().splitlines()]

    assert untimed(part) == untimed(tmp_path / "full") and len(untimed(part)) == epochs
    return full
