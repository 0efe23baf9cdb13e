"""Experiments: a config and a run directory in, a trained and saved VAE out.

This is where data, model, objective, trainer and checkpoints meet (the generic loop in
`train.py` knows none of them). The CLI and Python users call the same functions.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint as ckpt
from .config import Config, TrainConfig
from .data import Dataset, load_dataset
from .distributed import SINGLE, Context, barrier
from .distributions import unchecked
from .errors import VaekitError
from .evaluate import evaluate_elbo
from .model import VAE
from .objectives import elbo, iwae
from .train import GraphedStep, LoopState, LossFn, StepFn, fused, lr_to_device, make_adam, settle, train_epoch

log = logging.getLogger(__name__)


class VAEObjective(nn.Module):
    """The training objective as a module, so that DistributedDataParallel can wrap it.

    forward(raw batch, progress in epochs) → (loss to minimize, {name: batch mean}). elbo: β warmed
    up linearly over `kl_warmup_epochs`; iwae: L_k with k = `train_k`, DReG optional. The noise
    (binarization and ε) is drawn for the global batch and each rank keeps its own rows, so N ranks
    with batch B/N follow the same trajectory as one process with batch B (up to float rounding).
    """

    def __init__(self, model: VAE, tc: TrainConfig, dataset: Dataset, ctx: Context = SINGLE):
        super().__init__()
        self.model, self.tc, self.dataset, self.ctx = model, tc, dataset, ctx
        self._core = compile_or_eager(self._loss) if tc.compile else self._loss
        self._beta: torch.Tensor | None = None  # β on the device, for a compiled core (a float is baked in)

    def forward(self, raw: torch.Tensor, progress: float | torch.Tensor):
        """progress: epochs done, a float or a 0-d device tensor (a CUDA-graphed step passes a tensor)."""
        tc, b = self.tc, raw.shape[0]
        u = self._noise(torch.rand, (b, raw.shape[1]), 0, raw.device) if self.dataset.binarize == "dynamic" else None
        x = self.dataset.prepare(raw, u=u)
        samples = tc.train_k if tc.objective == "iwae" else tc.num_samples
        eps = self._noise(torch.randn, (samples, b, self.model.latent_dim), 1, raw.device)
        beta = tc.beta * warmup_ramp(progress, tc.kl_warmup_epochs)
        if tc.compile and isinstance(beta, float) and tc.kl_warmup_epochs > 0:
            if self._beta is None:
                self._beta = torch.zeros((), device=raw.device)
            beta = self._beta.fill_(beta)
        with unchecked(), torch.autocast(raw.device.type, torch.bfloat16, enabled=tc.precision == "bf16"):
            return self._core(x, eps, beta)

    def _loss(self, x: torch.Tensor, eps: torch.Tensor, beta: float | torch.Tensor):
        tc = self.tc
        if tc.objective == "iwae":
            r = iwae(self.model, x, tc.train_k, dreg=tc.dreg, eps=eps)
            return -r.surrogate.mean(), {f"iwae{tc.train_k}": r.bound.mean()}
        r = elbo(self.model, x, kl=tc.kl, beta=beta, estimator=tc.estimator, eps=eps)
        return -r.surrogate.mean(), {"elbo": r.elbo.mean(), "reconstruction": r.reconstruction.mean(), "kl": r.kl.mean()}

    def _noise(self, draw, shape: tuple[int, ...], dim: int, device) -> torch.Tensor:
        """Noise of `shape` for this rank: drawn for the global batch (dimension `dim` × world) from
        the RNG every rank shares, then rows rank::world, the examples `perm[rank::world]` gave it."""
        world = self.ctx.world_size
        if world == 1:
            return draw(shape, device=device)
        full = list(shape)
        full[dim] *= world
        return draw(full, device=device)[(slice(None),) * dim + (slice(self.ctx.rank, None, world),)]


def warmup_ramp(progress: float | torch.Tensor, warmup_epochs: float) -> float | torch.Tensor:
    """The KL weight's linear warm-up: progress / warmup_epochs, at most 1 (1 without a warm-up)."""
    if warmup_epochs <= 0:
        return 1.0
    if isinstance(progress, torch.Tensor):
        return torch.clamp(progress / warmup_epochs, max=1.0)
    return min(1.0, progress / warmup_epochs)


