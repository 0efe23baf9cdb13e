"""Diagnostics of a trained VAE: the amortization gap and a posterior-collapse warning.

Cremer, Li & Duvenaud (2018), "Inference Suboptimality in Variational Autoencoders", split the gap
log p(x) − ELBO(x; Q_encoder) into an *approximation* gap (the best Q of the family is still not
p(z|x)) and an *amortization* gap (the encoder does not output that best Q):

    amortization gap(x) = ELBO(x; Q*) − ELBO(x; Q_encoder) ≥ 0,  Q* = argmax over diagonal Gaussians.

Q* is found per example by `fit_diagonal_q`, started at the encoder's output; the same fitter finds
the best diagonal Q of `vaekit explain` on deterministic (quadrature, closed-form) ELBOs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Independent

from ..errors import VaekitError
from ..objectives.estimators import check_data, elbo
from ..parts.distributions import diagonal_normal, is_diagonal_normal, validating


class AmortizationGap(NamedTuple):
    """Per example, [B] in nats: the ELBOs of the encoder's Q and of Q* and their difference; `q_star`
    the optimized diagonal Gaussian (batch shape [B], event shape [k])."""

    encoder_elbo: Tensor
    optimized_elbo: Tensor
    gap: Tensor
    q_star: Independent


def amortization_gap(
    model,
    x: Tensor,
    steps: int = 200,
    lr: float = 0.1,
    num_samples: int = 16,
    eval_samples: int = 256,
    batch_size: int = 500,
    seed: int = 0,
) -> AmortizationGap:
    """The amortization gap of Cremer et al. (2018, §3) for every row of x: [B, D].

    Per example, (μ, log σ) of a diagonal Gaussian start at the encoder's output and follow Adam on
    the reparameterized ELBO (analytic KL, `num_samples` draws per step, the step size decayed to 0
    by a cosine, the iterates of the second half averaged). Examples are independent (the batch objective is a sum
    and Adam is element-wise), so a batch is one vectorized optimization. Both Qs are then scored
    with the same `eval_samples` draws of ε (common random numbers), so the gap's noise is small.
    The model's parameters are not touched; the noise comes from a generator seeded by `seed`.
    """
    check_data(model, x)
    if steps < 1:
        raise VaekitError(f"amortization_gap: steps must be >= 1, got {steps}")
    model.eval()
    parts = [_gap_batch(model, xb, steps, lr, num_samples, eval_samples, seed + b)
             for b, xb in enumerate(x.split(batch_size))]
    enc, opt, loc, scale = (torch.cat(t) for t in zip(*parts))
    return AmortizationGap(enc, opt, opt - enc, diagonal_normal(loc, scale))


def _gap_batch(model, x: Tensor, steps: int, lr: float, num_samples: int, eval_samples: int, seed: int):
    g = torch.Generator(device=x.device).manual_seed(seed)
    with torch.no_grad():
        q_enc = model.posterior(x)
    if not is_diagonal_normal(q_enc):
        raise VaekitError(f"the amortization gap is measured against the best diagonal Q, so it needs a diagonal "
                          f"Gaussian encoder; this one gives {type(q_enc).__name__}")
    loc0, scale0 = q_enc.base_dist.loc, q_enc.base_dist.scale

    def mc_elbo(loc: Tensor, scale: Tensor) -> Tensor:  # new draws on every call: a stochastic objective
        eps = torch.randn((num_samples, *loc.shape), generator=g, device=x.device, dtype=loc.dtype)
        return elbo(model, x, q_z=diagonal_normal(loc, scale), z=loc + scale * eps).elbo

    with validating(model, False):  # x was checked once; the distributions need no re-validation each step
        q_star = fit_diagonal_q(mc_elbo, loc0, scale0.log(), stochastic=True, steps=steps, lr=lr)
    loc, scale = q_star.base_dist.loc, q_star.base_dist.scale
    eps = torch.randn((eval_samples, *loc.shape), generator=g, device=x.device, dtype=loc.dtype)
    with torch.no_grad():
        enc = elbo(model, x, q_z=q_enc, z=loc0 + scale0 * eps).elbo
        opt = elbo(model, x, q_z=q_star, z=loc + scale * eps).elbo
    return enc, opt, loc, scale


def fit_diagonal_q(
    elbo_of: Callable[[Tensor, Tensor], Tensor],
    loc: Tensor,
    log_scale: Tensor,
    *,
    stochastic: bool = False,
    steps: int = 200,
    lr: float = 0.1,
) -> Independent:
    """Q* = argmax over diagonal Gaussians N(μ, diag(σ)²) of the ELBO, per example, started at (loc, log_scale).

    elbo_of(μ, σ) -> [B] is the ELBO of each example, differentiable in μ, σ: [B, k]. Examples are
    independent, so the batch is one optimization of the sum. The variables are (μ, log σ), which are
    unconstrained. Returns Q* with batch shape [B] and event shape [k], detached. Gradients come from
    `torch.autograd.grad`, so the `.grad` of any model parameter inside `elbo_of` is left untouched.

    - A deterministic ELBO (quadrature, closed form): L-BFGS with a strong-Wolfe line search, at most
      `steps` iterations, until the gradient is below 1e-10 or the loss changes by less than 1e-13.
      Exact values let the line search compare points, and the gradient differences stand in for the
      Hessian, so the 2-D problems of `vaekit explain` converge in 11–14 iterations. `lr` is not
      used because the line search chooses each step.
    - `stochastic=True`, a Monte Carlo ELBO that draws new noise on every call: Adam for `steps` steps
      from `lr`, decayed to 0 by a cosine, returning the mean of the second half's iterates
      (Polyak & Juditsky 1992). L-BFGS would fail here: its line search would compare values computed
      from different draws, and its curvature pairs would be differences of noise. The decaying step
      shrinks the noise in the iterates, and the average removes most of what is left.
    """
    if steps < 1:
        raise VaekitError(f"fit_diagonal_q: steps must be >= 1, got {steps}")
    params = [loc.detach().clone().requires_grad_(True), log_scale.detach().clone().requires_grad_(True)]

    def loss_and_grad() -> Tensor:
        loss = -elbo_of(params[0], params[1].exp()).sum()
        params[0].grad, params[1].grad = torch.autograd.grad(loss, params)
        return loss

    if stochastic:
        loc, log_scale = _adam_averaged(params, loss_and_grad, steps, lr)
    else:
        loc, log_scale = _lbfgs(params, loss_and_grad, steps)
    return diagonal_normal(loc, log_scale.exp())


def _lbfgs(params: list[Tensor], loss_and_grad: Callable[[], Tensor], steps: int) -> list[Tensor]:
    opt = torch.optim.LBFGS(params, max_iter=steps, tolerance_grad=1e-10, tolerance_change=1e-13,
                            line_search_fn="strong_wolfe")
    opt.step(loss_and_grad)
    return [p.detach() for p in params]


def _adam_averaged(params: list[Tensor], loss_and_grad: Callable[[], Tensor], steps: int, lr: float) -> list[Tensor]:
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    sums, n = [torch.zeros_like(p) for p in params], 0
    for t in range(steps):
        loss_and_grad()
        opt.step()
        sched.step()
        if t >= steps // 2:  # Polyak-Ruppert averaging over the second half: single iterates carry the noise
            sums, n = [s + p.detach() for s, p in zip(sums, params)], n + 1
    return [s / n for s in sums]


def gap_summary(result: AmortizationGap) -> dict[str, float]:
    """Means over examples, nats: the keys `vaekit evaluate --amortization-gap` adds."""
    return {
        "encoder_elbo": float(result.encoder_elbo.double().mean()),
        "optimized_elbo": float(result.optimized_elbo.double().mean()),
        "amortization_gap": float(result.gap.double().mean()),
    }


def collapse_warning(stats: dict[str, object], share: float = 0.5) -> str | None:
    """A warning when fewer than `share` of the latent units are active, else None.

    stats: the dict of `evaluate.latent_statistics` (`active_units`, `unit_activity`; the total `kl` when
    present, else the sum of `kl_per_dim`). An inactive unit
    has Cov_x E_Q[z_j|x] ≤ 10⁻² (Burda et al. 2016): its Q(z_j|x) ignores x, i.e. posterior collapse
    (Bowman et al. 2016), usually with KL(Q(z_j|x) ‖ p(z_j)) ≈ 0.
    """
    k, active = len(stats["unit_activity"]), int(stats["active_units"])  # type: ignore[arg-type]
    if k == 0 or active >= share * k:
        return None
    kl = stats.get("kl") if stats.get("kl") is not None else (
        sum(stats["kl_per_dim"]) if stats.get("kl_per_dim") is not None else None)  # type: ignore[arg-type]
    kl_text = f"KL {kl:.2f} nats; " if kl is not None else ""
    return (f"posterior collapse: only {active} of {k} latent units are active (Cov_x E_Q[z_j] > 0.01), "
            f"{kl_text}try --kl-warmup-epochs, a smaller --latent-dim, "
            "or a weaker decoder")
