"""Early stopping on the validation ELBO (`--patience N`, Tomczak & Welling 2018's protocol): the rule against the
counter their training loop keeps, the weights kept against the validation ELBO the run recorded for them, and a
resumed run against the straight one, byte for byte."""

import hashlib
import json
import random

import torch
from safetensors import safe_open

import vaekit
from vaekit.cli import main
from vaekit.evaluation.estimates import evaluate_elbo
from vaekit.runs.checkpoint import load_config, load_run, load_state
from vaekit.runs.experiment import load_data
from vaekit.training.stopping import Stopping

FLAGS = ["--dataset", "digits", "--lr", "0.01", "--patience", "2", "--hidden", "64", "--latent-dim", "4"]


def counter_stop(values, patience, warmup):
    """The epoch a training loop written as Tomczak & Welling's stops at: a counter e, reset by a new best and held at
    zero through the warm-up, stopping once it reaches `patience` (their `e > 50` is `patience` 51)."""
    best, e = float("-inf"), 0
    for epoch, value in enumerate(values, start=1):
        if value > best:
            best, e = value, 0
        else:
            e += 1
            if epoch <= warmup:
                e = 0
        if e >= patience:
            return epoch
    return None


def test_the_rule_is_the_training_loops_counter():
    rng = random.Random(0)
    for _ in range(300):
        n, patience, warmup = rng.randint(1, 40), rng.randint(1, 6), rng.choice([0, 0, 3, 7.5])
        values = [round(rng.gauss(0, 1) + 0.05 * i, 1) for i in range(n)]  # ties included (rounded)
        history = [{"epoch": i + 1, "val/elbo": v} for i, v in enumerate(values)]
        stops = [t for t in range(1, n + 1) if Stopping.of(history[:t], warmup).exhausted(patience)]
        assert (stops[0] if stops else None) == counter_stop(values, patience, warmup)
        stopping = Stopping()
        for t, v in enumerate(values, 1):
            assert stopping.update(v, t, warmup) == (v > max(values[: t - 1], default=float("-inf")))
        assert stopping.best_epoch == values.index(max(values)) + 1 and stopping.best == max(values)  # the first best
    odd = [{"epoch": 1, "val/elbo": -5.0}, {"epoch": 2, "val/elbo": float("nan")}, {"epoch": 3, "val/elbo": float("inf")},
           {"epoch": 4}]
    assert Stopping.of(odd) == Stopping(best=-5.0, best_epoch=1, since=3)  # NaN, Inf, none: no improvement
    assert Stopping.of([{"epoch": 1, "val/elbo": float("nan")}]) == Stopping(since=1)
    assert not Stopping.of(odd).exhausted(0)  # patience 0: never


def best_record(history):
    return max(history, key=lambda r: r["val/elbo"])  # the first of equal maxima


def val_elbo_of_saved_weights(run):
    cfg, model = load_run(run)
    data = load_data(cfg, run)
    return evaluate_elbo(model, data.eval_split("val"), seed=cfg.train.seed).terms()["elbo"]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_stops_after_patience_epochs_and_keeps_its_best_epochs_weights(tmp_path, capsys):
    run = tmp_path / "run"
    main(["--quiet", "train", *FLAGS, "--epochs", "60", "--checkpoint-every", "5", "--out", str(run)])
    history = records(run)
    last, best = history[-1]["epoch"], best_record(history)
    assert last < 60 and Stopping.of(history).exhausted(2)
    assert not any(Stopping.of(history[:t]).exhausted(2) for t in range(1, last))
    assert best["epoch"] < last  # the weights kept are not the last epoch's
    with safe_open(str(run / "model.safetensors"), "pt") as f:  # mid-epoch checkpoints never wrote over them
        assert f.metadata()["epoch"] == str(best["epoch"])
    assert val_elbo_of_saved_weights(run) == best["val/elbo"]  # the same draws: these are that epoch's weights
    assert f"epoch {best['epoch']}'s weights kept: {best['val/elbo']:.3f}" in capsys.readouterr().out
    main(["--quiet", "evaluate", str(run), "--k", "2", "--n", "20", "--json"])  # it says which epoch it evaluates
    assert json.loads(capsys.readouterr().out)["protocol"]["weights_epoch"] == best["epoch"]
    # a resume of the stopped run trains nothing; a larger patience goes on from the last epoch, not the best
    main(["--quiet", "train", "--out", str(run), "--resume"])
    assert records(run) == history
    main(["--quiet", "train", "--out", str(run), "--resume", "--patience", "4"])
    longer = records(run)
    assert longer[:last] == history and Stopping.of(longer).exhausted(4) and len(longer) > last
    assert val_elbo_of_saved_weights(run) == best_record(longer)["val/elbo"]


