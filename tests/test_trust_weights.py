"""Weights and configs that are not what they claim (issue 27, third attack): a config.json whose few changed bytes
describe a huge model is refused from the weights' header before anything is allocated; float64 weights finite only
in float64 are refused by dtype."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from vaekit.cli import main

TRAIN = ["--quiet", "train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "16"]


@pytest.fixture
def run(tmp_path):
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == 0
    return tmp_path / "run"


def peak_rss_kib(*argv):
    """(stderr, exit status, the largest resident set in KiB) of `python -m vaekit *argv` in a fresh process."""
    probe = ("import resource, subprocess, sys; p = subprocess.run([sys.executable, '-m', 'vaekit', *sys.argv[1:]], "
             "capture_output=True, text=True); print(p.returncode); print(resource.getrusage(resource.RUSAGE_CHILDREN)"
             ".ru_maxrss); print(p.stderr.strip())")
    out = subprocess.run([sys.executable, "-c", probe, *map(str, argv)], capture_output=True, text=True, check=True)
    code, rss, err = out.stdout.split("\n", 2)
    return err.strip(), int(code), int(rss)


@pytest.mark.parametrize("command", ["sample", "resume"])
def test_a_config_describing_a_huge_model_is_refused_before_it_is_built(run, tmp_path, command):
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["hidden"] = [20000, 20000]  # 3.4 GB of float32 weights, from a file of 1 kB
    (run / "config.json").write_text(json.dumps(cfg))
    argv = ["sample", run, "--n", "2", "--out", tmp_path / "s.npy"] if command == "sample" else \
        ["train", "--out", run, "--resume", "--epochs", "2"]
    err, code, rss = peak_rss_kib("--quiet", *argv)
    assert code == 2 and err.splitlines()[-1].startswith(f"vaekit: error: {run / 'model.safetensors'}: weights do not "
                                                         "match the architecture in config.json")
    assert rss < 1_000_000  # it peaked at 3.4 GB before


def test_float64_weights_are_refused_by_dtype_not_loaded_into_overflow(run, capsys):
    weights = load_file(run / "model.safetensors")
    weights["encoder.net.2.bias"] = weights["encoder.net.2.bias"].double()
    weights["encoder.net.2.bias"][0] = 1e300  # finite in float64; encode wrote inf means with exit 0
    save_file(weights, run / "model.safetensors")
    for argv in (["encode", str(run), "--out", str(run / "e.npz")], ["evaluate", str(run)]):
        assert main(["--quiet", *argv]) == 2
        assert capsys.readouterr().err.strip() == (f"vaekit: error: {run / 'model.safetensors'}: encoder.net.2.bias is "
                                                   "float64, but the model's is float32; vaekit writes the model's own "
                                                   "dtype")
    assert not (run / "e.npz").exists() and torch.isfinite(load_file(run / "model.safetensors")["encoder.net.0.weight"]).all()
