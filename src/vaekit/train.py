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
from dataclasses import dataclass, field

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
    """Where training stands; everything needed to continue bit for bit (with the RNG state)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches of the current epoch already taken (a mid-epoch checkpoint resumes here)
    sums: dict[str, Tensor] = field(default_factory=dict)  # the current epoch's metric sums so far
    examples: int = 0  # examples in those sums (a skipped non-finite batch adds none)
    skipped: int = 0  # non-finite batches skipped so far


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
    on_step: Callable[[LoopState], None] | None = None,
    skip_nonfinite: int = 0,
) -> dict[str, float]:
    """One pass over `data` in the order `epoch_permutation(…, state.epoch)`; returns example-weighted means.

    Starts at batch `state.batch` (so a mid-epoch checkpoint continues exactly) and calls
    `on_step(state)` after every step. `max_steps` ends the pass early (a fractional epoch). A
    non-finite loss or gradient raises `NonFiniteLossError` before anything is stepped, unless
    fewer than `skip_nonfinite` batches have been skipped so far, in which case the batch is skipped.
    Under torch.distributed each rank takes `perm[rank::world]` (trimmed to equal lengths) with its
    own `batch_size`; the returned means are over all ranks' examples.
    """
    module.train()
    perm = shard_indices(epoch_permutation(data.shape[0], seed, state.epoch), ctx).to(data.device)
    steps = (perm.shape[0] + batch_size - 1) // batch_size
    if max_steps is not None:
        steps = min(steps, max_steps)
        perm = perm[: steps * batch_size]
    bar = _Progress(steps, state.epoch + 1) if show_progress else None
    for i in range(state.batch, steps):
        batch = data.index_select(0, perm[i * batch_size : (i + 1) * batch_size])
        metrics = _step(module, optimizer, loss_fn, batch, state, state.epoch + i / steps,
                        f"epoch {state.epoch + 1}, step {i + 1} (global step {state.step + 1})", skip_nonfinite)
        state.batch = i + 1
        if metrics:
            state.examples += batch.shape[0]
        for name, value in metrics.items():
            state.sums[name] = state.sums.get(name, 0.0) + value.detach() * batch.shape[0]
        if bar is not None:
            bar.update(i + 1, {k: float(v) / state.examples for k, v in state.sums.items()})
        if on_step is not None:
            on_step(state)
    if bar is not None:
        bar.close()
    names = list(state.sums)
    totals = all_reduce_sum(torch.stack([torch.as_tensor(state.sums[k], dtype=torch.float64) for k in names] + [
        torch.tensor(float(state.examples), dtype=torch.float64, device=data.device)]), ctx).tolist()
    state.epoch, state.batch, state.sums, state.examples = state.epoch + 1, 0, {}, 0
    return {name: totals[i] / totals[-1] for i, name in enumerate(names)}


def _step(module, optimizer, loss_fn, batch, state: LoopState, progress: float, where: str, skip_limit: int):
    """One optimizer step; returns the batch's metrics ({} for a skipped non-finite batch)."""
    optimizer.zero_grad(set_to_none=True)
    try:
        loss, metrics = loss_fn(batch, progress)
    except ValueError as e:  # torch.distributions refusing NaN parameters
        raise NonFiniteLossError(f"non-finite values at {where}: {str(e).splitlines()[0]}") from None
    # Backward even for a non-finite loss: under DDP every rank must join the gradient all-reduce,
    # and the averaged gradients, identical on all ranks, then carry the verdict to all of them.
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    problem = None
    if not torch.isfinite(loss):
        problem = f"loss is {float(loss.detach())}"
    elif grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
        problem = "a gradient is NaN or Inf"
    if problem is None:
        optimizer.step()
        state.step += 1
        return metrics
    if state.skipped < skip_limit:
        state.skipped += 1
        optimizer.zero_grad(set_to_none=True)
        log.warning("%s at %s: batch skipped (%d of at most %d)", problem, where, state.skipped, skip_limit)
        return {}
    raise NonFiniteLossError(f"{problem} at {where}; nothing was stepped with it")


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
