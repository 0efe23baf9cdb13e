"""Variational objectives as pure functions returning per-example values in nats.

Seed §"Variational Inference and the ELBO": ELBO(x; Q, θ) = E_{z~Q}[log p(x, z; θ) − log Q(z)]
                                                    = E_Q[log p(x|z; θ)] − KL(Q ‖ p(z)).
Seed §"Gradient Ascent and the Reparameterization Trick": z = μ + σ ⊙ ξ, ξ ~ N(0, I) (`rsample`), so
gradients w.r.t. θ, φ, ψ flow through the sample; the score-function (REINFORCE, Williams 1992)
estimator is kept beside it for comparison.

What is *reported* (`elbo`, `reconstruction`, `kl`) is always the true ELBO with every constant;
what is *optimized* (`surrogate`) may be β-weighted (Higgins et al. 2017) or a score-function
surrogate. Callers reduce over the batch (the convention is a mean over examples).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal, kl_divergence

from ..errors import VaekitError
from ..parts.distributions import detached, is_diagonal_normal, kl_diagonal_normal

ESTIMATORS = ("reparameterization", "score-function")
KL_MODES = ("auto", "analytic", "mc")


class ELBO(NamedTuple):
    """Per-example terms, each [B]: `elbo = reconstruction − kl`; maximize `surrogate`."""

    elbo: Tensor
    reconstruction: Tensor
    kl: Tensor
    surrogate: Tensor


def check_data(model, x: Tensor) -> None:
    """x must be [B, D] floats with D the model's data dimension: say so before torch does, obscurely."""
    d = getattr(model, "data_dim", None)
    if x.ndim != 2 or (d is not None and x.shape[-1] != d) or not x.is_floating_point():
        raise VaekitError(f"x has shape {tuple(x.shape)} and dtype {x.dtype}; the model expects floats of shape [B, {d}]")


