"""Diagnostics of a trained VAE: the amortization gap and a posterior-collapse warning.

Cremer, Li & Duvenaud (2018), "Inference Suboptimality in Variational Autoencoders", split the gap
log p(x) − ELBO(x; Q_encoder) into an *approximation* gap (the best Q of the family is still not
p(z|x)) and an *amortization* gap (the encoder does not output that best Q):

    amortization gap(x) = ELBO(x; Q*) − ELBO(x; Q_encoder) ≥ 0,  Q* = argmax over diagonal Gaussians.

Q* is found per example by gradient ascent on the ELBO, started at the encoder's output.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Independent

from .errors import VaekitError
from .likelihoods import diagonal_normal, is_diagonal_normal, validating
from .objectives import check_data, elbo


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
    loc, log_scale = optimize_diagonal_q(model, x, loc0, scale0.log(), steps, lr, num_samples, g)
    eps = torch.randn((eval_samples, *loc.shape), generator=g, device=x.device, dtype=loc.dtype)
    with torch.no_grad():
        enc = elbo(model, x, q_z=q_enc, z=loc0 + scale0 * eps).elbo
        scale = log_scale.exp()
        opt = elbo(model, x, q_z=diagonal_normal(loc, scale), z=loc + scale * eps).elbo
    return enc, opt, loc, scale


def optimize_diagonal_q(
    model, x: Tensor, loc: Tensor, log_scale: Tensor, steps: int, lr: float, num_samples: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Adam ascent on ELBO(x; N(loc, diag(exp log_scale)²)) from the given start: ([B, k], [B, k])."""
    loc = loc.detach().clone().requires_grad_(True)
    log_scale = log_scale.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([loc, log_scale], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    avg_loc, avg_log_scale, n_avg = torch.zeros_like(loc), torch.zeros_like(log_scale), 0
    with validating(model, False):  # x was checked once; the distributions need no re-validation each step
        for t in range(steps):
            eps = torch.randn((num_samples, *loc.shape), generator=generator, device=x.device, dtype=loc.dtype)
            scale = log_scale.exp()
            loss = -elbo(model, x, q_z=diagonal_normal(loc, scale), z=loc + scale * eps).elbo.sum()
            # torch.autograd.grad, not backward: the model's .grad fields stay untouched
            opt.zero_grad(set_to_none=True)
            loc.grad, log_scale.grad = torch.autograd.grad(loss, [loc, log_scale])
            opt.step()
            sched.step()
            if t >= steps // 2:  # Polyak-Ruppert averaging over the second half: single iterates carry the noise
                avg_loc, avg_log_scale, n_avg = avg_loc + loc.detach(), avg_log_scale + log_scale.detach(), n_avg + 1
    return avg_loc / n_avg, avg_log_scale / n_avg


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
