"""Posterior families Q(z|x) as heads: the encoder network's output h in, a torch distribution out.

Registered by name (`--posterior`); each head says how many network outputs it needs for a latent
dimension k. Every Q here has `rsample` (the reparameterization trick) and an exact `log_prob`.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal

from .distributions import Part, diagonal_normal
from .flows import IAF, IAFDistribution
from .registry import Registry, Setting

POSTERIORS = Registry("posterior")


class PosteriorHead(Part):
    """h: [..., out_features(k)] → Q with batch shape [...] and event shape [k]."""

    def out_features(self, latent_dim: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, h: Tensor) -> Distribution:  # pragma: no cover - interface
        raise NotImplementedError


class DiagonalGaussian(PosteriorHead):
    """Q(z|x) = N(μ, diag σ²) from h = (μ, log σ²): the mean-field family of the seed (Kingma &
    Welling 2013). The log-variance keeps σ = exp(½·log σ²) positive without a constraint."""

    def out_features(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def forward(self, h: Tensor) -> Distribution:
        loc, log_var = h.chunk(2, dim=-1)
        return diagonal_normal(loc, torch.exp(0.5 * log_var), self.validate_args)


class FullCovarianceGaussian(PosteriorHead):
    """Q(z|x) = N(μ, LLᵀ) with L = diag(σ)(I + g·B) lower triangular: σ = exp(½·log σ²) and the k(k−1)/2
    entries of the strictly lower triangular B from the encoder, g a learned scalar that starts at 0.
    h = (μ [k], log σ² [k], B's below-diagonal entries row by row [k(k−1)/2]).

    Each row of L is in units of its own σ_i, and Q starts as the diagonal Gaussian, its correlations
    growing as the gradient finds them worth it. Free entries in absolute units (L = B + diag σ) start
    near ±0.3 each from a default-initialized layer, so the last of k = 32 rows starts with about 4×
    its variance and the encoder must first learn to silence 496 outputs: 10 epochs of MNIST gave a test
    ELBO 12 nats below the diagonal Q's that way, 1.5 nats below it this way (BENCHMARKS.md)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.latent_dim = latent_dim
        self.gate = nn.Parameter(torch.zeros(()))  # g: Q starts mean-field

    def out_features(self, latent_dim: int) -> int:
        return 2 * latent_dim + latent_dim * (latent_dim - 1) // 2

    def forward(self, h: Tensor) -> Distribution:
        k = self.latent_dim
        loc, log_var, below = h[..., :k], h[..., k : 2 * k], h[..., 2 * k :]
        unit = torch.eye(k, dtype=h.dtype, device=h.device).expand(*h.shape[:-1], k, k).clone()
        unit[..., self.rows, self.cols] = self.gate * below  # I + g·B
        scale_tril = torch.exp(0.5 * log_var).unsqueeze(-1) * unit
        return MultivariateNormal(loc, scale_tril=scale_tril, validate_args=self.validate_args)

    def outputs_for(self, loc: Tensor, scale_tril: Tensor) -> Tensor:
        """h that gives N(loc, scale_tril scale_trilᵀ) with g = 1 (set `gate` to 1 first): the inverse of
        `forward`, for building a known Q (an exact posterior) from the encoder's outputs."""
        sigma = scale_tril.diagonal(dim1=-2, dim2=-1)
        below = (scale_tril / sigma.unsqueeze(-1))[..., self.rows, self.cols]
        return torch.cat([loc, 2 * sigma.log(), below], -1)


class InverseAutoregressiveFlow(PosteriorHead):
    """Q(z|x): N(μ, diag σ²) followed by `flow_steps` IAF steps conditioned on a context c(x) (Kingma
    et al. 2016; `flows`). h = (μ [k], log σ² [k], c [context]); the MADEs' weights are this head's
    parameters, so the optimizer trains them and the state_dict holds them. Default sizes: MADE
    hidden layers of max(16, 4k) units, a context as wide."""

    def __init__(self, latent_dim: int, flow_steps: int = 2, hidden: int | None = None, context: int | None = None):
        super().__init__()
        hidden = hidden or max(16, 4 * latent_dim)
        self.latent_dim, self.context_dim = latent_dim, context or hidden
        self.flow = IAF(latent_dim, flow_steps, self.context_dim, hidden)

    def out_features(self, latent_dim: int) -> int:
        return 2 * latent_dim + self.context_dim

    def forward(self, h: Tensor) -> Distribution:
        k = self.latent_dim
        loc, log_var, context = h[..., :k], h[..., k : 2 * k], h[..., 2 * k :]
        return IAFDistribution(loc, torch.exp(0.5 * log_var), context, self.flow, validate_args=self.validate_args)


@POSTERIORS.register("diagonal")
def diagonal() -> PosteriorHead:
    """N(μ(x), diag σ²(x)): the seed's mean-field Gaussian"""
    return DiagonalGaussian()


@POSTERIORS.register("full")
def full(latent_dim: int) -> PosteriorHead:
    """N(μ(x), L(x)L(x)ᵀ), a full covariance by its Cholesky factor"""
    return FullCovarianceGaussian(latent_dim)


@POSTERIORS.register("iaf")
def iaf(latent_dim: int, flow_steps: Annotated[int, Setting("T, the inverse autoregressive flow steps", above=0,
                                                            at_most=256, flag="--flow-steps")] = 2) -> PosteriorHead:
    """N(μ(x), diag σ²(x)) then --flow-steps inverse autoregressive flow steps (Kingma et al. 2016)"""
    return InverseAutoregressiveFlow(latent_dim, flow_steps)
