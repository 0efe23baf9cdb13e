"""`vaekit explain posterior`: the true posterior of a nonlinear decoder, on a grid, beside its best
diagonal Q; and the linear-Gaussian decoder, whose posterior is Gaussian and known in closed form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.distributions import Independent, MultivariateNormal

from ..evaluation.references import DTYPE, Grid, grid_kl, grid_moments, posterior_grid
from ..pictures.figures import new_figure, save_figure
from .problems import fitted_toy, fmt, linear_problem


def explain_posterior(path: Path) -> dict[str, Any]:
    """The true posterior of a nonlinear decoder vs its best diagonal Q, and the linear-Gaussian case
    where Q = p(z|x) exactly (Bishop 2006, §2.3.3) and KL(Q ‖ p(z|x)) = 0."""
    _, _, grid, q = fitted_toy()
    mean, cov = grid_moments(grid)
    kl = grid_kl(q, grid)
    lin_model, lg, x_lin = linear_problem(torch.tensor([[1.0, 0.5], [-0.4, 1.2], [0.8, -0.6]], dtype=DTYPE), 0.7)
    exact = lg.posterior(x_lin)
    lin_log_px = float(lg.log_marginal(x_lin))
    lin_kl = lin_log_px - float(lg.elbo(x_lin, exact.loc, exact.covariance_matrix))  # = KL(p(z|x) ‖ p(z|x))
    lin_grid = posterior_grid(lin_model, x_lin)
    result = {
        "log_px_grid": grid.log_px, "posterior_mean": mean.tolist(), "posterior_std": cov.diagonal().sqrt().tolist(),
        "posterior_correlation": float(cov[0, 1] / cov.diagonal().prod().sqrt()),
        "q_mean": q.mean[0].tolist(), "q_std": q.stddev[0].tolist(), "kl_q_posterior": kl,
        "linear_log_px_exact": lin_log_px, "linear_log_px_grid": lin_grid.log_px, "linear_kl_exact_q": lin_kl,
    }
    result["claims"] = [
        f"p(x) by integration over a 481×481 grid: log p(x) = {grid.log_px:.4f} nats",
        (f"best diagonal Q (max ELBO): mean {fmt(result['q_mean'])}, std {fmt(result['q_std'])}; the true "
         f"posterior has correlation {result['posterior_correlation']:.3f}, which Q cannot represent"),
        f"KL(Q ‖ p(z|x)) = {kl:.4f} nats > 0 for the nonlinear decoder",
        (f"linear-Gaussian decoder: Q = exact p(z|x) gives KL = {lin_kl:.2e} nats; grid log p(x) = "
         f"{lin_grid.log_px:.6f} vs closed form {lin_log_px:.6f}"),
    ]
    result["figure"] = str(draw_posterior(path, grid, q, lin_grid, exact))
    return result


def draw_posterior(path: Path, grid: Grid, q: Independent, lin_grid: Grid, exact: MultivariateNormal) -> Path:
    return save_figure(posterior_figure(grid, q, lin_grid, exact), path)


def posterior_figure(grid: Grid, q: Independent, lin_grid: Grid, exact: MultivariateNormal):
    """Three panels; two-line titles, each narrower than its square panel (constrained layout keeps them
    inside the figure)."""
    fig, axes = new_figure(ncols=3, size=(4.0, 3.8))
    t, post = grid.axis.numpy(), grid.log_posterior().exp().numpy()  # matplotlib takes arrays, not tensors
    axes[0].contourf(t, t, post, levels=14, cmap="Blues")
    axes[0].set_title("nonlinear decoder:\ntrue posterior p(z|x) (grid)", fontsize=10)
    axes[1].contourf(t, t, q.log_prob(grid.z).exp().numpy(), levels=14, cmap="Oranges")
    axes[1].contour(t, t, post, levels=6, colors="tab:blue", linewidths=0.7)
    axes[1].set_title("best diagonal Q (filled),\np(z|x) (lines)", fontsize=10)
    t_lin = lin_grid.axis.numpy()
    axes[2].contour(t_lin, t_lin, lin_grid.log_posterior().exp().numpy(), levels=6, colors="tab:blue")
    axes[2].contour(t_lin, t_lin, exact.log_prob(lin_grid.z).exp().numpy(), levels=6, colors="tab:orange",
                    linestyles="--")
    axes[2].set_title("linear-Gaussian decoder:\np(z|x) (grid, solid) = Q (dashed)", fontsize=10)
    for ax, g in zip(axes, (grid, grid, lin_grid)):
        mean, cov = grid_moments(g)
        m1, m2 = mean.tolist()
        r = 3.5 * float(cov.diagonal().max().sqrt())
        ax.set(xlim=(m1 - r, m1 + r), ylim=(m2 - r, m2 + r), xlabel="z₁", ylabel="z₂",
               aspect="equal")
    return fig