def draw(q_z: Distribution, num_samples: int, estimator: str = "reparameterization") -> Tensor:
    """[S, B, k] samples of Q: reparameterized (gradients flow) or plain (for the score function)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}")
    shape = torch.Size((num_samples,))
    return q_z.rsample(shape) if estimator == "reparameterization" else q_z.sample(shape)


def surrogate(values: Tensor, log_q: Tensor | None, estimator: str) -> Tensor:
    """A per-sample quantity whose gradient is an unbiased estimate of ∇ E_Q[f].

    values: f(z) at the samples (differentiable where f has parameters); log_q: log Q(z).
    Reparameterization: f(z(ξ)) itself. Score function: f(z)·∇log Q(z) + ∇f(z), via the surrogate
    sg[f]·log Q + f (sg = stop-gradient), whose value is not f but whose gradient is.
    """
    if estimator == "reparameterization":
        return values
    return values.detach() * log_q + values


def expectation(
    q_z: Distribution, f: Callable[[Tensor], Tensor], num_samples: int, estimator: str = "reparameterization"
) -> tuple[Tensor, Tensor]:
    """Monte Carlo E_Q[f(z)] and its gradient surrogate, both [B] (means over `num_samples`)."""
    z = draw(q_z, num_samples, estimator)
    values = f(z)
    log_q = q_z.log_prob(z) if estimator == "score-function" else None
    return values.mean(0), surrogate(values, log_q, estimator).mean(0)


def analytic_kl(q_z: Distribution, p_z: Distribution) -> Tensor | None:
    """KL(Q ‖ p) in closed form where one exists, else None."""
    if is_diagonal_normal(q_z) and is_diagonal_normal(p_z):
        return kl_diagonal_normal(q_z, p_z)
    if isinstance(q_z, MultivariateNormal) and is_diagonal_normal(p_z):
        # A full-covariance Q (the exact posterior of a linear-Gaussian model) against a diagonal prior.
        p_loc, p_scale = p_z.base_dist.loc, p_z.base_dist.scale
        return kl_divergence(q_z, MultivariateNormal(p_loc, scale_tril=torch.diag_embed(p_scale)))
    try:
        return kl_divergence(q_z, p_z)
    except NotImplementedError:
        return None


def elbo(
    model,
    x: Tensor,
    q_z: Distribution | None = None,
    num_samples: int = 1,
    kl: str = "auto",
    beta: float = 1.0,
    estimator: str = "reparameterization",
    z: Tensor | None = None,
) -> ELBO:
    """Monte Carlo estimate of ELBO(x; Q, θ) with `num_samples` draws of z per example.

    model: has `prior()` and `p_x_given_z(z)` (a `VAE` or a `GenerativeModel`); x: [B, D].
    q_z: any Q with `rsample`/`log_prob` and batch shape [B]; default `model.posterior(x)`.
    kl: "auto" uses the closed form when one exists (Kingma & Welling 2013, App. B) and Monte Carlo
    E_Q[log Q(z) − log p(z)] otherwise; "analytic" requires it; "mc" forces Monte Carlo.
    beta: weight of the KL in `surrogate` only (β-VAE); `elbo` is always the β = 1 value.
    z: optional draws of Q, [S, B, k], used instead of drawing here (common random numbers; the
    distributed trainer draws each example's noise as one process would); detached for the score function.
    """
    check_data(model, x)
    if q_z is None:
        q_z = model.posterior(x)
    p_z = model.prior()
    kl_closed = _closed_kl(q_z, p_z, kl)

    if z is None:
        z = draw(q_z, num_samples, estimator)  # [S, B, k]
    elif estimator == "score-function":
        z = z.detach()
    log_px = model.p_x_given_z(z).log_prob(x)  # [S, B]
    needs_log_q = kl_closed is None or estimator == "score-function"
    log_q = q_z.log_prob(z) if needs_log_q else None
    if kl_closed is None:
        kl_samples = log_q - p_z.log_prob(z)  # [S, B]
        kl_value = kl_samples.mean(0)
        objective = surrogate(log_px - beta * kl_samples, log_q, estimator).mean(0)
    else:
        kl_value = kl_closed
        objective = surrogate(log_px, log_q, estimator).mean(0) - beta * kl_closed
    reconstruction = log_px.mean(0)
    return ELBO(reconstruction - kl_value, reconstruction, kl_value, objective)


def group_kl(q_z: Distribution, p_z: Distribution, z: Tensor) -> Tensor:
    """The KL term of each group of latents at the draws z [S, B, k]: [G, S, B]. A group is a stochastic
    layer where Q and p(z) have them (`layer_log_probs`: log Q(z_l|·) − log p(z_l|·), Monte Carlo), else z
    as a whole (the closed form where one exists, broadcast over S). Their sum over G is the ELBO's KL."""
    if hasattr(q_z, "layer_log_probs") and hasattr(p_z, "layer_log_probs"):
        return torch.stack([q - p for q, p in zip(q_z.layer_log_probs(z), p_z.layer_log_probs(z), strict=True)])
    closed = analytic_kl(q_z, p_z)
    if closed is not None:
        return closed.expand(z.shape[:-1]).unsqueeze(0)
    return (q_z.log_prob(z) - p_z.log_prob(z)).unsqueeze(0)


def _closed_kl(q_z: Distribution, p_z: Distribution, kl: str) -> Tensor | None:
    """KL(Q ‖ p) in closed form as the kl mode asks ("auto": where one exists), else None."""
    if kl not in KL_MODES:
        raise ValueError(f"unknown kl mode {kl!r}; choose from {KL_MODES}")
    kl_closed = None if kl == "mc" else analytic_kl(q_z, p_z)
    if kl == "analytic" and kl_closed is None:
        raise VaekitError(f"kl 'analytic': no closed-form KL between Q ({type(q_z).__name__}) and p(z) "
                          f"({type(p_z).__name__}); use kl 'auto' (the closed form where one exists) or 'mc'")
    return kl_closed


def elbo_draws(model, x: Tensor, z: Tensor, q_z: Distribution | None = None, kl: str = "auto") -> tuple[Tensor, Tensor]:
    """The ELBO estimate draw by draw, for its Monte Carlo error: at z: [S, B, k] drawn from Q,
    (log p(x|z_s) [S, B], the KL term), the KL term being the closed form [B] where `kl` takes one
    and log Q(z_s) − log p(z_s) [S, B] otherwise. ELBO_s = first − second; their mean over s is
    `elbo(model, x, q_z, kl=kl, z=z).elbo`, and their spread over s is the estimate's noise."""
    check_data(model, x)
    if q_z is None:
        q_z = model.posterior(x)
    p_z = model.prior()
    kl_closed = _closed_kl(q_z, p_z, kl)
    log_px = model.p_x_given_z(z).log_prob(x)
    return log_px, kl_closed if kl_closed is not None else q_z.log_prob(z) - p_z.log_prob(z)


def _log_weights(model, x: Tensor, z: Tensor, q_density: Distribution) -> Tensor:
    return model.prior().log_prob(z) + model.p_x_given_z(z).log_prob(x) - q_density.log_prob(z)


def _given_draws(z: Tensor | None, k: int) -> None:
    if z is not None and z.shape[0] != k:
        raise ValueError(f"z holds {z.shape[0]} draws per example (shape {tuple(z.shape)}) but k = {k}")


def log_weights(model, x: Tensor, k: int, q_z: Distribution | None = None, z: Tensor | None = None) -> Tensor:
    """log w_i = log p(x, z_i) − log Q(z_i|x) for z_i ~ Q, i = 1..k: [k, B].

    z: optional draws of Q, [k, B, dim z], used instead of drawing here (common random numbers, or
    the same draws scored under two models); gradients flow through them as they were drawn.
    """
    check_data(model, x)
    _given_draws(z, k)
    if q_z is None:
        q_z = model.posterior(x)
    return _log_weights(model, x, q_z.rsample((k,)) if z is None else z, q_z)


def iwae_bound(model, x: Tensor, k: int, q_z: Distribution | None = None, z: Tensor | None = None) -> Tensor:
    """The importance-weighted bound L_k = E[log (1/k) Σ_i w_i] (Burda et al. 2016, eq. 8): [B].

    L_1 is the ELBO, L_k is non-decreasing in k, and L_k → log p(x) as k → ∞. Combined with
    `logsumexp(log_w, 0) − log k` so no weight is exponentiated on its own. z: optional draws of Q,
    [k, B, dim z], as in `log_weights`.
    """
    log_w = log_weights(model, x, k, q_z, z)
    return torch.logsumexp(log_w, dim=0) - math.log(k)


class IWAE(NamedTuple):
    """Per-example [B]: the bound L_k (report it) and the surrogate whose gradient is used (maximize it)."""

    bound: Tensor
    surrogate: Tensor


def iwae(
    model, x: Tensor, k: int, q_z: Distribution | None = None, dreg: bool = False, z: Tensor | None = None
) -> IWAE:
    """L_k with its training surrogate; `dreg=True` gives doubly reparameterized encoder gradients.

    Plain: ∇L_k = Σ_i w̃_i ∇log w_i with w̃ = softmax(log w) (Burda et al. 2016, eq. 14), by autograd.
    DReG (Tucker et al. 2018, eq. 5): the encoder gradient Σ_i w̃_i² ∂log w_i/∂z_i · ∂z_i/∂φ, which
    drops the score term whose signal-to-noise ratio vanishes as k grows (Rainforth et al. 2018).
    Here log Q is evaluated with Q's parameters detached, so φ is reached only through z_i, and a
    hook multiplies the gradient arriving at z_i by w̃_i; the decoder still gets Σ_i w̃_i ∇θ log w_i.
    DReG needs Q's parameters to be detachable: a diagonal or full-covariance Gaussian, or any Q with
    a `detach()` method returning the same distribution with detached parameters.
    z: optional reparameterized draws of Q, [k, B, dim z], used instead of drawing here.
    """
    check_data(model, x)
    if q_z is None:
        q_z = model.posterior(x)
    if z is None:
        z = draw(q_z, k)
    if dreg:  # a fresh tensor: no part may score a remembered walk of the draw (`parts.topdown`), every
        z = z.view_as(z)  # gradient reaching z must pass the hook below
    log_w = _log_weights(model, x, z, detached(q_z) if dreg else q_z)
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)
    if not dreg:
        return IWAE(bound, bound)
    w = torch.softmax(log_w.detach(), dim=0)
    if z.requires_grad:
        z.register_hook(lambda grad: grad * w.unsqueeze(-1))
    return IWAE(bound, (w * log_w).sum(0))
