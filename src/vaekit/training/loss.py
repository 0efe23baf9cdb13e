"""The trained loss: what one training step minimizes, apart from the loop that steps it.

It owns everything between a raw batch and a scalar: scaling and binarization noise, the draws of
z (the same numbers for one process or N), the labels of a conditional VAE, bf16 autocast and
torch.compile. What is minimized is the registered `Objective` the config names (`objectives.base`),
which returns the loss and the true ELBO or IWAE bound; nothing here knows which objective, prior,
posterior or likelihood it trains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..objectives import OBJECTIVES, Objective
from ..objectives.estimators import draw
from ..parts.distributions import validating
from .distributed import SINGLE, Context, gather_batch
from .loop import LossFn
from .spectral import SpectralPenalty

log = logging.getLogger(__name__)

class VAEObjective(nn.Module):
    """The training objective as a module, so that DistributedDataParallel can wrap it.

    forward(raw batch, progress in epochs) → (loss to minimize, {name: batch mean}), with β warmed up
    linearly over `kl_warmup_epochs`. Each global batch is split into contiguous blocks, one per rank,
    and every random draw (binarization, then z by Q's own `rsample`) is made for the whole global
    batch, each rank keeping its block: N ranks with batch B/N follow one process with batch B up to
    float rounding, for any Q whose distribution can be `expand`ed (every torch distribution can).
    """

    def __init__(self, model: nn.Module, tc: Any, dataset: Any, ctx: Context = SINGLE):
        super().__init__()
        self.model, self.tc, self.dataset, self.ctx = model, tc, dataset, ctx
        self.objective: Objective = OBJECTIVES.build(tc.objective)
        self.objective.setup(model, dataset.split("train").shape[0])
        self._core = compile_or_eager(self._loss) if tc.compile else self._loss
        if tc.compile:  # the draws run eagerly inside a compiled objective, so they are the same numbers
            self._sample = torch.compiler.disable(self._sample)
        self._progress: torch.Tensor | None = None  # progress on the device, for a compiled core (a float is baked in)
        # NVAE's λ·Σσ_max(W) over the model's layers, in float32 outside autocast; its vectors are training state
        self.spectral = SpectralPenalty(model, tc.spectral_reg) if tc.spectral_reg else None

    def forward(self, batch: Tensor | tuple[Tensor, Tensor], progress: float | Tensor):
        """batch: raw rows [B, D], or (rows, labels [B]) for a conditional VAE (bound by `model.given`);
        progress: epochs done, a float or a 0-d device tensor (a CUDA-graphed step passes a tensor)."""
        raw, y = batch if isinstance(batch, tuple) else (batch, None)
        u = self._uniform(raw) if self.dataset.binarize == "dynamic" else None
        x = self.dataset.prepare(raw, u=u)
        # The data were checked when loaded and non-finite outputs are caught by the step's verdict:
        # the distributions skip their argument checks.
        with validating(self.model, False), torch.autocast(raw.device.type, torch.bfloat16,
                                                           enabled=self.tc.precision == "bf16"):
            loss, metrics = self._core(x, self._on_device(progress, raw.device), y)
        if self.spectral is None:
            return loss, metrics
        penalty, total = self.spectral.penalty()
        return loss + penalty, {**metrics, "spectral_sum": total}

    def _loss(self, x: Tensor, progress: float | Tensor, y: Tensor | None = None):
        model = self.model.given(y) if y is not None else self.model
        return self.objective.loss(model, x, self._sample, progress, self._whole)

    def _whole(self, t: Tensor, dim: int = 0) -> Tensor:
        return gather_batch(t, self.ctx, dim)

    def _on_device(self, progress: float | Tensor, device: torch.device) -> float | Tensor:
        """progress as given, or as a device tensor for a compiled core (which would bake a float in)."""
        if not self.tc.compile or isinstance(progress, Tensor):
            return progress
        if self._progress is None:
            self._progress = torch.zeros((), device=device)
        return self._progress.fill_(progress)

    def _uniform(self, raw: Tensor) -> Tensor:
        """U(0, 1) noise for this rank's block of the global batch (drawn for all of it)."""
        world, rank, b = self.ctx.world_size, self.ctx.rank, raw.shape[0]
        u = torch.rand((b * world, raw.shape[1]), device=raw.device)
        return u if world == 1 else u[rank * b : (rank + 1) * b]

    def _sample(self, q_z: Distribution, num_samples: int, estimator: str) -> Tensor:
        world = self.ctx.world_size
        if world == 1:
            return draw(q_z, num_samples, estimator)
        # Q of the whole global batch laid out as [world, B/N]: this rank's rows are block `rank`.
        whole = q_z.expand(torch.Size((world,)) + q_z.batch_shape)
        return draw(whole, num_samples, estimator).select(1, self.ctx.rank)


def compile_or_eager(fn: Callable) -> Callable:
    """torch.compile(fn); where this platform cannot compile (at wrapping or at the first call), fn itself, with a
    warning. Dynamo turns torch.distributions' argument checks off for the whole process when it starts (a check is
    a graph break): they are off inside the compiled fn only, and as they were everywhere else (an evaluation after
    a compiled fit still refuses a scale ≤ 0 in one line)."""
    validating = Distribution._validate_args
    try:
        compiled = torch.compile(fn, dynamic=False)
    except Exception as e:  # noqa: BLE001 - e.g. a Python version that dynamo does not support yet
        log.warning("torch.compile unavailable here (%s); training eagerly", str(e).splitlines()[0])
        return fn
    finally:
        Distribution.set_default_validate_args(validating)
    state = {"fn": compiled, "tried": False}

    def call(*args, **kwargs):
        if state["fn"] is fn:  # compiling failed: eager, checks as everywhere
            return fn(*args, **kwargs)
        first, state["tried"] = not state["tried"], True
        before = Distribution._validate_args
        Distribution.set_default_validate_args(False)
        try:
            return compiled(*args, **kwargs)
        except Exception as e:  # a backend that fails to compile this graph (re-raised after the first call)
            if not first:
                raise
            log.warning("torch.compile failed (%s); training eagerly", str(e).splitlines()[0][:200])
            state["fn"] = fn
        finally:
            Distribution.set_default_validate_args(before)
        return fn(*args, **kwargs)

    return call


def vae_loss(model: nn.Module, tc: Any, dataset: Any) -> LossFn:
    """The single-process training loss: a `VAEObjective`, called as loss(batch, progress) → (loss, metrics)."""
    return VAEObjective(model, tc, dataset)
