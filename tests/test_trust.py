"""Trust, round two: a trainer state that would drive memory, a torn or unwritable metrics log, a run
killed before its first checkpoint, SIGTERM, an update that overflows, two trainers on one run.

Each test reproduces the fault for real (a crafted file, an OSError injected at the write, a real
signal, a second process) and asserts what the user sees and what is left on disk.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_cli import vaekit_cli
from safetensors.torch import load_file, save_file

from vaekit import Config, load, train_run
from vaekit.errors import NonFiniteLossError, VaekitError
from vaekit.files import RunLock
from vaekit.runs import checkpoint as ckpt
from vaekit.runs.history import METRICS, read_metrics


def small(epochs=1, **train):
    return Config().replace(model={"latent_dim": 3, "hidden": [32]},
                            train={"epochs": epochs, "batch_size": 64, "seed": 3, **train})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch run and the weights of the same run trained straight to 2 epochs."""
    root = tmp_path_factory.mktemp("trust")
    train_run(small(1), out=root / "one")
    train_run(small(2), out=root / "two")
    return root


def copy_run(trained, tmp_path, name="one"):
    import shutil

    shutil.copytree(trained / name, tmp_path / "run")
    return tmp_path / "run"


def edited_state(run, edit):
    state = ckpt.load_state(run)
    edit(state)
    torch.save(state, run / ckpt.STATE)
    return run


# ---- 1. a train_state.pt never drives memory ----

def _shrink(s):
    s["optimizer"]["state"][0]["exp_avg"] = s["optimizer"]["state"][0]["exp_avg"][:1]


def _empty(s):
    s["optimizer"]["state"][0]["exp_avg_sq"] = torch.empty(0)


def _grow(s):
    m = s["optimizer"]["state"][0]["exp_avg"]
    s["optimizer"]["state"][0]["exp_avg"] = torch.zeros(m.shape[0] + 1, *m.shape[1:])


def _nan_moment(s):
    s["optimizer"]["state"][1]["exp_avg_sq"][0] = float("nan")


def _set(key, value):
    def edit(s):
        s[key] = value
    return edit


def _lr(value):
    def edit(s):
        s["optimizer"]["param_groups"][0]["lr"] = value
    return edit


STATE_FAULTS = [
    ("moment smaller than its parameter", _shrink, "optimizer.state[0] (encoder.net.0.weight).exp_avg has shape [1, 64]"),
    ("empty moment", _empty, "exp_avg_sq has shape [0]"),
    ("moment larger than its parameter", _grow, "exp_avg has shape [33, 64], expected [32, 64]"),
    ("NaN second moment", _nan_moment, "exp_avg_sq holds NaN or Inf"),
    ("negative batch", _set("batch", -1), "batch is -1, below 0"),
    ("batch past the epoch", _set("batch", 10**6), "batch is 1000000, above"),
    ("step as a float", _set("step", 3.5), "step is a float, not an integer"),
    ("no rng", lambda s: s.pop("rng"), "rng is missing"),
    ("rng of the wrong size", _set("rng", torch.zeros(7, dtype=torch.uint8)), "rng has 7 bytes"),
    ("NaN learning rate", _lr(float("nan")), "lr is nan"),
    ("weights of another dtype", lambda s: s["model"].update({"decoder.net.0.bias": torch.zeros(32, dtype=torch.float64)}),
     "model.decoder.net.0.bias has dtype torch.float64"),
    ("not a dict", lambda s: s.clear(), "model is missing"),
]


@pytest.mark.parametrize("name, edit, fragment", STATE_FAULTS, ids=[f[0] for f in STATE_FAULTS])
def test_crafted_train_state_is_refused_naming_the_field(trained, tmp_path, name, edit, fragment):
    run = edited_state(copy_run(trained, tmp_path), edit)
    with pytest.raises(VaekitError, match="train_state.pt: ") as info:
        train_run(small(2), out=run, resume=True)
    assert fragment in str(info.value), str(info.value)