def compile_or_eager(fn: Callable) -> Callable:
    """torch.compile(fn); where this platform cannot compile, fn itself, with a warning."""
    try:
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True  # a graph that fails to compile runs eagerly
        return torch.compile(fn, dynamic=False)
    except Exception as e:  # noqa: BLE001 - e.g. a Python version that dynamo does not support yet
        log.warning("torch.compile unavailable here (%s); training eagerly", str(e).splitlines()[0])
        return fn


def vae_loss(model: VAE, tc: TrainConfig, dataset: Dataset) -> LossFn:
    """The single-process training loss of `VAEObjective` as a plain function."""
    return VAEObjective(model, tc, dataset)


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
    dataset: Dataset | None = None


def train_run(
    cfg: Config,
    out: str | Path | None = None,
    resume: bool = False,
    show_progress: bool = False,
    ctx: Context = SINGLE,
    device: str = "cpu",
    on_epoch: Callable[[dict[str, Any], VAE, Config], None] | None = None,
) -> TrainResult:
    """Train the VAE `cfg` describes; with `out`, write the run directory there after every epoch.

    `resume=True` continues from the last checkpoint in `out` (the epoch count may be raised); the
    result equals an uninterrupted run with the same seed on CPU. Under torchrun (`ctx` from
    `distributed.launched`) the model is wrapped in DistributedDataParallel, `batch_size` is per rank,
    rank 0 alone writes, and a run directory holding a checkpoint is resumed automatically.
    `on_epoch(record, model, config)` is called on rank 0 after each epoch (e.g. a TensorBoard logger).
    """
    out = Path(out) if out is not None else None
    if ctx.distributed and out is not None and (out / ckpt.STATE).exists():
        resume = True  # an elastic restart continues where the job stopped
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
    barrier(ctx)  # every rank has checked the run directory before rank 0 writes to it

    torch.manual_seed(tc.seed)
    model = VAE.from_config(cfg.model).to(device)
    objective, optimizer, step_fn = build_trainer(model, tc, dataset, device, ctx)
    state = LoopState()
    history: list[dict[str, Any]] = []
    if resume:
        history = _restore(out, model, optimizer, state, main=ctx.is_main)
    elif out is not None and ctx.is_main:
        ckpt.save_config(out, cfg)
    if ctx.is_main:
        log.info("config %s", cfg.to_dict())
        if ctx.distributed:
            log.info("%d processes × batch %d = global batch %d", ctx.world_size, tc.batch_size, ctx.world_size * tc.batch_size)

    train_x, val_x = dataset.split("train").to(device), dataset.eval_split("val").to(device)
    save = (lambda: save_checkpoint(out, model, optimizer, state)) if out is not None and ctx.is_main else (lambda: None)
    with _stop_on_sigint() as interrupted:

        def on_step(st: LoopState) -> None:
            if tc.checkpoint_every and (st.step + st.skipped) % tc.checkpoint_every == 0:  # steps taken
                settle(st)  # on every rank, so a non-finite batch stops all of them at the same step
                save()
            if interrupted():
                save()
                where = f"interrupted at epoch {st.epoch + 1}, step {st.step}"
                raise TrainingInterrupted(f"{where}; checkpoint saved in {out}; continue with --resume" if out else where)

        while state.epoch < tc.epochs:
            t0 = time.perf_counter()
            train_metrics = train_epoch(objective, optimizer, objective, train_x, tc.batch_size, tc.seed, state,
                                        show_progress and ctx.is_main, ctx=ctx, on_step=on_step,
                                        skip_nonfinite=tc.skip_nonfinite, step_fn=step_fn)
            seconds = time.perf_counter() - t0
            val = evaluate_elbo(model, val_x, seed=tc.seed, ctx=ctx)
            record = {"epoch": state.epoch, "step": state.step, "seconds": round(seconds, 4),
                      **{f"train/{k}": v for k, v in train_metrics.items()},
                      **{f"val/{k}": v for k, v in val.items() if k != "n"}}
            history.append(record)
            if ctx.is_main:
                train_text = "  ".join(f"{k} {v:.3f}" for k, v in train_metrics.items())
                log.info("epoch %d/%d  train %s  val elbo %.3f  %.2fs", state.epoch, tc.epochs, train_text, val["elbo"], seconds)
                if out is not None:  # metrics first: a resume drops lines past its checkpoint
                    ckpt.append_metrics(out, record)
                if on_epoch is not None:
                    on_epoch(record, model, cfg)
            save()
    barrier(ctx)
    return TrainResult(model, cfg, history, dataset)


