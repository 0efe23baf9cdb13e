"""Observation models p(x|z) (registered by name) and the diagonal-Gaussian algebra the VAE needs.

Every observation model turns the decoder output g(z; θ) into a torch distribution over x whose
`log_prob` returns one value per example (the pixel dimension is reinterpreted with `Independent`).
All normalizing constants are kept, so log-densities are true log-densities in nats.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, MultivariateNormal, Normal

from .registry import Registry

LOG_2PI = math.log(2.0 * math.pi)


class Part(nn.Module):
    """A module that turns tensors into a torch distribution (a likelihood, posterior or prior head).

    `validate_args` is handed to every distribution it builds: None keeps torch's default (argument
    checks on), False skips them where the caller has checked the data already (the trainer does,
    per step: the checks cost ≈15% of a small step). Set it for a whole model with `validating`.
    """

    validate_args: bool | None = None


@contextlib.contextmanager
def validating(module: nn.Module, flag: bool | None):
    """Set `validate_args` of every `Part` inside `module` for the duration (restored afterwards)."""
    parts = [m for m in module.modules() if isinstance(m, Part)]
    previous = [m.validate_args for m in parts]
    for m in parts:
        m.validate_args = flag
    try:
        yield
    finally:
        for m, v in zip(parts, previous):
            m.validate_args = v


def diagonal_normal(loc: Tensor, scale: Tensor, validate_args: bool | None = None) -> Independent:
    """N(loc, diag(scale)²) over the last dimension: `Independent(Normal(loc, scale), 1)`."""
    return Independent(Normal(loc, scale, validate_args=validate_args), 1, validate_args=validate_args)


def kl_diagonal_normal(q: Independent, p: Independent, per_dimension: bool = False) -> Tensor:
    """KL(q ‖ p) for two diagonal Gaussians in closed form, summed over the last dimension.

    KL = Σ_j [ log(σ_p/σ_q) + (σ_q² + (μ_q − μ_p)²) / (2σ_p²) − 1/2 ]  (Kingma & Welling 2013, App. B,
    generalized to any diagonal prior). `per_dimension=True` returns the terms of the sum, [..., k].
    """
    q_loc, q_scale = q.base_dist.loc, q.base_dist.scale
    p_loc, p_scale = p.base_dist.loc, p.base_dist.scale
    var_ratio = (q_scale / p_scale).pow(2)
    mean_term = ((q_loc - p_loc) / p_scale).pow(2)
    terms = 0.5 * (var_ratio + mean_term - 1.0) - torch.log(q_scale / p_scale)
    return terms if per_dimension else terms.sum(-1)


def is_diagonal_normal(d: Distribution) -> bool:
    return (
        isinstance(d, Independent)
        and isinstance(d.base_dist, Normal)
        and d.reinterpreted_batch_ndims == 1
    )


def detached(d: Distribution) -> Distribution:
    """d with its parameters cut from the graph: the same density, no gradient to them (what DReG
    evaluates log Q with). A diagonal or full-covariance Gaussian, or any distribution with a
    `detach()` method (a flow, a hierarchical Q)."""
    if hasattr(d, "detach"):
        return d.detach()
    if is_diagonal_normal(d):
        return diagonal_normal(d.base_dist.loc.detach(), d.base_dist.scale.detach(), validate_args=False)
    if isinstance(d, MultivariateNormal):
        return MultivariateNormal(d.loc.detach(), scale_tril=d.scale_tril.detach(), validate_args=False)
    raise ValueError(f"DReG needs a Q whose parameters can be detached (a diagonal or full-covariance Gaussian, "
                     f"or a distribution with a detach() method); got {type(d).__name__}")


class BernoulliLogits(Independent):
    """Independent Bernoulli(logits) over the last dimension, with a leaner `log_prob`.

    log p(x|l) = Σ_d [x_d·l_d − softplus(l_d)], exact for x ∈ {0, 1}: two elementwise passes over the
    [..., D] logits instead of binary_cross_entropy_with_logits' six (the importance-sampled NLL spends
    most of its non-matmul time here). softplus returns l itself above 20, where log1p(e^−l) < 2·10⁻⁹.
    """

    def __init__(self, logits: Tensor, validate_args: bool | None = None):
        super().__init__(Bernoulli(logits=logits, validate_args=validate_args), 1, validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self.base_dist._validate_sample(value)
        logits = self.base_dist.logits
        return (value * logits).sum(-1) - F.softplus(logits).sum(-1)


SUPPORTS = ("binary", "unit", "real", "count", "discrete256")  # what data a likelihood takes; the data layer
# checks it (vaekit.data.dataset); "discrete256": the 8-bit grey levels k/255, k = 0…255


class Likelihood(Part):
    """Maps the decoder output h to p(x|z), event shape [D]. `out_features(D)`: how many outputs it
    needs; `support`: one of SUPPORTS, which decides binarization and the data checks."""

    support = "real"

    def out_features(self, data_dim: int) -> int:
        return data_dim

    def forward(self, h: Tensor) -> Distribution:  # pragma: no cover - interface
        raise NotImplementedError


LIKELIHOODS = Registry("likelihood")


class BernoulliObservation(Likelihood):
    """x|z ~ Bernoulli(sigmoid(h)) per pixel, parameterized by logits (never a sigmoid then BCE)."""

    support = "binary"

    def forward(self, h: Tensor) -> Distribution:
        return BernoulliLogits(h, validate_args=self.validate_args)


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


@LIKELIHOODS.register("bernoulli")
def bernoulli() -> Likelihood:
    """Bernoulli(logits) per value: binary data, or grey levels binarized (--binarize)"""
    return BernoulliObservation()


@LIKELIHOODS.register("gaussian")
def gaussian(sigma: float) -> Likelihood:
    """N(g(z), σ²I) with a known σ (--sigma): the seed's model for real data"""
    return GaussianObservation(sigma)


@LIKELIHOODS.register("gaussian-learned")
def gaussian_learned(data_dim: int, sigma: float) -> Likelihood:
    """N(g(z), σ²I) with one learned σ (initial --sigma)"""
    return LearnedGaussianObservation(data_dim, per_dimension=False, init_sigma=sigma)


@LIKELIHOODS.register("gaussian-learned-per-dim")
def gaussian_learned_per_dim(data_dim: int, sigma: float) -> Likelihood:
    """N(g(z), diag σ²) with a learned σ per data dimension (initial --sigma)"""
    return LearnedGaussianObservation(data_dim, per_dimension=True, init_sigma=sigma)


def likelihood_support(name: str) -> str:
    """The support of the likelihood registered as `name` (what data it takes: SUPPORTS)."""
    support = getattr(LIKELIHOODS.build(name, data_dim=1, sigma=1.0), "support", "real")
    if support not in SUPPORTS:
        raise ValueError(f"likelihood {name!r} declares support {support!r}; use one of {', '.join(SUPPORTS)}")
    return support


# The likelihoods for data as recorded (continuous Bernoulli, 8-bit, counts) register themselves here,
# so that they are there whenever the registry is.
from . import likelihoods_real  # noqa: F401
