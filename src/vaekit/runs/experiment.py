"""Experiments: a config and a run directory in, a trained and saved VAE out.

This is where data, model, objective, trainer and checkpoints meet (the generic loop in
`training.loop` knows none of them). The CLI and Python users call the same functions.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import IN_MEMORY, Dataset, load_dataset, resolve_binarize, standardization
from ..data.table_files import load_overrides
from ..errors import TrainingInterrupted, VaekitError
from ..evaluation.estimates import evaluate_elbo
from ..evaluation.overflow import blaming_rows, row_named, split_chunks, training_refusal
from ..model import VAE, build_model
from ..parts.likelihoods import likelihood_support
from ..parts.modules import MAX_CONDITION_CLASSES
from ..training.distributed import SINGLE, Context, agreed, barrier, shard_indices
from ..training.ema import EMA
from ..training.graphs import GraphedStep
from ..training.loop import GPU_SYNC_EVERY, Guards, LoopState, StepFn, fused, make_adam, set_lr, settle, train_epoch
from ..training.loss import VAEObjective
from ..training.stopping import Stopping, outcome
from . import checkpoint as ckpt
from . import init_from
from .config import Config, TrainConfig, plugins_needed
from .history import append_metrics
from .opening import absolute_paths, check_same_data, open_run, with_data_digest, writing_lock
from .weights_kept import repair

log = logging.getLogger(__name__)


def load_data(cfg: Config, run: str | Path | None = None) -> Dataset:
    """The data `cfg` names, checked against its likelihood's support; with `run`, standardized by the
    statistics saved there at training time (not recomputed)."""
    d = cfg.data
    if d.dataset == IN_MEMORY and run is not None and Path(run).parent.name == "samplers" and \
            (Path(run).parent.parent / ckpt.CONFIG).exists():  # a post-hoc sampler's own VAE (`runs.samplers`)
        raise VaekitError(f"{run}: a post-hoc sampler, trained on its run's codes: fit it again with vaekit fit-sampler "
                          f"{Path(run).parent.parent} --sampler {Path(run).name} --epochs N")
    if d.dataset == IN_MEMORY:
        raise VaekitError(f"{run or 'this run'}: its data were tensors given to vaekit.fit in Python ([data] dataset "
                          f"\"{IN_MEMORY}\"), which no file holds: continue it with vaekit.fit(model, x, out=RUN, "
                          "resume=True); evaluate and encode take the data as --dataset FILE, score as --data FILE")
    saved = ckpt.load_standardization(Path(run), cfg.model.data_dim) if run is not None and d.standardize else (None, None)
    support = likelihood_support(cfg.model.likelihood)
    overrides = load_overrides(d.schema, d.column_types) if support == "table" and cfg.model.columns is None else None
    dataset = load_dataset(d.dataset, d.binarize, support, d.split_seed, d.val_size, d.data_dir, d.mmap, d.standardize,
                           *saved, scale=d.scale, schema=cfg.model.columns, overrides=overrides)
    if run is not None and cfg.model.data_shape and tuple(dataset.shape) != tuple(cfg.model.data_shape):
        raise VaekitError(f"{dataset.name}: examples of shape {tuple(dataset.shape)}, but the model of {run} was trained "
                          f"on shape {tuple(cfg.model.data_shape)}; name data of that shape (--dataset; dataset= in Python)")
    return dataset


def resumed_data(cfg: Config, out: Path, ctx: Context = SINGLE) -> Dataset:
    """A resumed run's data, standardized by its saved statistics; statistics it lost are the training split's,
    computed again the same way (the same numbers) and written back, with a warning."""
    path = out / ckpt.STANDARDIZATION
    if not cfg.data.standardize:
        return load_data(cfg, out)
    if path.exists() or path.is_symlink():
        dataset = load_data(cfg, out)  # the data (their digest checked) standardized by the saved statistics
        if not dataset.standardized_as_trained():
            raise VaekitError(f"{path}: not the statistics of this run's training split (it would go on training on "
                              "data scaled otherwise); restore it, or delete it and --resume computes it again")
        return dataset
    dataset = load_data(cfg)
    if ctx.is_main:
        ckpt.save_standardization(out, dataset.shift, dataset.spread)
        log.warning("%s: missing; computed again from the training split of %s", path, dataset.name)
    return dataset


def resolve(cfg: Config, dataset: Dataset) -> Config:
    """Fill what the data and the registries decide (the example shape, the binarization "auto" stands
    for, the plugins the parts come from); refuse a model built for other data."""
    shape = tuple(dataset.shape)
    if cfg.model.data_shape and tuple(cfg.model.data_shape) != shape:
        raise VaekitError(f"model expects data of shape {tuple(cfg.model.data_shape)} but {dataset.name} has {shape}")
    binarize = resolve_binarize(cfg.data.binarize, likelihood_support(cfg.model.likelihood))
    plugins = plugins_needed(cfg)  # only those a part comes from: every later command will ask for them
    unused = sorted(set(cfg.model.plugins) - set(plugins))
    if unused:
        log.warning("plugin %s names no part of this run: not recorded (a command on the run will not ask for it)",
                    ", ".join(unused))
    classes = cfg.model.condition_classes
    if cfg.model.conditional:
        dataset.labels_of("train")
        if (classes or MAX_CONDITION_CLASSES) < dataset.classes:
            raise VaekitError(f"{dataset.name} has labels up to {dataset.classes - 1}; " + (
                f"the model knows {classes} classes" if classes else f"a conditional VAE takes at most "
                f"{MAX_CONDITION_CLASSES:,} classes (0…{MAX_CONDITION_CLASSES - 1})"))
        classes = classes or dataset.classes
    columns = dataset.schema if likelihood_support(cfg.model.likelihood) == "table" else None
    return replace(cfg, model=replace(cfg.model, data_shape=shape, plugins=plugins, condition_classes=classes,
                                      columns=columns),
                   data=replace(cfg.data, binarize=binarize, **absolute_paths(cfg.data)))


def labels_for(cfg: Config, dataset: Dataset, split: str, device: str | torch.device = "cpu") -> torch.Tensor | None:
    """The labels of `split` where the model is conditioned on them (one of its classes each), else None."""
    if not cfg.model.conditional:
        return None
    y, classes = dataset.labels_of(split), cfg.model.condition_classes
    if y.numel() and not (0 <= int(y.min()) and int(y.max()) < classes):  # named here by file and split
        i = int(((y < 0) | (y >= classes)).nonzero()[0, 0])
        raise VaekitError(f"{dataset.name} [y]: labels must lie in 0…{classes - 1} (the model's {classes} classes); the "
                          f"label of example {i} of the {split} split is {int(y[i])}")
    return y.to(device)


@dataclass
class TrainResult:
    model: VAE
    config: Config
    history: list[dict[str, Any]] = field(default_factory=list)
    dataset: Dataset | None = None
    weights_epoch: int | None = None  # the epoch whose weights `model` holds (with --patience: the best's)


def train_run(
    cfg: Config,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    ctx: Context = SINGLE,
    device: str = "cpu",
    on_epoch: Callable[[dict[str, Any], VAE, Config], None] | None = None,
    given: Collection[tuple[str, str]] | None = None,
    words: tuple[str, str] = ("resume=True", "out"),
) -> TrainResult:
    """Train the VAE `cfg` describes; with `out`, write the run directory there after every epoch.

    `resume=True` continues from the last checkpoint in `out` with the run's saved config, `cfg`
    changing what may change on a resume (`given`: the (section, name) settings the caller set; by
    default those that differ from the defaults); the result equals an uninterrupted run with the
    same seed on CPU. Under torchrun (`ctx` from
    `distributed.launched`) the model is wrapped in DistributedDataParallel, `batch_size` is per rank,
    rank 0 alone writes, and a run directory holding a checkpoint is resumed automatically.
    `on_epoch(record, model, config)` is called on rank 0 after each epoch (e.g. a TensorBoard logger).
    `words`: how the caller says resume and out in its errors (the CLI: `--resume`, `--out`).
    """
    cfg = Config.checked(cfg, "train_run", "; vaekit.fit trains a model built in Python")
    if out is not None and (not isinstance(out, (str, os.PathLike)) or not str(out).strip() or "\0" in str(out)):
        raise VaekitError(f"train_run: out must name a folder for the run (or be None), got {out!r:.80}")
    if cfg.train.init_from:  # recorded as a path that works from any folder
        cfg = replace(cfg, train=replace(cfg.train, init_from=str(Path(cfg.train.init_from).expanduser().resolve())))
    with writing_lock(Path(out) if out is not None else None, ctx):
        out, resume, cfg = open_run(cfg, out, resume, ctx, given, words)
        if resume:
            cfg = check_same_data(cfg)
        init = Path(cfg.train.init_from) if cfg.train.init_from and not resume else None
        source = init_from.init_source(init, cfg) if init is not None else None
        dataset = resumed_data(cfg, out, ctx) if resume else load_data(cfg)
        cfg = cfg if resume else with_data_digest(cfg)
        if init is not None:  # its model, not the user's, is built for other data
            init_from.same_shape(init, source, dataset)
        cfg = resolve(cfg, dataset)
        if cfg.model.columns is not None and ctx.is_main:
            log.info("%s: %d columns (the schema, saved in config.json)\n%s", dataset.name, len(cfg.model.columns),
                     cfg.model.columns.describe())
        if init is not None:
            init_from.same_model(init, source, cfg)
        if resume or init is not None:  # weights to load: their shapes against the config's before it is built
            ckpt.check_shapes_first(out if resume else init, cfg)
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model)
        if init is not None:
            init_from.start_from(model, init, ctx.is_main)
        return train_model(model.to(device), cfg, dataset, out, resume, progress, ctx, device, on_epoch)


def train_model(
    model: nn.Module,
    cfg: Config,
    dataset: Dataset,
    out: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    ctx: Context = SINGLE,
    device: str = "cpu",
    on_epoch: Callable[[dict[str, Any], VAE, Config], None] | None = None,
) -> TrainResult:
    """The loop of `train_run` and `fit`: train `model` (already built, seeded) on `dataset` as
    `cfg.train` says, checkpointing into `out` (checked by `open_run`) after every epoch."""
    tc = cfg.train
    if tc.patience and not dataset.split("val").shape[0]:  # before anything is written
        remedy = "this run trains without one, which a resume cannot change: --patience 0, or train a new run with " \
            "--val-size N" if resume else "give --val-size N, or --patience 0"
        raise VaekitError(f"--patience {tc.patience} stops on the validation ELBO, but {dataset.name} holds none out "
                          f"(--val-size 0): {remedy}")
    barrier(ctx)  # every rank has checked the run directory before rank 0 writes to it
    head = getattr(getattr(model, "decoder", None), "head", None)
    if not resume and hasattr(head, "initialize"):  # a part that starts from the data: a count's rate at its mean
        head.initialize(standardization(dataset.split("train"), dataset.scale)[0].to(device))
    objective, optimizer, step_fn = build_trainer(model, tc, dataset, device, ctx)
    own = (objective.module if isinstance(objective, DistributedDataParallel) else objective).objective
    parts = own if own.has_state() else None  # the objective's own modules (FactorVAE's discriminator)
    spectral = (objective.module if isinstance(objective, DistributedDataParallel) else objective).spectral
    ema = EMA(model, tc.ema) if tc.ema else None  # the weights evaluation and sampling use
    averaged = ema.swapped if ema is not None else contextlib.nullcontext
    state = LoopState()
    history: list[dict[str, Any]] = []
    grace = float(getattr(own, "kl_warmup_epochs", 0.0))  # early stopping counts no epoch of the KL warm-up
    held = None  # the epoch whose weights model.safetensors holds
    steps = -(-len(shard_indices(torch.arange(dataset.split("train").shape[0]), ctx, tc.batch_size)) // tc.batch_size)
    if steps == 0:
        raise VaekitError(f"{dataset.name}: {dataset.split('train').shape[0]} training examples give no step per epoch "
                          f"on each of {ctx.world_size} processes; use more data or fewer processes")
    if resume:
        history = ckpt.restore(out, model, optimizer, state, rank=ctx.rank, max_batch=steps, parts=parts, ema=ema,
                               world_size=ctx.world_size, spectral=spectral, cfg=cfg)
        if tc.epochs < state.epoch:  # config.json would say fewer epochs than the weights have seen
            raise VaekitError(f"{out}: --epochs {tc.epochs} is fewer than the {state.epoch} this run has trained; "
                              f"--resume continues to a larger total (--epochs {state.epoch + 1} or more)")
        set_lr(optimizer, tc.lr)  # the config's rate (a --resume may change it), not the one saved with Adam
        if out is not None and ctx.is_main:
            was = state.trained_with or {}  # the schedule the state trained on (config.json may have been edited)
            before = replace(ckpt.load_config(out).train, **{k: was[k] for k in ("lr_schedule", "epochs") if k in was})
            warn_schedule_change(before, tc, state.epoch)
            ckpt.save_config(out, cfg)  # with what this resume changed (the epochs, say)
    elif out is not None and ctx.is_main:
        ckpt.start_run(out, cfg, dataset.shift, dataset.spread)
    state.stopping = state.stopping or Stopping.of(history, grace)  # a fresh run, or a state of vaekit 0.4: none kept
    if resume and out is not None and ctx.is_main:  # lost, or behind the state: the state's weights where they belong
        held = repair(out, state, tc.patience, lambda: ckpt.write_weights(out, model, state, ema),
                      training=state.epoch < tc.epochs and not state.stopping.exhausted(tc.patience))
    if ctx.is_main:
        log.info("%s", summary(cfg, dataset, device, out))
        if ctx.distributed:
            log.info("%d processes × batch %d = global batch %d", ctx.world_size, tc.batch_size, ctx.world_size * tc.batch_size)

    train_x = dataset.split("train").to(device)
    validated = dataset.split("val").shape[0] > 0  # --val-size 0: no validation wanted, none computed
    kept: dict[str, torch.Tensor] | None = None  # an early-stopping run's best weights so far (this process's)
    val_x = dataset.eval_split("val").to(device) if validated else None
    val_y = labels_for(cfg, dataset, "val", device) if validated else None
    if cfg.model.conditional:  # the loop gathers each batch's labels with its rows
        train_x = (train_x, labels_for(cfg, dataset, "train", device))
    dev = torch.device(device)

    def save(shares: dict[str, Any] | None = None, weights: bool = True) -> None:
        if out is not None and ctx.is_main:
            ckpt.save_checkpoint(out, model, optimizer, state, parts, ema, ctx.world_size, spectral, cfg, shares,
                                 weights)

    with _stop_on_signals() as interrupted:

        def on_step(st: LoopState) -> None:
            taken = st.step + st.skipped + st.oversized
            stop = interrupted()
            if ctx.distributed:  # every process stops at one step (on an accelerator: one of every GPU_SYNC_EVERY)
                stop = agreed(stop, ctx, dev) if dev.type == "cpu" or taken % GPU_SYNC_EVERY == 0 else 0
            if stop or (tc.checkpoint_every and taken % tc.checkpoint_every == 0):
                settle(st)  # on every rank, so a non-finite batch stops all of them at the same step
                save(ckpt.rank_sums(st, ctx, dev), weights=not tc.patience)  # and every rank's running sums
            if stop:
                where = f"interrupted by {signal.Signals(stop).name} at epoch {st.epoch + 1}, step {st.step}"
                raise TrainingInterrupted(f"{where}; checkpoint saved in {out}; continue with --resume" if out else where,
                                          signum=stop)

        while state.epoch < tc.epochs and not state.stopping.exhausted(tc.patience):
            if tc.lr_schedule == "cosine":  # from the epoch alone: a resumed run continues the same curve
                set_lr(optimizer, tc.lr * 0.5 * (1 + math.cos(math.pi * state.epoch / tc.epochs)))
            t0 = time.perf_counter()
            train_metrics = train_epoch(objective, optimizer, objective, train_x, tc.batch_size, tc.seed, state,
                                        progress and ctx.is_main, ctx=ctx, on_step=on_step,
                                        skip_nonfinite=tc.skip_nonfinite, step_fn=step_fn, guards=Guards(tc.grad_clip, tc.grad_skip),
                                        after_step=ema.update if ema is not None else None)
            seconds = time.perf_counter() - t0
            val = {}
            if validated:
                with averaged(), blaming_rows(model, val_x, row_named(cfg.data.dataset, val_x, "the validation split", dataset.schema),
                                              lambda: split_chunks(dataset, ["train"], cfg.model.conditional,
                                                                   device), val_y, training_refusal):
                    val = evaluate_elbo(model, val_x, seed=tc.seed, ctx=ctx, y=val_y).terms()
            record = {"epoch": state.epoch, "step": state.step,  # no wall-clock time: a seeded run's files repeat
                      **{f"train/{k}": v for k, v in train_metrics.items()}, **{f"val/{k}": v for k, v in val.items()}}
            history.append(record)
            if ctx.is_main:
                train_text = "  ".join(f"{k} {v:.3f}" for k, v in train_metrics.items())
                val_text = f"val elbo {val['elbo']:.3f}" if val else "no validation"
                log.info("epoch %d/%d  train %s  %s  %.2fs", state.epoch, tc.epochs, train_text, val_text, seconds)
                if out is not None:  # metrics first: a resume drops lines past its checkpoint
                    append_metrics(out, record)
            best = state.stopping.update(val.get("elbo"), state.epoch, grace)  # from the state, not metrics.jsonl
            if best and tc.patience:  # with --patience, model.safetensors keeps the best epoch's weights
                with averaged():
                    kept = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            held = state.epoch if not tc.patience or best else held
            save(weights=not tc.patience or best)  # before the epoch's side channels (a tracker): never delayed
            if ctx.is_main and on_epoch is not None:
                on_epoch(record, model, cfg)
    barrier(ctx)
    if ema is not None:  # the model handed back is the one saved: the averaged weights
        ema.load_into_module()
    if tc.patience and history:  # and with --patience the best epoch's
        if kept is not None:
            model.load_state_dict(kept)
        elif out is not None and (out / ckpt.WEIGHTS).exists():  # a resume that found no better epoch
            ckpt.load_weights(out, model)
        if ctx.is_main:
            log.info("%s", outcome(state.stopping, tc.patience, state.epoch, held))
    return TrainResult(model, cfg, history, dataset, held)


def warn_schedule_change(before: TrainConfig, now: TrainConfig, epoch: int) -> None:
    """A resume that changes the epochs of a cosine schedule (or the schedule) bends the learning-rate curve: say so."""
    if now.lr_schedule == before.lr_schedule and (now.lr_schedule == "constant" or now.epochs == before.epochs):
        return
    lr = now.lr * 0.5 * (1 + math.cos(math.pi * epoch / now.epochs)) if now.lr_schedule == "cosine" else now.lr
    log.warning("the learning-rate schedule changes on this resume (%s over %d epochs → %s over %d): epoch %d trains "
                "at lr %.3g, not where the old curve was", before.lr_schedule, before.epochs, now.lr_schedule,
                now.epochs, epoch + 1, lr)


def summary(cfg: Config, dataset: Dataset, device: str, out: Path | None) -> str:
    """One line on what is trained, on what, how and where (the full config is in config.json)."""
    m, t = cfg.model, cfg.train
    hidden = "linear" if not m.hidden else "×".join(map(str, m.hidden))
    latent = " + ".join(map(str, m.latent_dim))
    model = f"{m.arch} {hidden}, latent {latent}, {m.posterior} Q, {m.prior} prior, {m.likelihood} likelihood"
    if m.built_in_python:  # the settings would be the defaults, not this model
        model = f"built in Python (latent {latent}; {'; '.join(m.python_parts)})"
    data = f"{dataset.name} ({dataset.split('train').shape[0]} train, {dataset.split('val').shape[0]} val)"
    if dataset.binarize == "dynamic":  # grey levels become 0/1: say so, it is a choice (--binarize none keeps them)
        data += ", binarized dynamically (x ~ Bernoulli(grey level) afresh each use; --binarize static or none)"
    where = f"{out} (config in {ckpt.CONFIG})" if out is not None else "memory"
    return (f"model {model}; data {data}; objective {t.objective}, {t.epochs} epochs of batch {t.batch_size}, "
            f"lr {t.lr:g}; {device}; run {where}")


def build_trainer(
    model: VAE, tc: TrainConfig, dataset: Dataset, device: str = "cpu", ctx: Context = SINGLE
) -> tuple[nn.Module, torch.optim.Optimizer, StepFn | None]:
    """(objective, Adam, step function) for `model`, already on `device`: the objective wrapped in
    DistributedDataParallel under torch.distributed, and with `cuda_graphs` where it can run (one
    process, CUDA, fused Adam) a `GraphedStep`; else step_fn is None (the plain `train_step`).
    Adam's first group holds the model's parameters, the objective's own groups follow (`param_groups`)."""
    graphs = tc.cuda_graphs and _graphs_possible(device, ctx)
    objective: nn.Module = VAEObjective(model, tc, dataset, ctx)
    groups = [{"params": list(model.parameters())}]
    groups += objective.objective.param_groups()  # the objective's own player (FactorVAE's discriminator)
    optimizer = make_adam(groups, lr=tc.lr, eps=tc.adam_eps, capturable=graphs, weight_decay=tc.weight_decay)
    if graphs and not fused(optimizer, capturable=True):
        log.warning("cuda_graphs = true needs fused Adam, which this torch build lacks; the step runs eagerly")
        graphs = False
    if ctx.distributed:
        objective = DistributedDataParallel(objective, device_ids=[ctx.local_rank] if device.startswith("cuda") else None)
    return objective, optimizer, GraphedStep(objective, optimizer, objective, tc.batch_size, guards=Guards(tc.grad_clip, tc.grad_skip)) if graphs else None


def _graphs_possible(device: str, ctx: Context) -> bool:
    """cuda_graphs needs a CUDA device and one process; elsewhere the same step runs eagerly."""
    if not device.startswith("cuda") or ctx.distributed:
        log.warning("cuda_graphs = true needs one process on a CUDA device (here: %s%s); the step runs eagerly",
                    device, f", {ctx.world_size} processes" if ctx.distributed else "")
        return False
    return True


@contextlib.contextmanager
def _stop_on_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
    """SIGINT (Ctrl-C) and SIGTERM (schedulers, `timeout`, torchrun on preemption) set a flag that
    the loop reads after each step, so the step finishes, a checkpoint is saved, and the process
    exits with a clear line; never from the middle of an optimizer step. A second signal stops at once.
    Yields a function giving the signal received (0 for none)."""
    received = {"signum": 0}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: 0
        return

    def handler(signum, frame):
        if received["signum"]:
            raise KeyboardInterrupt
        received["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield lambda: received["signum"]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
