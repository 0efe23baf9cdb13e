"""A generic training loop. It knows a loss function and a data tensor, not what a VAE is.

The data stay one in-memory tensor; each epoch draws a seeded permutation and slices batches
from it, so no per-example Python runs on the hot path. Metrics are accumulated as tensors and
read once per epoch.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .distributed import SINGLE, Context, all_reduce_sum, shard_indices
from .errors import VaekitError

log = logging.getLogger(__name__)

LossFn = Callable[[Tensor, float], tuple[Tensor, dict[str, Tensor]]]
"""loss_fn(raw_batch, progress) → (scalar loss to minimize, {name: scalar batch mean}); progress in epochs."""


class NonFiniteLossError(VaekitError):
    """The loss became NaN or Inf; nothing was stepped with it."""


@dataclass
class LoopState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken


def make_adam(params, lr: float, eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where this torch build supports it (≈10% of a small step)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without the fused kernel
        return torch.optim.Adam(params, lr=lr, eps=eps)


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of examples in `epoch`: a function of (seed, epoch) only, so a resumed run sees the same."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def train_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    data: Tensor,
    batch_size: int,
    seed: int,
    state: LoopState,
    show_progress: bool = False,
    max_steps: int | None = None,
    ctx: Context = SINGLE,
) -> dict[str, float]:
    """One pass over `data` in the order `epoch_permutation(…, state.epoch)`; returns example-weighted means.

    `max_steps` ends the pass early (a fractional epoch, for budgets counted in passes). Under
    torch.distributed each rank takes `perm[rank::world]` (trimmed to equal lengths) with its own
    `batch_size`; the returned means are over all ranks' examples.
    """
    module.train()
    perm = shard_indices(epoch_permutation(data.shape[0], seed, state.epoch), ctx).to(data.device)
    steps = (perm.shape[0] + batch_size - 1) // batch_size
    if max_steps is not None:
        steps = min(steps, max_steps)
        perm = perm[: steps * batch_size]
    n = perm.shape[0]
    sums: dict[str, Tensor] = {}
    bar = _Progress(steps, state.epoch + 1) if show_progress else None
    for i in range(steps):
        batch = data.index_select(0, perm[i * batch_size : (i + 1) * batch_size])
        where = f"epoch {state.epoch + 1}, step {i + 1} (global step {state.step + 1})"
        try:
            loss, metrics = loss_fn(batch, state.epoch + i / steps)
        except ValueError as e:  # torch.distributions refusing NaN parameters
            raise NonFiniteLossError(f"non-finite values at {where}: {str(e).splitlines()[0]}") from None
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {float(loss.detach())} at {where}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.step += 1
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value.detach() * batch.shape[0]
        if bar is not None:
            bar.update(i + 1, {k: float(v) / min(n, (i + 1) * batch_size) for k, v in sums.items()})
    if bar is not None:
        bar.close()
    state.epoch += 1
    names = list(sums)
    totals = all_reduce_sum(torch.stack([torch.as_tensor(sums[k], dtype=torch.float64) for k in names] + [
        torch.tensor(float(n), dtype=torch.float64, device=data.device)]), ctx).tolist()
    return {name: totals[i] / totals[-1] for i, name in enumerate(names)}


class _Progress:
    """A one-line progress bar on a terminal (at most 10 redraws a second)."""

    def __init__(self, steps: int, epoch: int):
        self.steps, self.epoch, self.last = steps, epoch, 0.0

    def update(self, done: int, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and done < self.steps:
            return
        self.last = now
        width = 20
        filled = width * done // self.steps
        text = " ".join(f"{k} {v:.2f}" for k, v in metrics.items())
        sys.stderr.write(f"\repoch {self.epoch} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.steps} {text}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
