"""A generic training loop. It knows a loss function and a data tensor (or a tuple of them), not what a VAE is.

The data stay one in-memory tensor (on the training device); each epoch draws a seeded permutation
and slices batches from it, so no per-example Python runs on the hot path. One function,
`train_step`, takes a step; it never waits for the device: a NaN or Inf loss or gradient turns
the optimizer step into a no-op on the device itself, and the loop reads the verdicts (and the metric
sums) only every `sync_every` steps — every step on CPU, where reading is free — and always before
a checkpoint is written. An update that overflows (the weights themselves become NaN or Inf) shows
as a non-finite loss at the next step; the loop then names the update, not the loss, and
`checkpoint.save_checkpoint` refuses to write non-finite weights, so no check runs per step.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import NonFiniteLossError, VaekitError
from ..rng import epoch_permutation
from .distributed import SINGLE, Context, all_reduce_sum, shard_indices
from .progress import Progress
from .stopping import Stopping

log = logging.getLogger(__name__)

# what a non-finite step's refusal advises, in the command line's words (`vaekit.fit` says them as its keywords)
SMALLER_LR = "with --resume and a smaller --lr"
NONFINITE_ADVICE = ("Try a smaller --lr, --grad-clip 100, --kl-warmup-epochs 5, or data near unit scale (--standardize "
                    "for real values; counts keep data_scale on); --skip-nonfinite N skips N such batches")

LossFn = Callable[[Tensor, float], tuple[Tensor, dict[str, Tensor]]]
"""loss_fn(raw_batch, progress) → (scalar loss to minimize, {name: scalar batch mean}); progress in epochs."""

StepFn = Callable[[Tensor, float], tuple[Tensor, dict[str, Tensor]]]
"""step(raw_batch, progress) → (verdict, metrics): `train_step` with its module, optimizer and loss bound."""

OK, BAD_LOSS, BAD_GRADIENT, LARGE_GRADIENT = 0, 1, 2, 3  # a step's verdict
GPU_SYNC_EVERY = 100  # steps between reads of the verdicts on an accelerator


@dataclass
class LoopState:
    """Where training stands; everything needed to continue bit for bit (with the RNG state)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches of the current epoch already taken (a mid-epoch checkpoint resumes here)
    sums: dict[str, Tensor] = field(default_factory=dict)  # the current epoch's metric sums so far
    examples: int = 0  # examples in those sums (a skipped non-finite batch adds none)
    skipped: int = 0  # non-finite batches skipped so far
    oversized: int = 0  # updates skipped because the gradient norm exceeded `Guards.skip` (not an error)
    stopping: Stopping | None = None  # early stopping's standing after the epochs done (None: rebuild from the history)
    pending: _Pending | None = field(default=None, repr=False, compare=False)  # steps not yet read back
    origin: str = field(default="train_state.pt", repr=False, compare=False)  # the file `sums` were restored from
    trained_with: dict | None = field(default=None, repr=False, compare=False)  # its config's train section, as saved


