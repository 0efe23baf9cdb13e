"""What a training objective is (`Objective`), its registry (`--objective`), and the settings several share.

An objective is a module with one protocol, so the trainer never asks which one it runs:

- its **settings** are the keyword parameters of its `__init__`, each declared with a `Setting`
  (`parts.registry`): the config's `[train.objective]` table, the flags and `--help` come from them;
- `setup(model, dataset_size)` runs once the model exists: an objective with modules of its own
  (FactorVAE's discriminator, which needs k) builds them there;
- `loss(model, x, draw, progress, whole)` → (the scalar to minimize on a batch, {name: batch mean}),
  where the reported `elbo` (or `iwaeK`) is the true bound at the draws the loss used, never a
  β-weighted one (Pyro keeps the reported loss apart from the differentiable one in the same way);
- `param_groups()`: optimizer groups for the objective's own parameters (their Adam options beside lr);
- its `state_dict()` (those modules) is checkpointed with the trainer's state, never with the model.

`draw(q_z, num_samples, estimator)` is the trainer's sampler (rank-aware under torchrun); `progress`
the epochs done (a float, or a 0-d device tensor under CUDA graphs and --compile); `whole(t, dim)`
gathers a tensor of this rank's block into the global batch, for statistics over the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..parts.registry import Registry, Setting
from .estimators import ESTIMATORS, KL_MODES

OBJECTIVES = Registry("objective")
Draw = Callable[[Distribution, int, str], Tensor]
"""draw(q_z, num_samples, estimator) → [S, B, k]: the trainer's sampler, rank-aware under DDP."""
Whole = Callable[..., Tensor]
"""whole(t, dim=0) → t gathered over the ranks along `dim` (the global batch); t in one process."""

# Settings that several objectives read, declared once.
NumSamples = Annotated[int, Setting("Monte Carlo samples of z per example in the training ELBO", above=0,
                                    at_most=10_000)]
KL = Annotated[str, Setting("KL term: auto (closed form where it exists, else Monte Carlo), analytic, mc",
                            choices=KL_MODES)]
Estimator = Annotated[str, Setting("gradient estimator of the ELBO", choices=ESTIMATORS)]
Warmup = Annotated[float, Setting("β ramps linearly from 0 to --beta over this many epochs", at_least=0)]


def one_process(t: Tensor, dim: int = 0) -> Tensor:
    """`Whole` in one process: the batch is already whole."""
    return t


def warmup_ramp(progress: float | Tensor, warmup_epochs: float) -> float | Tensor:
    """The KL weight's linear warm-up: progress / warmup_epochs, at most 1 (1 without a warm-up)."""
    if warmup_epochs <= 0:
        return 1.0
    if isinstance(progress, Tensor):
        return torch.clamp(progress / warmup_epochs, max=1.0)
    return min(1.0, progress / warmup_epochs)


def reported(r: Any) -> dict[str, Tensor]:
    """The batch means of an `ELBO` result's true terms: what every ELBO-based objective reports."""
    return {"elbo": r.elbo.mean(), "reconstruction": r.reconstruction.mean(), "kl": r.kl.mean()}


class Objective(nn.Module):
    """A training objective (see the module docstring). Subclasses set their settings in `__init__`
    and define `loss`; `setup` and `param_groups` have defaults for objectives with nothing of their own."""

    adam: ClassVar[dict[str, Any]] = {}  # Adam options of the objective's own parameter group (lr follows --lr)

    def setup(self, model: nn.Module, dataset_size: int) -> None:
        """Build what needs the model (its latent size) or N, the training split's size."""

    def loss(self, model: Any, x: Tensor, draw: Draw, progress: float | Tensor,
             whole: Whole = one_process) -> tuple[Tensor, dict[str, Tensor]]:  # pragma: no cover - interface
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups for this objective's own parameters: none, or one with `adam`'s options."""
        params = list(self.parameters())
        return [{"params": params, **self.adam}] if params else []

    def has_state(self) -> bool:
        """Whether there is anything of its own to checkpoint."""
        return bool(self.state_dict())
