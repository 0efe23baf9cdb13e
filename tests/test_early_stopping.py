"""Early stopping on the validation ELBO (`--patience N`, Tomczak & Welling 2018's protocol): the rule against the
counter their training loop keeps, the weights kept against the validation ELBO the run recorded for them, and a
resumed run against the straight one, byte for byte."""

import json
import random

import torch
from safetensors import safe_open

import vaekit
from vaekit.cli import main
from vaekit.evaluation.estimates import evaluate_elbo
from vaekit.runs.checkpoint import load_run
from vaekit.runs.experiment import load_data
from vaekit.training.stopping import best_record, exhausted, is_best, since_best

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


def test_the_rule_from_the_history_is_the_training_loops_counter():
    rng = random.Random(0)
    for _ in range(300):
        n, patience, warmup = rng.randint(1, 40), rng.randint(1, 6), rng.choice([0, 0, 3, 7.5])
        values = [round(rng.gauss(0, 1) + 0.05 * i, 1) for i in range(n)]  # ties included (rounded)
        history = [{"epoch": i + 1, "val/elbo": v} for i, v in enumerate(values)]
        stops = [t for t in range(1, n + 1) if exhausted(history[:t], patience, warmup)]
        assert (stops[0] if stops else None) == counter_stop(values, patience, warmup)
        best = max(values)
        assert best_record(history)["epoch"] == values.index(best) + 1  # the first of equal bests
        for t in range(1, n + 1):
            assert is_best(history[:t]) == (values[t - 1] > max(values[: t - 1], default=float("-inf")))
    nan = [{"epoch": 1, "val/elbo": -5.0}, {"epoch": 2, "val/elbo": float("nan")}, {"epoch": 3, "val/elbo": -6.0}]
    assert since_best(nan) == 2 and not is_best(nan[:2]) and best_record(nan)["epoch"] == 1
    assert not exhausted(nan, 0)  # patience 0: never


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
    assert last < 60 and exhausted(history, 2) and not any(exhausted(history[:t], 2) for t in range(1, last))
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
    assert longer[:last] == history and exhausted(longer, 4) and len(longer) > last
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