def test_smaller_moment_through_the_cli_is_one_line_not_a_crash(trained, tmp_path):
    """The fault that used to end in SIGSEGV or a heap-corruption abort, in its own process."""
    run = edited_state(copy_run(trained, tmp_path), _shrink)
    proc = vaekit_cli("train", "--out", run, "--resume", "--epochs", "2", check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("vaekit: error: ") and "exp_avg has shape [1, 64], expected [32, 64]" in lines[-1]
    assert "Traceback" not in proc.stderr


# ---- 2. the metrics log: never torn, repaired when it is, write errors in one line ----

def test_torn_last_metrics_line_is_dropped_and_resume_repairs_it(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    good = (run / METRICS).read_text()
    (run / METRICS).write_text(good + '{"epoch": 2, "step": 3')  # a crash mid-append
    assert read_metrics(run) == [json.loads(good)]
    train_run(small(2), out=run, resume=True)
    records = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    straight = load_file(trained / "two" / ckpt.WEIGHTS)
    assert all(torch.equal(load_file(run / ckpt.WEIGHTS)[k], v) for k, v in straight.items())


def test_damaged_metrics_line_before_the_last_is_named(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    (run / METRICS).write_text("not json\n" + (run / METRICS).read_text())
    with pytest.raises(VaekitError, match=r"metrics.jsonl: line 1 is not a metrics record"):
        read_metrics(run)


def test_full_disk_during_metrics_append_leaves_no_half_line(trained, tmp_path, monkeypatch):
    run = copy_run(trained, tmp_path)
    before = (run / METRICS).read_bytes()
    real_write = os.write

    def full(fd, data):  # half the line reaches the disk, then ENOSPC
        if data.startswith(b'{"epoch": 2'):
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(VaekitError, match=r"metrics.jsonl: cannot write \(the disk is full: free space, then run the command "
                                          r"again \(a training run: with --resume\)\)"):
        train_run(small(2), out=run, resume=True)
    monkeypatch.setattr(os, "write", real_write)
    assert (run / METRICS).read_bytes() == before  # cut back to the whole lines it had
    train_run(small(2), out=run, resume=True)  # and the run continues
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


@pytest.mark.parametrize("code, advice", [(errno.EROFS, "the file system is read-only"),
                                          (errno.EACCES, "permission denied"),
                                          (errno.ENAMETOOLONG, "the name is too long")])
def test_write_errors_are_one_line_and_keep_the_checkpoint(trained, tmp_path, monkeypatch, code, advice):
    run = copy_run(trained, tmp_path)
    before = load_file(run / ckpt.WEIGHTS)

    def refuse(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(VaekitError, match=f"cannot write \\({advice}"):
        train_run(small(2), out=run, resume=True)
    monkeypatch.undo()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert all(torch.equal(load_file(run / ckpt.WEIGHTS)[k], v) for k, v in before.items())


def test_out_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = vaekit_cli("train", "--out", tmp_path / "f", "--epochs", "1", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("is a file, not a folder; choose another path")


@pytest.mark.parametrize("record, message", [
    ('{"epoch": 1e308, "train/elbo": -1}', "epoch must be a whole number from 1 to 1099511627776, got 1e+308"),
    ('{"epoch": "x", "train/elbo": -1}', 'epoch must be a whole number from 1 to 1099511627776, got "x"'),
    ('{"epoch": null}', "epoch must be a whole number from 1 to 1099511627776, got null"),
    ('{"epoch": true}', "epoch must be a whole number from 1 to 1099511627776, got true"),
    ('{"epoch": 0}', "epoch must be a whole number from 1 to 1099511627776, got 0"),
    ('{"epoch": 2.5}', "epoch must be a whole number from 1 to 1099511627776, got 2.5"),
    ('{"train/elbo": -1}', "no epoch field (every record the trainer writes has one)"),
    ('{"epoch": 2, "train/elbo": {"a": 1}}', 'field \'train/elbo\' must be a number, got {"a": 1}'),
    ('{"epoch": 2, "train/elbo": "abc"}', 'field \'train/elbo\' must be a number, got "abc"'),
    ('{"epoch": 2, "val/kl": null}', "field 'val/kl' must be a number, got null"),
    ('{"epoch": 2, "val/kl": false}', "field 'val/kl' must be a number, got false"),
    ('{"epoch": 2, "step": 1' + "0" * 30 + '}', ("field 'step' = 10000000000000000000… is out of range (at most "
                                                 "9223372036854775807)")),
])
def test_a_crafted_metrics_record_is_refused_naming_its_line_and_field(trained, tmp_path, record, message):
    run = copy_run(trained, tmp_path)
    (run / METRICS).write_text((run / METRICS).read_text() + record + "\n")
    with pytest.raises(VaekitError) as e:
        read_metrics(run)
    assert str(e.value) == f"{run / METRICS}: line 2: {message}"


@pytest.mark.parametrize("verb", ["plot", "report"])
@pytest.mark.parametrize("record, message", [
    ('{"epoch": 1e308, "train/elbo": -1}', "epoch must be a whole number from 1 to 1099511627776, got 1e+308"),
    ('{"epoch": 1, "train/elbo": {"a": 1}}', 'field \'train/elbo\' must be a number, got {"a": 1}')])
def test_plot_and_report_of_a_crafted_metrics_record_are_one_line(trained, tmp_path, verb, record, message):
    """A ValueError of np.arange (1e308 epochs) and a TypeError of matplotlib (a dict for a curve) were tracebacks."""
    run = copy_run(trained, tmp_path)
    (run / METRICS).write_text((run / METRICS).read_text() + record + "\n")
    argv = [verb, run, "--out", tmp_path / "pics"] if verb == "plot" else [verb, run, "--k", "2"]
    proc = vaekit_cli("--quiet", *argv, check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"vaekit: error: {run / METRICS}: line 2: {message}"]


def test_a_diverged_epoch_of_nan_and_infinity_still_reads_and_plots(trained, tmp_path):
    """What json.dumps writes for a bound that diverged (NaN, -Infinity) is a number: read and drawn."""
    run = copy_run(trained, tmp_path)
    (run / METRICS).write_text((run / METRICS).read_text() + '{"epoch": 2, "step": 22, "seconds": 0.1, '
                               '"train/elbo": NaN, "val/elbo": -Infinity}\n')
    records = read_metrics(run)
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["val/elbo"] == float("-inf")
    proc = vaekit_cli("--quiet", "plot", run, "--out", tmp_path / "pics", check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "pics" / "curves.png").stat().st_size > 0


# ---- 3. killed before the first checkpoint ----

def test_resume_before_the_first_checkpoint_starts_from_step_zero(trained, tmp_path):
    run = copy_run(trained, tmp_path, "two")
    for name in (ckpt.STATE, ckpt.WEIGHTS):
        (run / name).unlink()  # what a kill in epoch 1 leaves: config.json (and maybe a metrics line)
    (run / METRICS).write_text((run / METRICS).read_text().splitlines()[0] + "\n")
    with pytest.raises(VaekitError, match="already holds a run; pass resume=True"):
        train_run(small(2), out=run)
    train_run(small(2), out=run, resume=True)
    straight = load_file(trained / "two" / ckpt.WEIGHTS)
    assert all(torch.equal(load_file(run / ckpt.WEIGHTS)[k], v) for k, v in straight.items())
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


def test_resume_refuses_weights_without_trainer_state(trained, tmp_path):
    """Weights that are not a first epoch's checkpoint cut short (those start again: test_trust_attack18): unlabelled
    ones (vaekit.save's) and a later epoch's are kept, and the run refused."""
    from safetensors.torch import load_file, save_file

    run = copy_run(trained, tmp_path)
    (run / ckpt.STATE).unlink()
    for label in ({}, {"epoch": "4", "step": "84"}):
        save_file(load_file(run / ckpt.WEIGHTS), str(run / ckpt.WEIGHTS), metadata=label)
        with pytest.raises(VaekitError, match="holds weights but no train_state.pt"):
            train_run(small(2), out=run, resume=True)


# ---- 4. SIGTERM and stale temporaries ----

TRAIN = ["--dataset", "digits", "--latent-dim", "4", "--hidden", "256", "--hidden", "256", "--batch-size", "16",
         "--seed", "5", "--checkpoint-every", "7"]


def start(out, epochs, extra=()):
    return subprocess.Popen([sys.executable, "-m", "vaekit", "--quiet", "train", "--out", str(out), "--epochs",
                             str(epochs), *TRAIN, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_state(run, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (run / ckpt.STATE).exists():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_sigterm_saves_and_exits_143_then_resume_equals_straight(tmp_path):
    straight = tmp_path / "straight"
    vaekit_cli("--quiet", "train", "--out", straight, "--epochs", "3", *TRAIN)
    proc = start(tmp_path / "run", 3)
    wait_for_state(tmp_path / "run", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM at epoch" in err and "continue with --resume" in err and "Traceback" not in err
    assert ckpt.load_state(tmp_path / "run")["epoch"] < 3
    (tmp_path / "run" / ".train_state.pt.k1ll3d.tmp").write_bytes(b"half a file")  # a kill -9 mid-write
    vaekit_cli("--quiet", "train", "--out", tmp_path / "run", "--epochs", "3", "--resume", *TRAIN)
    assert not list((tmp_path / "run").glob("*.tmp")) and not list((tmp_path / "run").glob(".*.tmp"))
    a, b = load_file(straight / ckpt.WEIGHTS), load_file(tmp_path / "run" / ckpt.WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- 5. an update that makes the weights non-finite ----

def test_overflowing_update_is_caught_before_any_checkpoint(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    before = load_file(run / ckpt.WEIGHTS)
    state_before = (run / ckpt.STATE).read_bytes()
    with pytest.raises(NonFiniteLossError, match=r"the weights are NaN or Inf at epoch 2, step 2 .*: an update "
                                                 r"before it overflowed"):
        train_run(small(2, lr=1e38), out=run, resume=True)
    assert all(torch.equal(load_file(run / ckpt.WEIGHTS)[k], v) for k, v in before.items())
    assert (run / ckpt.STATE).read_bytes() == state_before


def test_a_checkpoint_never_holds_nonfinite_weights(trained, tmp_path):
    """An overflow in the very last step before a checkpoint, which no later loss has shown yet."""
    from vaekit.training.loop import LoopState, make_adam

    run = copy_run(trained, tmp_path)
    before = (run / ckpt.WEIGHTS).read_bytes()
    model = load(run)
    with torch.no_grad():
        model.decoder.net[0].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"the weights are NaN or Inf after global step 7 .* keeps its last"):
        ckpt.save_checkpoint(run, model, make_adam(model.parameters(), 1e-3), LoopState(epoch=1, step=7))
    assert (run / ckpt.WEIGHTS).read_bytes() == before


def test_nonfinite_weights_on_disk_are_named(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    weights = load_file(run / ckpt.WEIGHTS)
    weights["decoder.net.0.weight"][0, 0] = float("inf")
    save_file(weights, run / ckpt.WEIGHTS)
    for command in (["evaluate", run], ["sample", run, "--n", "4", "--output", tmp_path / "s.png"]):
        proc = vaekit_cli(*command, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "model.safetensors: the weights hold NaN or Inf (in decoder.net.0.weight)" in proc.stderr.strip().splitlines()[-1]


# ---- 7. what --resume keeps and what it may change ----

def test_resume_keeps_the_runs_config_and_writes_back_what_changed(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    vaekit_cli("--quiet", "train", "--out", run, "--resume")  # no --epochs: the run's own count (1), not 50
    assert ckpt.load_state(run)["epoch"] == 1
    vaekit_cli("--quiet", "train", "--out", run, "--resume", "--epochs", "2", "--lr", "0.002", "--checkpoint-every", "5")
    saved = json.loads((run / ckpt.CONFIG).read_text())["train"]
    assert (saved["epochs"], saved["lr"], saved["checkpoint_every"]) == (2, 0.002, 5)
    assert ckpt.load_state(run)["optimizer"]["param_groups"][0]["lr"] == 0.002
    proc = vaekit_cli("train", "--out", run, "--resume", "--epochs", "3", "--batch-size", "32", check=False)
    assert proc.returncode == 2
    assert "[train] batch_size = 32 differs from the run's 64, and it cannot change on --resume" in proc.stderr


def test_a_runs_own_config_is_a_valid_config_file(trained, tmp_path):
    vaekit_cli("--quiet", "train", "--out", tmp_path / "again", "--config", trained / "one" / ckpt.CONFIG)
    assert (tmp_path / "again" / ckpt.WEIGHTS).read_bytes() == (trained / "one" / ckpt.WEIGHTS).read_bytes()


def test_a_run_on_a_relative_path_works_from_another_folder(tmp_path, monkeypatch):
    import numpy as np

    (tmp_path / "here").mkdir()
    np.save(tmp_path / "here" / "x.npy", (np.random.default_rng(0).random((300, 6)) > 0.5).astype(np.float32))
    monkeypatch.chdir(tmp_path / "here")
    vaekit_cli("--quiet", "train", "--out", "run", "--dataset", "x.npy", "--epochs", "1", "--latent-dim", "2")
    saved = json.loads((tmp_path / "here" / "run" / ckpt.CONFIG).read_text())["data"]["dataset"]
    assert saved == str(tmp_path / "here" / "x.npy")  # stored resolved
    vaekit_cli("--quiet", "train", "--out", "run", "--dataset", "x.npy", "--epochs", "2", "--resume")  # the same path
    monkeypatch.chdir(tmp_path)
    result = json.loads(vaekit_cli("evaluate", tmp_path / "here" / "run", "--json", "--k", "10").stdout)
    assert result["n"] > 0 and result["log_likelihood"] < 0


# ---- 6. one trainer per run directory ----

def test_second_trainer_is_refused_naming_the_holder(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    refused = pytest.raises(VaekitError, match=rf"another vaekit process \(pid {os.getpid()}\) is training into this run")
    with ckpt.writing(run), refused:
        train_run(small(2), out=run, resume=True)
    train_run(small(2), out=run, resume=True)  # released when the holder is done


def test_lock_of_a_killed_process_is_released(tmp_path):
    code = ("import time; from vaekit.files import RunLock\n"
            f"with RunLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(VaekitError, match=rf"pid {holder.pid}"):
        RunLock(tmp_path).__enter__()
    holder.kill()
    holder.wait()
    holder.stdout.close()
    with RunLock(tmp_path):
        pass


def test_identical_runs_write_identical_files(tmp_path):
    """Two processes, one seed: every file of the run is the same bytes (safetensors' metadata order
    used to change with the process's hash seed)."""
    runs = []
    for name, hash_seed in (("a", "1"), ("b", "2")):
        vaekit_cli("--quiet", "train", "--out", tmp_path / name, "--epochs", "1", "--latent-dim", "2", "--hidden", "16",
                   env={**os.environ, "PYTHONHASHSEED": hash_seed})
        runs.append(tmp_path / name)
    for name in (ckpt.WEIGHTS, ckpt.STATE, ckpt.CONFIG):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name


# ---- 1b. the check's bounds, on a state built in memory: each limit is where it says it is ----

def _in_memory_state():
    """A model, its Adam after one step and the state `checkpoint.save_checkpoint` would write, mid-epoch."""
    from vaekit.model import VAE
    from vaekit.objectives.estimators import elbo
    from vaekit.training.loop import make_adam

    torch.manual_seed(0)
    model = VAE(6, latent_dim=2, hidden=(4,))
    opt = make_adam(model.parameters(), 1e-3)
    (-elbo(model, torch.bernoulli(torch.full((5, 6), 0.5))).elbo.mean()).backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "epoch": 0,
             "step": 1, "batch": 1, "sums": {"elbo": torch.tensor(-20.0)}, "skipped": 0, "examples": 5}
    return model, opt, state


def _group(key, value):
    def edit(s):
        s["optimizer"]["param_groups"][0][key] = value
    return edit


def _moment(key, index, value):
    def edit(s):
        s["optimizer"]["state"][0][key].view(-1)[index] = value
    return edit


BOUNDS_KEPT = [  # (what, edit): at the limit, still a valid state
    ("batch at the end of the epoch", _set("batch", 3)),
    ("counters at 0", lambda s: s.update(batch=0, step=0, epoch=0, examples=0, skipped=0)),
    ("a counter at 2**62", _set("step", 2**62)),
    ("a second moment of exactly 0", _moment("exp_avg_sq", 0, 0.0)),
    ("Adam's step count at 0", lambda s: s["optimizer"]["state"][0]["step"].zero_()),
    ("no sums", _set("sums", {})),
    ("a group of only params and lr", lambda s: s["optimizer"]["param_groups"].__setitem__(
        0, {k: s["optimizer"]["param_groups"][0][k] for k in ("params", "lr")})),  # the defaults of the rest pass
    ("an AMSGrad moment", lambda s: s["optimizer"]["state"][0].update(max_exp_avg_sq=torch.zeros_like(
        s["optimizer"]["state"][0]["exp_avg_sq"]))),
]
BOUNDS_REFUSED = [
    ("batch past the end of the epoch", _set("batch", 4), "batch is 4, above 3"),
    ("a counter above 2**62", _set("examples", 2**62 + 1), "examples is 4611686018427387905, above"),
    ("a negative second moment", _moment("exp_avg_sq", 0, -1e-30), "exp_avg_sq holds negative values"),
    ("a learning rate of 0", _group("lr", 0.0), ".lr is 0"),
    ("a negative learning rate", _group("lr", -1e-3), ".lr is -0.001, below 0.0"),
    ("beta of 1", _group("betas", (0.9, 1.0)), "betas[1] is 1.0, above"),
    ("a negative beta", _group("betas", (-0.1, 0.999)), "betas[0] is -0.1, below 0.0"),
    ("a fractional Adam step", lambda s: s["optimizer"]["state"][0]["step"].fill_(1.5), ".step is 1.5, not a whole number"),
    ("an optimizer state with another key", lambda s: s["optimizer"].update(extra=1), "optimizer is not an optimizer state"),
    ("a negative Adam step", lambda s: s["optimizer"]["state"][0]["step"].fill_(-1.0), ".step is -1.0, below 0.0"),
    ("eps of 0", _group("eps", 0.0), ".eps is 0.0, below 1e-300"),
    ("another eps", _group("eps", 1.0), ".eps is 1.0, but this run's optimizer has 1e-08"),
    ("other betas (in range)", _group("betas", (0.0, 0.0)), ".betas is (0.0, 0.0), but this run's optimizer has (0.9, 0.999)"),
    ("another weight decay", _group("weight_decay", -0.1), ".weight_decay is -0.1, but this run's optimizer has 0"),
    ("a moment for a parameter the model lacks", lambda s: s["optimizer"]["state"].update(
        {len(s["optimizer"]["param_groups"][0]["params"]): s["optimizer"]["state"][0]}), "names parameter 8"),
    ("rng as floats", _set("rng", torch.zeros(5056)), "rng is not a generator state"),
    ("two param groups", lambda s: s["optimizer"]["param_groups"].append(dict(s["optimizer"]["param_groups"][0])),
     "optimizer.param_groups has 2 groups, expected 1"),
    ("a group without lr", lambda s: s["optimizer"]["param_groups"][0].pop("lr"), "param_groups[0] is not an optimizer group"),
    ("three betas", _group("betas", (0.9, 0.99, 0.5)), "betas is not a pair"),
    ("param groups not a list", lambda s: s["optimizer"].update(param_groups=None), "optimizer.param_groups has no groups"),
    ("a negative AMSGrad moment", lambda s: s["optimizer"]["state"][0].update(max_exp_avg_sq=torch.full_like(
        s["optimizer"]["state"][0]["exp_avg_sq"], -1.0)), "max_exp_avg_sq holds negative values"),
    ("a NaN sum", _set("sums", {"elbo": torch.tensor(float("nan"))}), "sums['elbo'] is nan"),
    ("an objective's weights this run lacks", _set("parts", {}), "parts holds an objective's own weights"),
    ("a moment for parameter -1", lambda s: s["optimizer"]["state"].update({-1: s["optimizer"]["state"][0]}),
     "names parameter -1"),
    ("sums named by numbers", _set("sums", {1: torch.tensor(0.0)}), "sums is not a dict of named sums"),
    ("a number as a string", _set("sums", {"elbo": "-20"}), "sums['elbo'] is a str, not a number"),
]


@pytest.mark.parametrize("name, edit", BOUNDS_KEPT, ids=[b[0] for b in BOUNDS_KEPT])
def test_state_check_bounds_are_inclusive(name, edit):
    from vaekit.runs.state_check import check_state

    model, opt, state = _in_memory_state()
    edit(state)
    check_state(state, model, opt, Path("train_state.pt"), max_batch=3)


@pytest.mark.parametrize("name, edit, fragment", BOUNDS_REFUSED, ids=[b[0] for b in BOUNDS_REFUSED])
def test_state_check_refuses_just_past_each_bound(name, edit, fragment):
    from vaekit.runs.state_check import check_state

    model, opt, state = _in_memory_state()
    edit(state)
    with pytest.raises(VaekitError, match="train_state.pt: ") as info:
        check_state(state, model, opt, Path("train_state.pt"), max_batch=3)
    assert fragment in str(info.value), str(info.value)