def build_trainer(
    model: VAE, tc: TrainConfig, dataset: Dataset, device: str = "cpu", ctx: Context = SINGLE
) -> tuple[nn.Module, torch.optim.Optimizer, StepFn | None]:
    """(objective, Adam, step function) for `model`, already on `device`: the objective wrapped in
    DistributedDataParallel under torch.distributed, and with `cuda_graphs` where it can run (one
    process, CUDA, fused Adam) a `GraphedStep`; else step_fn is None (the plain `train_step`)."""
    graphs = tc.cuda_graphs and _graphs_possible(device, ctx)
    optimizer = make_adam(model.parameters(), lr=tc.lr, eps=tc.adam_eps, capturable=graphs)
    if graphs and not fused(optimizer, capturable=True):
        log.warning("cuda_graphs = true needs fused Adam, which this torch build lacks; the step runs eagerly")
        graphs = False
    objective: nn.Module = VAEObjective(model, tc, dataset, ctx)
    if ctx.distributed:
        objective = DistributedDataParallel(objective, device_ids=[ctx.local_rank] if device.startswith("cuda") else None)
    return objective, optimizer, GraphedStep(objective, optimizer, objective, tc.batch_size) if graphs else None


def _graphs_possible(device: str, ctx: Context) -> bool:
    """cuda_graphs needs a CUDA device and one process; elsewhere the same step runs eagerly."""
    if not device.startswith("cuda") or ctx.distributed:
        log.warning("cuda_graphs = true needs one process on a CUDA device (here: %s%s); the step runs eagerly",
                    device, f", {ctx.world_size} processes" if ctx.distributed else "")
        return False
    return True


class TrainingInterrupted(VaekitError):
    """Ctrl-C: the run stopped after a whole step and saved a checkpoint."""


@contextlib.contextmanager
def _stop_on_sigint():
    """SIGINT sets a flag that the loop reads after each step, so a checkpoint is never written from
    the middle of an optimizer step. A second Ctrl-C interrupts at once."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        if flag["set"]:
            raise KeyboardInterrupt
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: flag["set"]
    finally:
        signal.signal(signal.SIGINT, previous)


def _restore(
    out: Path, model: VAE, optimizer: torch.optim.Optimizer, state: LoopState, main: bool = True
) -> list[dict[str, Any]]:
    """Continue from train_state.pt, which holds the weights too, so it is consistent on its own.

    Under torch.distributed, rank 0 (`main`) alone rewrites metrics.jsonl and takes the saved partial
    sums of the epoch (its own: the epoch's training means then cover rank 0's share of the steps
    before the checkpoint); the other ranks start them from zero, so nothing is counted twice.
    """
    saved = ckpt.load_state(out)
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        lr_to_device(optimizer)
    except (KeyError, RuntimeError, ValueError) as e:
        raise VaekitError(f"{out / ckpt.STATE}: does not match the model in {ckpt.CONFIG} ({str(e).splitlines()[0]})") from None
    torch.set_rng_state(saved["rng"])
    device = next(model.parameters()).device
    if device.type == "cuda" and "cuda_rng" in saved:  # the training noise drawn on the GPU continues too
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    state.epoch, state.step, state.batch = int(saved["epoch"]), int(saved["step"]), int(saved["batch"])
    state.sums, state.skipped, state.examples = dict(saved["sums"]), int(saved["skipped"]), int(saved["examples"])
    if not main:
        state.sums, state.examples = {}, 0
    log.info("resuming %s at epoch %d, batch %d", out, state.epoch + 1, state.batch)
    if main:
        return ckpt.truncate_metrics(out, state.epoch)
    return [r for r in ckpt.read_metrics(out) if r.get("epoch", 0) <= state.epoch]


def save_checkpoint(out: Path, model: VAE, optimizer: torch.optim.Optimizer, state: LoopState) -> None:
    """train_state.pt (everything to continue, weights included) first, then model.safetensors."""
    settle(state)  # the steps still in flight on the device are counted first
    device = next(model.parameters()).device
    cuda_rng = {"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
    ckpt.save_state(out, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **cuda_rng,
                          "rng": torch.get_rng_state(), "epoch": state.epoch, "step": state.step,
                          "batch": state.batch, "sums": {k: torch.as_tensor(v).cpu() for k, v in state.sums.items()},
                          "skipped": state.skipped, "examples": state.examples})
    ckpt.save_weights(out, model, metadata={"epoch": str(state.epoch), "step": str(state.step)})


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
