"""The objectives' registry (`--objective`) and the sampler every objective is handed."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torch.distributions import Distribution

from ..parts.registry import Registry

OBJECTIVES = Registry("objective")
Draw = Callable[[Distribution, int, str], Tensor]
"""draw(q_z, num_samples, estimator) → [S, B, k]: the trainer's sampler, rank-aware under DDP."""
