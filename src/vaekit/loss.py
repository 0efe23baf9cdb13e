"""The trained loss: what one training step minimizes, apart from the loop that steps it.

It owns everything between a raw batch and a scalar: scaling and binarization noise, the β warm-up,
bf16 autocast and torch.compile. The objectives it calls (`objectives.py`) are pure functions that
return the true ELBO or IWAE bound per example; this module only chooses and reduces them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from .config import TrainConfig
from .data import Dataset
from .distributed import SINGLE, Context
from .likelihoods import unchecked
from .loop import LossFn
from .model import VAE
from .objectives import elbo, iwae

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