def make_adam(params, lr: float, eps: float = 1e-8, capturable: bool = False,
              weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (AdamW, Loshchilov & Hutter's decoupled weight decay, where `weight_decay` > 0), fused into one kernel
    per step where this torch build supports it (≈10% of a small step).

    The fused kernel also skips a step on the device when told a gradient is non-finite, which is
    what lets `train_step` run without a host synchronization. `capturable=True` keeps its step
    counters and learning rate on the device, as a CUDA graph capture of the whole step needs
    (change the rate with `set_lr`, which writes into that tensor). `params` are parameters, or
    parameter groups (dicts, as torch's optimizers take them: a second player's parameters with Adam
    settings of their own); Adam's update is per parameter, so a group is a separate Adam.
    """
    params = list(params)
    if capturable:
        first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
        lr = torch.tensor(lr, device=first.device)
    adam = functools.partial(torch.optim.AdamW, weight_decay=weight_decay) if weight_decay else torch.optim.Adam
    try:
        return adam(params, lr=lr, eps=eps, fused=True, capturable=capturable)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without the fused kernel
        return adam(params, lr=lr, eps=eps, capturable=capturable)


def fused(optimizer: torch.optim.Optimizer, capturable: bool = False) -> bool:
    """Whether every group runs fused Adam (which can skip a step on the device), and, with
    `capturable`, keeps its state on the device as a CUDA graph capture needs."""
    return all(g.get("fused") and (g.get("capturable") or not capturable) for g in optimizer.param_groups)


def lr_to_device(optimizer: torch.optim.Optimizer) -> None:
    """Put tensor learning rates back beside their parameters (`load_state_dict` leaves them where
    the checkpoint was loaded, the CPU, where a captured step would read them only once)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"] = group["lr"].to(group["params"][0].device)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate; in place where it is a tensor, so a captured step sees it."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


@dataclass(frozen=True)
class Guards:
    """What keeps a deep model's training stable, for any loss (VDVAE, Child 2021, §4; NVAE, Vahdat & Kautz 2020):
    `clip`: rescale the gradient to norm at most this (0: never); `skip`: take no update whose gradient norm
    (before clipping) exceeds this (0: never), counted in `LoopState.oversized`."""

    clip: float = 0.0
    skip: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.clip or self.skip)


NO_GUARDS = Guards()


def train_step(module: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, batch: Tensor,
               progress: float | Tensor, guards: Guards = NO_GUARDS) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimizer step on `batch`, with no host synchronization.

    Returns (verdict, metrics): verdict is a 0-d int tensor, OK, BAD_LOSS, BAD_GRADIENT or LARGE_GRADIENT;
    for a bad one the parameters and the optimizer state are left exactly as they were. With `guards`
    the metrics gain `grad_norm`, the global norm before clipping. Everything here is device work, so the
    whole step can be captured in a CUDA graph.
    """
    optimizer.zero_grad(set_to_none=True)
    loss, metrics = loss_fn(batch, progress)
    # Backward even for a non-finite loss: under DDP every rank must join the gradient all-reduce,
    # and the averaged gradients, identical on all ranks, then carry the verdict to all of them.
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if guards.active and grads:
        norm = global_norm(grads)
        grads_ok = norm.isfinite()
        if guards.clip:  # g · min(1, clip/‖g‖), as torch.nn.utils.clip_grad_norm_ but without a host sync
            torch._foreach_mul_(grads, torch.clamp(guards.clip / (norm + 1e-6), max=1.0))
        large = norm > guards.skip if guards.skip else torch.zeros((), dtype=torch.bool, device=norm.device)
        verdict = torch.where(loss.detach().isfinite(), torch.where(grads_ok, torch.where(large, LARGE_GRADIENT, OK),
                                                                    BAD_GRADIENT), BAD_LOSS)
        metrics = {**metrics, "grad_norm": torch.where(grads_ok, norm, 0.0)}
    else:
        grads_ok = all_finite(grads) if grads else loss.new_ones((), dtype=torch.bool)
        verdict = torch.where(loss.detach().isfinite(), torch.where(grads_ok, OK, BAD_GRADIENT), BAD_LOSS)
    if fused(optimizer):
        optimizer.found_inf = (verdict != OK).float()  # the fused kernel leaves everything as it was
        optimizer.step()
    elif int(verdict) == OK:  # an optimizer without a device-side skip: ask (a synchronization)
        optimizer.step()
    return verdict, {name: value.detach() for name, value in metrics.items()}  # and let the graph go


def global_norm(tensors: list[Tensor]) -> Tensor:
    """‖(t₁, t₂, …)‖₂ over every element of every tensor, a 0-d tensor on the device (no host sync)."""
    norm = getattr(torch, "_foreach_norm", None)
    norms = norm(tensors) if norm is not None else [t.norm() for t in tensors]
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def all_finite(tensors: list[Tensor]) -> Tensor:
    """A 0-d bool tensor on the device: every element of every tensor is finite (no host sync).

    One fused norm per tensor list (torch's private `_foreach_norm`, used here and nowhere else; a
    norm is non-finite exactly when some element is), with a plain fallback where it is missing."""
    norm = getattr(torch, "_foreach_norm", None)
    norms = norm(tensors) if norm is not None else [t.norm() for t in tensors]
    return torch.stack(list(norms)).isfinite().all()


def train_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    data: Tensor | tuple[Tensor, ...],
    batch_size: int,
    seed: int,
    state: LoopState,
    show_progress: bool = False,
    max_steps: int | None = None,
    ctx: Context = SINGLE,
    on_step: Callable[[LoopState], None] | None = None,
    skip_nonfinite: int = 0,
    sync_every: int | None = None,
    step_fn: StepFn | None = None,
    guards: Guards = NO_GUARDS,
    after_step: Callable[[Tensor], None] | None = None,
) -> dict[str, float]:
    """One pass over `data` in the order `epoch_permutation(…, state.epoch)`; returns example-weighted means.
    `data` is a tensor of rows, or a tuple of them (examples and their labels, say) whose batches are
    gathered with the same indices and passed on as a tuple.

    Starts at batch `state.batch` (so a mid-epoch checkpoint continues exactly) and calls
    `on_step(state)` after every step (call `settle(state)` there before reading metrics or saving).
    `max_steps` ends the pass early (a fractional epoch). A non-finite loss or gradient changes
    nothing; when the loop reads it back it raises `NonFiniteLossError`, unless fewer than
    `skip_nonfinite` batches have been skipped so far, in which case the batch just counts as skipped.
    `sync_every` (default: 1 on CPU, GPU_SYNC_EVERY elsewhere) is how often it reads back; on CPU the
    error therefore comes before any later batch is stepped. `step_fn(batch, progress)` replaces
    `train_step` (a CUDA-graphed step, say); `guards` clip and skip by the gradient norm (`Guards`);
    `after_step(verdict)` runs after each step on the device (an EMA of the weights that counts good steps only). Under torch.distributed each rank takes
    its block of each global batch (`distributed.shard_indices`) with its own `batch_size`; the returned means are
    over all ranks' examples.
    """
    module.train()
    columns = data if isinstance(data, tuple) else (data,)  # x, or (x, labels, …): rows gathered together
    rows = columns[0]
    perm = shard_indices(epoch_permutation(rows.shape[0], seed, state.epoch), ctx, batch_size).to(rows.device)
    steps = (perm.shape[0] + batch_size - 1) // batch_size
    if max_steps is not None:
        steps = min(steps, max_steps)
        perm = perm[: steps * batch_size]
    if step_fn is None:
        def step_fn(batch, progress):
            return train_step(module, optimizer, loss_fn, batch, progress, guards)
    sync_every = sync_every or (1 if rows.device.type == "cpu" else GPU_SYNC_EVERY)
    state.pending = _Pending(state, steps, skip_nonfinite, rows.device, list(module.parameters()))
    first, oversized = state.batch, state.oversized
    bar = Progress(perm.shape[0], f"epoch {state.epoch + 1}", enabled=show_progress)
    bar.update(min(state.batch * batch_size, perm.shape[0]))  # a resumed epoch starts part way
    for i in range(state.batch, steps):
        index = perm[i * batch_size : (i + 1) * batch_size]
        batch = data.index_select(0, index) if columns[0] is data else tuple(c.index_select(0, index) for c in columns)
        try:
            verdict, metrics = step_fn(batch, state.epoch + i / steps)
        except VaekitError:  # a refusal of ours (a family an objective cannot take): as it was said
            raise
        except ValueError as e:  # torch.distributions refusing NaN parameters, where validation is on
            raise NonFiniteLossError(f"non-finite values at epoch {state.epoch + 1}, step {i + 1}: "
                                     f"{str(e).splitlines()[0]}") from None
        if after_step is not None:
            after_step(verdict)
        state.pending.add(state, verdict, metrics, index.shape[0])
        if (i + 1) % sync_every == 0 or i + 1 == steps:
            settle(state)
            shown = {k: float(v) / max(state.examples, 1) for k, v in state.sums.items()} if show_progress else {}
            bar.update(min((i + 1) * batch_size, perm.shape[0]) - bar.done, **shown)
        if on_step is not None:
            on_step(state)
    settle(state)
    bar.close()
    names = list(state.sums)
    totals = all_reduce_sum(torch.stack([torch.as_tensor(state.sums[k], dtype=torch.float64, device=rows.device)
                                         for k in names] + [
        torch.tensor(float(state.examples), dtype=torch.float64, device=rows.device)]), ctx).tolist()
    state.epoch, state.batch, state.sums, state.examples, state.pending = state.epoch + 1, 0, {}, 0, None
    if not totals[-1]:  # every batch was skipped: no means to give
        if steps > first and state.oversized - oversized == steps - first:
            raise VaekitError(f"every update of epoch {state.epoch} was skipped: each gradient norm was above "
                              "--grad-skip, so the model cannot change; raise it above the norms a healthy run logs "
                              "(train/grad_norm), or clip instead with --grad-clip")
        return {}
    return {name: totals[i] / totals[-1] for i, name in enumerate(names)}


def settle(state: LoopState) -> None:
    """Read back the steps taken since the last call: their verdicts and metric sums (one transfer).

    Afterwards `state.step`, `state.examples` and `state.sums` are exact, so a checkpoint may be
    written. Raises `NonFiniteLossError` for a non-finite batch beyond the skip allowance.
    """
    if state.pending is not None:
        state.pending.settle(state)


class _Pending:
    """Steps taken but not yet read back. The loop counts each step as good when it takes it; the
    verdicts, kept on the device, correct the counts when read. Metric sums stay on the device."""

    def __init__(self, state: LoopState, steps: int, skip_limit: int, device: torch.device,
                 params: list[Tensor] | None = None):
        self.params = params or []  # looked at only when a step went bad: was it the weights themselves?
        self.verdicts = torch.zeros(steps, dtype=torch.int64, device=device)
        self.names: list[str] | None = list(state.sums) or None  # else the first step's metric names
        self.restored = bool(state.sums)  # the names came from a resumed train_state.pt
        self.origin = state.origin
        self.acc = torch.stack([torch.as_tensor(state.sums[k], dtype=torch.float32, device=device)
                                for k in self.names]) if self.names else None
        self.skip_limit, self.sizes = skip_limit, {}
        self.first = state.batch  # the first batch not yet read back
        self.first_step = state.step  # the global step count when it was taken

    def add(self, state: LoopState, verdict: Tensor, metrics: dict[str, Tensor], size: int) -> None:
        i = state.batch
        self.verdicts[i] = verdict
        if self.names is None:
            self.names = list(metrics)
            self.acc = torch.zeros(len(self.names), device=verdict.device)
        elif set(metrics) != set(self.names):
            before = ", ".join(sorted(f"{k!r:.40}" for k in self.names)[:6])
            if self.restored and i == self.first:  # the state's sums, not the loss, name other metrics
                raise VaekitError(f"{self.origin}: its running sums name {before}, but the objective returns "
                                  f"{', '.join(sorted(metrics))}; the file is damaged or belongs to another run; "
                                  "restore it, or delete it and model.safetensors and pass --resume to start the run "
                                  "again from step 0")
            raise VaekitError(f"the loss returned metrics {sorted(metrics)} at epoch {state.epoch + 1}, step {i + 1}, "
                              f"but [{before}] before; it must return the same names every step")
        if self.names:
            values = torch.stack([metrics[k].detach().float() for k in self.names]) * size
            self.acc += torch.where(verdict == OK, values, 0.0)  # a NaN batch adds nothing, not even NaN
        self.sizes[i] = size
        state.batch, state.step, state.examples = i + 1, state.step + 1, state.examples + size

    def settle(self, state: LoopState) -> None:
        if self.first == state.batch:
            return
        if self.names:
            state.sums = dict(zip(self.names, self.acc.clone().unbind()))  # a snapshot: later steps add to acc
        verdicts = self.verdicts[self.first : state.batch].tolist()  # the one synchronization
        bad = 0  # non-finite batches earlier in this window: they took no step
        for j, verdict in enumerate(verdicts):
            if verdict == OK:
                continue
            i, step = self.first + j, self.first_step + j - bad + 1
            if verdict == LARGE_GRADIENT:  # a guard, not a fault: the update was not taken, nothing is wrong
                bad += 1
                state.oversized += 1
                state.step -= 1
                state.examples -= self.sizes[i]
                log.debug("gradient norm above the skip threshold at epoch %d, step %d: update skipped", state.epoch + 1, i + 1)
                continue
            if self.params and not bool(all_finite([p.detach() for p in self.params])):
                raise NonFiniteLossError(
                    f"the weights are NaN or Inf at epoch {state.epoch + 1}, step {i + 1} (global step {step}): an "
                    "update before it overflowed (is the learning rate too large?); nothing was saved from it: "
                    f"continue from the last checkpoint {SMALLER_LR}")
            bad += 1
            problem = "loss is NaN or Inf" if verdict == BAD_LOSS else "a gradient is NaN or Inf"
            where = f"epoch {state.epoch + 1}, step {i + 1} (global step {step})"
            if state.skipped >= self.skip_limit:
                raise NonFiniteLossError(f"{problem} at {where}; nothing was stepped with it. {NONFINITE_ADVICE}")
            state.skipped += 1
            state.step -= 1
            state.examples -= self.sizes[i]
            log.warning("%s at %s: batch skipped (%d of at most %d)", problem, where, state.skipped, self.skip_limit)
        self.first, self.first_step, self.sizes = state.batch, state.step, {}