def test_a_resumed_early_stopping_run_is_the_straight_run_byte_for_byte(tmp_path):
    main(["--quiet", "train", *FLAGS, "--epochs", "60", "--out", str(tmp_path / "full")])
    stopped = records(tmp_path / "full")[-1]["epoch"]
    main(["--quiet", "train", *FLAGS, "--epochs", str(stopped - 2), "--out", str(tmp_path / "part")])
    main(["--quiet", "train", "--out", str(tmp_path / "part"), "--resume", "--epochs", "60"])
    for name in ("model.safetensors", "metrics.jsonl"):
        assert (tmp_path / "part" / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name


def test_fit_hands_back_the_best_epochs_weights_the_average_where_it_keeps_one():
    torch.manual_seed(0)
    x = (torch.rand(600, 20) < torch.linspace(0.1, 0.9, 20)).float()
    model = vaekit.VAE(data_dim=20, latent_dim=2, hidden=[16])
    result = vaekit.fit(model, x[:500], x[500:], epochs=40, lr=0.03, patience=1, ema=0.5, progress=False, seed=3)
    best = best_record(result.history)
    assert len(result.history) < 40 and best["epoch"] < len(result.history)
    got = evaluate_elbo(result.model, x[500:], seed=3).terms()["elbo"]
    assert got == best["val/elbo"]


def test_patience_without_a_validation_split_is_one_line_and_writes_nothing(tmp_path, capsys):
    assert main(["--quiet", "train", "--dataset", "digits", "--val-size", "0", "--patience", "3", "--epochs", "2",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--patience 3 stops on the validation ELBO" in err and "--val-size 0" in err
    assert not (tmp_path / "r").exists()


KILL_BEFORE_STATE = """
import os, signal, sys, runpy
import vaekit.runs.checkpoint as c
save_state, epoch = c.save_state, int(sys.argv[1])
def killed(out, state):  # model.safetensors of this epoch is written; its train_state.pt is not
    if state["epoch"] == epoch and state["batch"] == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    save_state(out, state)
c.save_state = killed
sys.argv = ["vaekit", *sys.argv[2:]]
runpy.run_module("vaekit", run_name="__main__")
"""


def test_a_kill_between_the_weights_and_the_state_resumes_to_the_straight_runs_bytes(tmp_path):
    """The fourteenth attack (HIGH): killed between a checkpoint's two files, a run kept model.safetensors of the
    epoch before for good (the state was written first, and a resume rewrote the weights only if missing): the run
    said it was done and evaluation used other weights. The weights are written first now, and the resume trains the
    epoch again; a file behind its state (vaekit 0.4's order) is written again from the state."""
    import os
    import shutil
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    plain = [*FLAGS[:2], "--hidden", "8", "--latent-dim", "2", "--epochs", "3"]
    for flags, at in ((plain, 3), ([*FLAGS, "--epochs", "60"], 5)):  # the last epoch; a patience run's best (of 18)
        main(["--quiet", "train", *flags, "--out", str(tmp_path / "S")])
        proc = subprocess.run([sys.executable, "-c", KILL_BEFORE_STATE, str(at), "--quiet", "train", *flags, "--out",
                               str(tmp_path / "K")], check=False, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == -9, proc.stderr  # killed for real, where it was asked to be
        assert load_state(tmp_path / "K")["epoch"] == at - 1
        main(["--quiet", "train", "--out", str(tmp_path / "K"), "--resume"])
        for name in ("model.safetensors", "metrics.jsonl", "config.json"):
            assert (tmp_path / "K" / name).read_bytes() == (tmp_path / "S" / name).read_bytes(), name
        shutil.rmtree(tmp_path / "K")
        shutil.rmtree(tmp_path / "S")
    # a file behind its state: the plain run of 3 epochs holding the weights of its second
    flags = [*FLAGS[:2], "--hidden", "8", "--latent-dim", "2"]
    main(["--quiet", "train", *flags, "--epochs", "2", "--out", str(tmp_path / "two")])
    main(["--quiet", "train", *flags, "--epochs", "3", "--out", str(tmp_path / "S")])
    shutil.copytree(tmp_path / "S", tmp_path / "old")
    shutil.copy(tmp_path / "two" / "model.safetensors", tmp_path / "old" / "model.safetensors")
    main(["--quiet", "train", "--out", str(tmp_path / "old"), "--resume"])
    assert (tmp_path / "old" / "model.safetensors").read_bytes() == (tmp_path / "S" / "model.safetensors").read_bytes()


def test_patience_turned_on_by_a_resume_says_which_weights_it_holds(tmp_path, capsys, caplog):
    """The fourteenth attack (MED): `--resume --patience 2` after epochs trained without it said the best epoch's
    weights were kept while the file held the last epoch's."""
    import logging

    run = tmp_path / "run"
    main(["--quiet", "train", *FLAGS, "--epochs", "60", "--out", str(tmp_path / "S")])
    history = records(tmp_path / "S")
    best, last = Stopping.of(history).best_epoch, history[-1]["epoch"]  # 18 and 20 with these flags
    flags = [f for f in FLAGS if f not in ("--patience", "2")]
    main(["--quiet", "train", *flags, "--epochs", str(last), "--out", str(run)])
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        result = vaekit.train_run(load_config(run).replace(train={"epochs": 60, "patience": 2}), run, resume=True,
                                  progress=False)
    assert result.weights_epoch == last and len(result.history) == last  # stopped at once: 2 epochs since the best
    said = [r.getMessage() for r in caplog.records]
    assert any(f"holds epoch {last}'s weights, not epoch {best}'s, the best so far" in m for m in said)
    assert any(m.startswith(f"stopped early at epoch {last}") and f"model.safetensors holds epoch {last}'s" in m
               for m in said)
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        assert f.metadata()["epoch"] == str(last)


def test_an_edited_metrics_file_does_not_decide_when_to_stop(tmp_path, capsys):
    """The fourteenth attack (MED): early stopping read its standing from metrics.jsonl, so an edited val/elbo
    (Infinity, 1e308, NaN, any number) decided the stop; train_state.pt holds the standing now (checked), and
    metrics.jsonl only shows the curve."""
    main(["--quiet", "train", *FLAGS, "--epochs", "60", "--out", str(tmp_path / "S")])
    main(["--quiet", "train", *FLAGS, "--epochs", "2", "--out", str(tmp_path / "R")])
    lines = (tmp_path / "R" / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    (tmp_path / "R" / "metrics.jsonl").write_text(json.dumps({**first, "val/elbo": 1e308}) + "\n" + lines[1] + "\n")
    main(["--quiet", "train", "--out", str(tmp_path / "R"), "--resume", "--epochs", "60"])
    assert (tmp_path / "R" / "model.safetensors").read_bytes() == (tmp_path / "S" / "model.safetensors").read_bytes()
    assert records(tmp_path / "R")[1:] == records(tmp_path / "S")[1:]
    state = load_state(tmp_path / "R")
    assert state["stopping"] == {**Stopping.of(records(tmp_path / "S")).as_dict(), "digest": hashlib.sha256(
        (tmp_path / "S" / "model.safetensors").read_bytes()).hexdigest()}  # the file the run wrote last: the best's
    for crafted, said in [({"best": float("nan"), "best_epoch": 1, "since": 0}, "stopping.best is nan"),
                          ({"best": -20.0, "best_epoch": 99, "since": 0}, "stopping.best_epoch is 99"),
                          ({"best": -20.0, "best_epoch": 1}, "is not early stopping's standing"),
                          ({"best": 1e300, "best_epoch": 1, "since": 0}, "stopping.best is 1e+300, above"),
                          ({"best": -20.0, "best_epoch": 1, "since": 0, "digest": "x" * 64}, "stopping.digest is not")]:
        torch.save({**state, "stopping": crafted}, tmp_path / "R" / "train_state.pt")
        capsys.readouterr()
        assert main(["--quiet", "train", "--out", str(tmp_path / "R"), "--resume", "--epochs", "61"]) == 2
        assert said in capsys.readouterr().err


def test_what_a_resume_finds_in_model_safetensors_is_put_right_or_said(tmp_path, capsys):
    """The fifteenth attack: a header epoch of '²' (isdigit() takes it, int() does not) was a traceback; a stopped
    patience run's file with no header label was taken as missing and overwritten with the last epoch's; a file one
    epoch ahead of its state was kept by a resume that trained nothing; another run's file labelled as this one's
    was kept. The state's weights are written wherever the state holds what the file should; else the file stays."""
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file, save_file

    plain = [*FLAGS[:2], "--hidden", "8", "--latent-dim", "2"]
    main(["--quiet", "train", *plain, "--epochs", "2", "--out", str(tmp_path / "S2")])
    main(["--quiet", "train", *plain, "--epochs", "3", "--out", str(tmp_path / "S3")])
    straight = (tmp_path / "S3" / "model.safetensors").read_bytes()
    for label in ({"epoch": "²", "step": "1"}, {"epoch": "3", "step": "123"}):  # a label of nothing; of this run's
        shutil.copytree(tmp_path / "S3", tmp_path / "R")
        other = tmp_path / "R" / "model.safetensors"
        save_file(load_file(tmp_path / "S2" / "model.safetensors"), other, metadata=label)  # other weights
        main(["--quiet", "train", "--out", str(tmp_path / "R"), "--resume"])
        assert other.read_bytes() == straight
        capsys.readouterr()
        main(["--quiet", "evaluate", str(tmp_path / "R"), "--k", "2", "--n", "10", "--json"])
        assert json.loads(capsys.readouterr().out)["protocol"]["weights_epoch"] == 3
        shutil.rmtree(tmp_path / "R")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # killed after epoch 3's weights, before its state
    proc = subprocess.run([sys.executable, "-c", KILL_BEFORE_STATE, "3", "--quiet", "train", *plain, "--epochs", "3",
                           "--out", str(tmp_path / "K")], check=False, env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9
    main(["--quiet", "train", "--out", str(tmp_path / "K"), "--resume", "--epochs", "2"])  # trains nothing
    assert (tmp_path / "K" / "model.safetensors").read_bytes() == (tmp_path / "S2" / "model.safetensors").read_bytes()
    main(["--quiet", "train", *FLAGS, "--epochs", "60", "--out", str(tmp_path / "P")])  # stopped: best 18 of 20
    kept = load_file(tmp_path / "P" / "model.safetensors")
    save_file(kept, tmp_path / "P" / "model.safetensors")  # the best weights, their label lost
    main(["--quiet", "train", "--out", str(tmp_path / "P"), "--resume"])
    after = load_file(tmp_path / "P" / "model.safetensors")
    assert all(torch.equal(after[k], v) for k, v in kept.items())  # not overwritten with the last epoch's


def test_a_stopped_runs_best_weights_replaced_by_others_of_the_same_label_are_said(tmp_path, caplog):
    """The sixteenth attack (LOW): another run's weights relabelled as this stopped run's best epoch were kept
    silently (nothing could tell them apart: a checkpoint holds the last epoch's). train_state.pt records the sha256
    of the file each checkpoint wrote; a file that differs is said, and the last line does not call it the best."""
    import logging
    import shutil

    from safetensors.torch import load_file, save_file

    main(["--quiet", "train", *FLAGS, "--epochs", "60", "--out", str(tmp_path / "S")])
    main(["--quiet", "train", *FLAGS, "--epochs", "60", "--seed", "2", "--out", str(tmp_path / "O")])
    best = Stopping.of(records(tmp_path / "S")).best_epoch
    shutil.copytree(tmp_path / "S", tmp_path / "R")
    with safe_open(str(tmp_path / "S" / "model.safetensors"), "pt") as f:
        label = f.metadata()
    assert label["epoch"] == str(best)
    save_file(load_file(tmp_path / "O" / "model.safetensors"), tmp_path / "R" / "model.safetensors", metadata=label)
    foreign = (tmp_path / "R" / "model.safetensors").read_bytes()
    with caplog.at_level(logging.INFO):
        assert main(["--quiet", "train", "--out", str(tmp_path / "R"), "--resume", "--epochs", "60"]) == 0
    said = [r.getMessage() for r in caplog.records]
    assert any(f"labelled epoch {best}, the best, but not the weights this run wrote then" in m for m in said), said
    assert any("model.safetensors holds weights of no recorded epoch" in m for m in said), said
    assert (tmp_path / "R" / "model.safetensors").read_bytes() == foreign  # kept: nothing can restore the best
    caplog.clear()
    shutil.rmtree(tmp_path / "R")
    shutil.copytree(tmp_path / "S", tmp_path / "R")  # the run's own file: nothing said
    with caplog.at_level(logging.INFO):
        assert main(["--quiet", "train", "--out", str(tmp_path / "R"), "--resume", "--epochs", "60"]) == 0
    assert not any("sha256" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "R" / "model.safetensors").read_bytes() == (tmp_path / "S" / "model.safetensors").read_bytes()
