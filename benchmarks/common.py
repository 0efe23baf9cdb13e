"""Shared by the benchmark scripts: where the verified datasets lie, and the train-then-evaluate loop."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch

from vaekit.evaluation.estimates import evaluate_elbo, log_likelihood
from vaekit.model import build_model
from vaekit.runs.checkpoint import save_config, save_weights
from vaekit.runs.config import Config
from vaekit.runs.experiment import build_trainer, load_data, resolve
from vaekit.training.ema import EMA
from vaekit.training.loop import Guards, LoopState, set_lr, train_epoch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_data_dir() -> str:
    return os.environ.get("VAEKIT_DATA", str(SHARED_DATA))


def recipe_arguments(p, epochs: int) -> None:
    """The flags the MNIST recipes share: the budget in epochs, the learning rate, the evaluation, the
    data root, the seed and the device."""
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--eval-n", type=int, default=None)
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def train_stages(cfg: Config, stages: list[tuple[float, float]], log=print, device: str = "cpu"):
    """Train `cfg` through stages of (passes, learning rate); fractional passes end an epoch early.

    The config's guards apply (gradient clipping and skipping); with `ema`, validation uses the average
    and the model returned holds it. Returns (model, dataset, seconds of training).
    """
    ds = load_data(cfg)
    cfg = resolve(cfg, ds)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model).to(device)
    loss_fn, opt, step_fn = build_trainer(model, cfg.train, ds, device)
    x = ds.split("train").to(device)
    steps_per_pass = -(-x.shape[0] // cfg.train.batch_size)
    state, seconds = LoopState(), 0.0
    ema = EMA(model, cfg.train.ema) if cfg.train.ema else None
    for i, (passes, lr) in enumerate(stages):
        set_lr(opt, lr)
        steps_left = max(1, round(passes * steps_per_pass))
        while steps_left > 0:
            t0 = time.perf_counter()
            metrics = train_epoch(model, opt, loss_fn, x, cfg.train.batch_size, cfg.train.seed, state,
                                  max_steps=min(steps_left, steps_per_pass), step_fn=step_fn, guards=Guards(cfg.train.grad_clip, cfg.train.grad_skip),
                                  after_step=ema.update if ema is not None else None)
            seconds += time.perf_counter() - t0
            steps_left -= steps_per_pass
        with ema.swapped() if ema is not None else contextlib.nullcontext():
            val = evaluate_elbo(model, ds.eval_split("val").to(device))["elbo"]
        shown = " ".join(f"{k} {v:.2f}" for k, v in metrics.items())
        skipped = f"; {state.oversized} updates skipped by --grad-skip" if state.oversized else ""
        log(f"stage {i}: {passes:g} passes at lr {lr:.2e}; train {shown}; val ELBO {val:.2f}; {seconds:.0f}s so far{skipped}")
    if ema is not None:
        ema.load_into_module()
    return model, ds, seconds


def save_run(cfg: Config, ds, model, out: str) -> None:
    """The trained model as a run directory (config.json, model.safetensors) that `vaekit evaluate OUT`
    reads, so a longer evaluation (k = 5000) need not retrain."""
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    save_config(run, resolve(cfg, ds))
    save_weights(run, model)


def cosine_recipe(cfg: Config, args) -> tuple:
    """Train `cfg` for `args.epochs` with Adam's rate decaying from `args.lr` to 0 on a cosine (a step per epoch),
    keep it in `args.save` if given, and evaluate it on the test split (`args.eval_k`, `args.eval_n`):
    (dataset, seconds of training, test ELBO, test NLL, its standard error)."""
    stages = [(1.0, args.lr * 0.5 * (1 + math.cos(math.pi * e / args.epochs))) for e in range(args.epochs)]
    model, ds, seconds = train_stages(cfg, stages, device=args.device)
    if args.save:
        save_run(cfg, ds, model, args.save)
    return (ds, seconds, *test_nll(model, ds, args.eval_k, args.eval_n))


def write_json(result, path: str | None):
    """`result` written to `path` as JSON where one is given; returned either way."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    return result


def test_nll(model, ds, k: int, n: int | None = None) -> tuple[float, float, float]:
    """(test ELBO, test NLL by k importance samples, its standard error), in nats, on the first n test images."""
    x = ds.eval_split("test")[:n].to(next(model.parameters()).device)
    elbo = evaluate_elbo(model, x)["elbo"]
    ll = log_likelihood(model, x, k=k)
    return elbo, -ll.mean, ll.stderr
