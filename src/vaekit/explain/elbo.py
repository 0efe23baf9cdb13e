"""`vaekit explain elbo`: log p(x) − ELBO(Q) = KL(Q ‖ p(z|x)), and the importance-weighted bounds
L_k between them (Burda et al. 2016), on the 2-D toy problem."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Independent

from ..evaluation.references import gauss_hermite_elbo, grid_kl
from ..objectives.estimators import elbo, iwae_bound
from ..parts.distributions import diagonal_normal
from ..pictures.figures import new_figure, save_figure
from .problems import fitted_toy


def explain_elbo(path: Path, ks: tuple[int, ...] = (1, 10, 100, 1000), repeats: int = 1000) -> dict[str, Any]:
    """log p(x) (grid) vs the ELBO of the best diagonal Q and the IWAE bounds L_k (Burda et al. 2016)."""
    model, x, grid, q = fitted_toy()
    with torch.no_grad():
        value, recon, kl_prior = (float(t) for t in gauss_hermite_elbo(model, x, q))
    kl_post = grid_kl(q, grid)
    gap = grid.log_px - value
    torch.manual_seed(0)
    with torch.no_grad():
        mc = elbo(model, x, q_z=q, num_samples=100_000)  # vaekit's own Monte Carlo ELBO, same Q
        mc_se = float(model.p_x_given_z(q.sample((100_000,))).log_prob(x).std() / math.sqrt(100_000))
    bounds, ses = iwae_curve(model, x, q, ks, repeats)
    result = {"log_px_grid": grid.log_px, "elbo": value, "reconstruction": recon, "kl_q_prior": kl_prior,
              "gap": gap, "kl_q_posterior_grid": kl_post, "gap_relative_error": abs(gap - kl_post) / kl_post,
              "elbo_monte_carlo": float(mc.elbo), "elbo_monte_carlo_stderr": mc_se,
              "iwae_k": list(ks), "iwae_bound": bounds, "iwae_stderr": ses}
    result["claims"] = [
        f"log p(x) = {grid.log_px:.5f} (grid) ≥ ELBO(Q) = {value:.5f} (Gauss–Hermite, closed-form KL)",
        (f"log p(x) − ELBO = {gap:.5f} = KL(Q ‖ p(z|x)) = {kl_post:.5f} on the grid "
         f"(relative difference {result['gap_relative_error']:.1e})"),
        f"vaekit.elbo with 100,000 samples: {float(mc.elbo):.4f} ± {mc_se:.4f}",
        "IWAE bound L_k climbs towards log p(x): " + ", ".join(f"L_{k} = {b:.4f}" for k, b in zip(ks, bounds)),
    ]
    result["figure"] = str(draw_elbo(path, ks, bounds, ses, grid.log_px, value))
    return result


def iwae_curve(model, x: Tensor, q: Independent, ks: tuple[int, ...], repeats: int) -> tuple[list[float], list[float]]:
    """E[L_k] and its standard error over `repeats` independent estimates, for each k."""
    torch.manual_seed(1)
    xs = x.expand(repeats, -1)
    qs = diagonal_normal(q.mean.expand(repeats, -1), q.stddev.expand(repeats, -1))
    bounds, ses = [], []
    with torch.no_grad():
        for k in ks:
            b = iwae_bound(model, xs, k, q_z=qs)
            bounds.append(float(b.mean()))
            ses.append(float(b.std() / math.sqrt(repeats)))
    return bounds, ses


def draw_elbo(path: Path, ks, bounds, ses, log_px: float, value: float) -> Path:
    fig, (ax,) = new_figure(size=(6.0, 4.2))
    ax.errorbar(ks, bounds, yerr=ses, marker="o", capsize=3, label="IWAE bound L_k (Burda et al. 2016)")
    ax.axhline(log_px, color="black", label=f"log p(x) = {log_px:.3f} (grid)")
    ax.axhline(value, color="tab:orange", linestyle="--", label=f"ELBO(Q) = {value:.3f}; gap = KL(Q ‖ p(z|x))")
    ax.set(xscale="log", xlabel="k (importance samples)", ylabel="nats", title="ELBO ≤ L_k ≤ log p(x)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
