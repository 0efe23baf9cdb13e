"""`vaekit train --init-from RUN`: a new run that starts from another run's weights, with that run's settings as
its defaults (a fine-tune with another objective: Sønderby et al.'s last stage, Burda et al.'s IWAE after the ELBO)."""

import json

import pytest
import torch
from run_cli import resume_equals_uninterrupted, vaekit_cli
from safetensors.torch import load_file

import vaekit
from vaekit.errors import VaekitError

SMALL = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--seed", "3"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    run = tmp_path_factory.mktemp("init") / "base"
    vaekit_cli("--quiet", "train", *SMALL, "--epochs", "2", "--ema", "0.9", "--out", run)
    return run


def test_the_new_run_starts_from_the_weights_and_settings_of_the_old(base, tmp_path):
    # at a learning rate of 1e-30 Adam moves no weight by more than 1e-30: the new run ends where the old one did
    vaekit_cli("--quiet", "train", "--init-from", base, "--objective", "iwae", "--train-k", "3", "--lr", "1e-30",
               "--epochs", "1", "--out", tmp_path / "ft")
    old, new = load_file(base / "model.safetensors"), load_file(tmp_path / "ft" / "model.safetensors")
    assert old.keys() == new.keys()
    assert max(float((old[k] - new[k]).abs().max()) for k in old) < 1e-20
    vaekit_cli("--quiet", "train", *SMALL, "--epochs", "1", "--lr", "1e-30", "--out", tmp_path / "fresh")
    fresh = load_file(tmp_path / "fresh" / "model.safetensors")
    assert max(float((old[k] - fresh[k]).abs().max()) for k in old) > 1e-3  # without it: the same seed, untrained
    cfg, was = (json.loads((d / "config.json").read_text()) for d in (tmp_path / "ft", base))
    assert cfg["model"] == was["model"] and cfg["data"] == was["data"]  # the old run's settings are the defaults
    assert (cfg["train"]["ema"], cfg["train"]["seed"], cfg["train"]["objective"]) == (0.9, 3, {"name": "iwae", "k": 3,
                                                                                              "dreg": False})
    assert cfg["train"]["init_from"] == str(base.resolve())


def test_a_model_setting_that_differs_is_refused_in_one_line(base, tmp_path):
    proc = vaekit_cli("--quiet", "train", "--init-from", base, "--hidden", "32", "--out", tmp_path / "ft", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        (f"vaekit: error: --init-from {base.resolve()}: [model] hidden = (32,) differs from that run's (16,); its "
        "weights fit only its own model (leave the model's settings out)")]
    assert not (tmp_path / "ft" / "model.safetensors").exists()


def test_a_fine_tune_resumes_bit_identically(base, tmp_path):
    flags = ["--init-from", base, "--objective", "iwae", "--train-k", "3"]
    vaekit_cli("--quiet", "train", *flags, "--epochs", "1", "--out", tmp_path / "run")
    resume_equals_uninterrupted(tmp_path / "run", flags, tmp_path, epochs=3)


def test_vaekit_fit_takes_no_init_from(base):
    model = vaekit.load(base)
    with pytest.raises(VaekitError, match=r"load the run's weights into it first"):
        vaekit.fit(model, torch.zeros(20, 64), init_from=str(base), progress=False)
