"""Experiments: a config and a run directory in, a trained and saved VAE out.

This is where data, model, objective, trainer and checkpoints meet (the generic loop in
`train.py` knows none of them). The CLI and Python users call the same functions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .config import Config, TrainConfig
from .data import Dataset, load_dataset
from .distributions import unchecked
from .errors import VaekitError
from .evaluate import evaluate_elbo
from .model import VAE
from .objectives import elbo, iwae
from .train import LoopState, LossFn, make_adam, train_epoch

log = logging.getLogger(__name__)


def vae_loss(model: VAE, tc: TrainConfig, dataset: Dataset) -> LossFn:
    """The training loss for `tc.objective`: −(mean surrogate), per-example means as metrics.

    elbo: β warmed up linearly over `kl_warmup_epochs`; iwae: L_k with k = `train_k` (DReG optional).
    """

    def elbo_loss(raw: torch.Tensor, progress: float):
        x = dataset.prepare(raw)
        ramp = min(1.0, progress / tc.kl_warmup_epochs) if tc.kl_warmup_epochs > 0 else 1.0
        with unchecked():
            r = elbo(model, x, num_samples=tc.num_samples, kl=tc.kl, beta=tc.beta * ramp, estimator=tc.estimator)
        return -r.surrogate.mean(), {"elbo": r.elbo.mean(), "reconstruction": r.reconstruction.mean(), "kl": r.kl.mean()}

    def iwae_loss(raw: torch.Tensor, progress: float):
        with unchecked():
            r = iwae(model, dataset.prepare(raw), tc.train_k, dreg=tc.dreg)
        return -r.surrogate.mean(), {f"iwae{tc.train_k}": r.bound.mean()}

    return iwae_loss if tc.objective == "iwae" else elbo_loss


def load_data(cfg: Config) -> Dataset:
    d = cfg.data
    return load_dataset(d.dataset, d.binarize, cfg.model.likelihood, d.split_seed, d.val_size, d.data_dir, d.mmap)


def resolve(cfg: Config, dataset: Dataset) -> Config:
    """Fill what the data decides (the example shape); refuse a model built for other data."""
    shape = tuple(dataset.shape)
    if cfg.model.data_shape and tuple(cfg.model.data_shape) != shape:
        raise VaekitError(f"model expects data of shape {tuple(cfg.model.data_shape)} but {dataset.name} has {shape}")
    return replace(cfg, model=replace(cfg.model, data_shape=shape))


@dataclass
class TrainResult:
    model: VAE
    config: Config
    history: list[dict[str, Any]] = field(default_factory=list)


def train_run(cfg: Config, out: str | Path | None = None, resume: bool = False, show_progress: bool = False) -> TrainResult:
    """Train the VAE `cfg` describes; with `out`, write the run directory there after every epoch.

    `resume=True` continues from the last checkpoint in `out` (the epoch count may be raised); the
    result equals an uninterrupted run with the same seed on CPU.
    """
    out = Path(out) if out is not None else None
    if resume:
        if out is None or not (out / ckpt.STATE).exists():
            raise VaekitError(f"{out}: no checkpoint to resume from")
        saved = ckpt.load_config(out)  # a resumed run keeps its saved config; only the epoch count may change
        cfg = replace(saved, train=replace(saved.train, epochs=cfg.train.epochs))
    elif out is not None and (out / ckpt.CONFIG).exists():
        raise VaekitError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    dataset = load_data(cfg)
    cfg = resolve(cfg, dataset)
    tc = cfg.train

    torch.manual_seed(tc.seed)
    model = VAE.from_config(cfg.model)
    optimizer = make_adam(model.parameters(), lr=tc.lr, eps=tc.adam_eps)
    state = LoopState()
    history: list[dict[str, Any]] = []
    if resume:
        ckpt.load_weights(out, model)
        saved_state = ckpt.load_state(out)
        optimizer.load_state_dict(saved_state["optimizer"])
        torch.set_rng_state(saved_state["rng"])
        state = LoopState(int(saved_state["epoch"]), int(saved_state["step"]))
        history = ckpt.read_metrics(out)[: state.epoch]
        log.info("resuming %s at epoch %d", out, state.epoch)
    elif out is not None:
        ckpt.save_config(out, cfg)
    log.info("config %s", cfg.to_dict())

    loss_fn = vae_loss(model, tc, dataset)
    train_x, val_x = dataset.split("train"), dataset.eval_split("val")
    while state.epoch < tc.epochs:
        t0 = time.perf_counter()
        train_metrics = train_epoch(model, optimizer, loss_fn, train_x, tc.batch_size, tc.seed, state, show_progress)
        seconds = time.perf_counter() - t0
        val = evaluate_elbo(model, val_x, seed=tc.seed)
        record = {"epoch": state.epoch, "step": state.step, "seconds": round(seconds, 4),
                  **{f"train/{k}": v for k, v in train_metrics.items()},
                  **{f"val/{k}": v for k, v in val.items() if k != "n"}}
        history.append(record)
        train_text = "  ".join(f"{k} {v:.3f}" for k, v in train_metrics.items())
        log.info("epoch %d/%d  train %s  val elbo %.3f  %.2fs", state.epoch, tc.epochs, train_text, val["elbo"], seconds)
        if out is not None:
            save_checkpoint(out, model, optimizer, state)
            ckpt.append_metrics(out, record)
    return TrainResult(model, cfg, history)


def save_checkpoint(out: Path, model: VAE, optimizer: torch.optim.Optimizer, state: LoopState) -> None:
    ckpt.save_weights(out, model, metadata={"epoch": str(state.epoch)})
    ckpt.save_state(out, {"epoch": state.epoch, "step": state.step, "optimizer": optimizer.state_dict(),
                          "rng": torch.get_rng_state()})


def load(run: str | Path) -> VAE:
    """The trained model of a run directory, rebuilt from its config.json and safetensors weights."""
    return load_run(run)[1]


def load_run(run: str | Path) -> tuple[Config, VAE]:
    run = Path(run)
    cfg = ckpt.load_config(run)
    if not cfg.model.data_shape:
        raise VaekitError(f"{run / ckpt.CONFIG}: [model] data_shape is empty; the run was never trained")
    model = VAE.from_config(cfg.model)
    ckpt.load_weights(run, model)
    model.eval()
    return cfg, model
