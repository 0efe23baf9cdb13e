"""Distribution helpers every part uses: the `Part` base, diagonal Gaussians and their closed-form KL.

A part (likelihood, posterior or prior head) turns tensors into a torch distribution; these are the
pieces they share. All normalizing constants are kept, so log-densities are true log-densities in nats.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MixtureSameFamily, MultivariateNormal, Normal

from ..errors import VaekitError

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


MAX_TEMPERATURE = 1000.0  # T multiplies p(z)'s scales: 1 is p(z) itself; 1e300 made z, then x, overflow float32


def tempered(d: Distribution, temperature: float) -> Distribution:
    """d with every Gaussian scale times `temperature`, for drawing at a temperature (NVAE, VDVAE sample their
    priors at T = 0.6–0.9: fewer, cleaner samples). A diagonal Gaussian, a mixture of them (MoG, VampPrior),
    or any distribution with a `tempered(T)` method (a hierarchical or top-down prior)."""
    if hasattr(d, "tempered"):
        return d.tempered(temperature)
    if is_diagonal_normal(d):
        return diagonal_normal(d.base_dist.loc, d.base_dist.scale * temperature, validate_args=False)
    if isinstance(d, MixtureSameFamily) and is_diagonal_normal(d.component_distribution):
        return MixtureSameFamily(d.mixture_distribution, tempered(d.component_distribution, temperature),
                                 validate_args=False)
    raise VaekitError(f"sampling at a temperature needs a Gaussian p(z) (or a mixture of them); this prior is a "
                      f"{type(d).__name__}: sample at temperature 1")


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


EXACT_SOFTPLUS = 40.0  # above it e^−x < ulp(x)/2 in float64 (and far below float32's): x itself is exact


def softplus(x: Tensor) -> Tensor:
    """log(1 + eˣ), exact to float64 rounding: torch's default returns x itself above 20, where log1p(e^−x) is
    still 2·10⁻⁹ (invisible in float32, a float64 error); one fused pass, as fast."""
    return torch.nn.functional.softplus(x, threshold=EXACT_SOFTPLUS)


def mean_of(d: Distribution, samples: int = 256) -> Tensor:
    """E[d]: the closed form where torch has one, else a Monte Carlo average of `samples` draws."""
    try:
        return d.mean
    except NotImplementedError:
        return d.sample((samples,)).mean(0)
