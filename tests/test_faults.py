"""Faults: killed, interrupted, crashing mid-write, NaN, and files that try to run code."""

import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from vaekit import Config, train_run
from vaekit.errors import VaekitError
from vaekit.runs import checkpoint as ckpt
from vaekit.runs.history import read_metrics
from vaekit.training.loop import NonFiniteLossError

EPOCHS = 8  # ≈ 1 s of training: room to be killed mid-run even on a fast machine
TRAIN = ["--dataset", "digits", "--latent-dim", "4", "--hidden", "256", "--hidden", "256", "--batch-size", "16",
         "--seed", "5", "--checkpoint-every", "7"]


def start(out, epochs, extra=()):
    return subprocess.Popen([sys.executable, "-m", "vaekit", "--quiet", "train", "--out", str(out), "--epochs", str(epochs),
                             *TRAIN, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def wait_for_step(run, step, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (run / ckpt.STATE).exists():
            try:
                if ckpt.load_state(run)["step"] >= step:
                    return
            except VaekitError:
                pass  # being replaced right now
        assert proc.poll() is None, finish(proc)
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "straight"
    code, err = finish(start(out, EPOCHS))
    assert code == 0, err
    return load_file(out / ckpt.WEIGHTS)


@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -9), (signal.SIGINT, 130)])
def test_killed_or_interrupted_then_resumed_equals_uninterrupted(tmp_path, straight, sig, code):
    proc = start(tmp_path / "run", EPOCHS)
    wait_for_step(tmp_path / "run", 30, proc)  # mid-epoch 1 (82 steps an epoch)
    proc.send_signal(sig)
    returncode, err = finish(proc, 60)
    assert returncode == code
    if sig == signal.SIGINT:
        assert "interrupted by SIGINT at epoch" in err and "continue with --resume" in err and "Traceback" not in err
    state = ckpt.load_state(tmp_path / "run")
    assert state["epoch"] < EPOCHS
    code, err = finish(start(tmp_path / "run", EPOCHS, ["--resume"]))
    assert code == 0, err
    weights = load_file(tmp_path / "run" / ckpt.WEIGHTS)
    assert all(torch.equal(weights[k], straight[k]) for k in straight)  # bit for bit
    epochs = [r["epoch"] for r in read_metrics(tmp_path / "run")]
    assert epochs == list(range(1, EPOCHS + 1))


def small(epochs=2, **train):
    return Config().replace(model={"latent_dim": 3, "hidden": [32]}, train={"epochs": epochs, "batch_size": 64, **train})


def test_crash_during_checkpoint_write_leaves_previous_loadable(tmp_path, monkeypatch):
    train_run(small(1), out=tmp_path / "run")
    before = load_file(tmp_path / "run" / ckpt.WEIGHTS)
    real_replace = os.replace

    def crash(src, dst):  # the new file is fully written, then the process "dies" before the rename
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(VaekitError, match=r"cannot write \(the disk is full"):
        train_run(small(2), out=tmp_path / "run", resume=True)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]  # no litter
    after = load_file(tmp_path / "run" / ckpt.WEIGHTS)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert ckpt.load_state(tmp_path / "run")["epoch"] == 1
    train_run(small(2), out=tmp_path / "run", resume=True)  # and it continues


def test_nonfinite_gradient_stops_or_skips(tmp_path):
    result = train_run(small(1), out=tmp_path / "run")
    model = result.model
    hook = model.encoder.net[0].weight.register_hook(lambda g: torch.full_like(g, float("nan")))
    from vaekit.runs.experiment import load_data
    from vaekit.training.loop import LoopState, make_adam, train_epoch
    from vaekit.training.loss import vae_loss

    data = load_data(result.config)
    opt = make_adam(model.parameters(), 1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match=r"a gradient is NaN or Inf at epoch 1, step 1"):
        train_epoch(model, opt, vae_loss(model, result.config.train, data), data.split("train"), 64, 0, LoopState())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing was stepped
    state = LoopState()
    metrics = train_epoch(model, opt, vae_loss(model, result.config.train, data), data.split("train")[:256], 64, 0,
                          state, skip_nonfinite=10)
    assert state.skipped == 4 and state.step == 0
    assert metrics == {}  # skipped batches add nothing to the epoch's means, not even to their count
    hook.remove()


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    train_run(small(1), out=tmp_path / "run")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "run" / ckpt.STATE).write_bytes(pickle.dumps({"model": Exploit()}))
    with pytest.raises(VaekitError, match="cannot load trainer state safely"):
        train_run(small(2), out=tmp_path / "run", resume=True)
    torch.save({"x": Exploit()}, tmp_path / "run" / ckpt.STATE)  # the zip format too
    with pytest.raises(VaekitError, match="cannot load trainer state safely"):
        ckpt.load_state(tmp_path / "run")
    assert not marker.exists()
