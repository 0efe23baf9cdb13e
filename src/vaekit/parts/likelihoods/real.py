"""Real-valued data: Gaussians with a known σ (the seed's model), one learned σ, or a learned σ per dimension."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..distributions import diagonal_normal
from ..registry import Setting
from .base import LIKELIHOODS, Likelihood


class GaussianObservation(Likelihood):
    """x|z ~ N(g(z), σ²I) with a known σ: the seed's model, log N keeps −d/2·log(2πσ²)."""

    def __init__(self, sigma: float):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)  # a config value, not a weight: exact in every dtype

    def forward(self, h: Tensor) -> Distribution:
        return diagonal_normal(h, torch.full_like(h, self.sigma), self.validate_args)


class LearnedGaussianObservation(Likelihood):
    """x|z ~ N(g(z), diag(σ²)) with log σ learned: one scalar, or one value per data dimension."""

    def __init__(self, data_dim: int, per_dimension: bool = False, init_sigma: float = 1.0):
        super().__init__()
        shape = (data_dim,) if per_dimension else ()
        self.log_sigma = nn.Parameter(torch.full(shape, math.log(init_sigma)))

    def forward(self, h: Tensor) -> Distribution:
        return diagonal_normal(h, self.log_sigma.exp().to(h.dtype).expand_as(h), self.validate_args)

    def learned(self) -> dict[str, Tensor]:
        return {"σ": self.log_sigma.detach().exp()}


Sigma = Annotated[float, Setting("σ of the known-σ Gaussian likelihood (the initial σ where it is learned)",
                                 at_least=1e-6, flag="--sigma")]  # below, 1/σ² of a float32 residual overflows


@LIKELIHOODS.register("gaussian")
def gaussian(sigma: Sigma = 0.1) -> Likelihood:
    """N(g(z), σ²I) with a known σ (--sigma): the seed's model for real data"""
    return GaussianObservation(sigma)


@LIKELIHOODS.register("gaussian-learned")
def gaussian_learned(data_dim: int, sigma: Sigma = 0.1) -> Likelihood:
    """N(g(z), σ²I) with one learned σ (initial --sigma)"""
    return LearnedGaussianObservation(data_dim, per_dimension=False, init_sigma=sigma)


@LIKELIHOODS.register("gaussian-learned-per-dim")
def gaussian_learned_per_dim(data_dim: int, sigma: Sigma = 0.1) -> Likelihood:
    """N(g(z), diag σ²) with a learned σ per data dimension (initial --sigma)"""
    return LearnedGaussianObservation(data_dim, per_dimension=True, init_sigma=sigma)
