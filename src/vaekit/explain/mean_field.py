"""`vaekit explain mean-field`: the best factorized Q of a correlated Gaussian posterior, in closed
form and found by the fitter (Bishop 2006, §10.1.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, kl_divergence

from ..evaluation.diagnostics import fit_diagonal_q
from ..evaluation.references import DTYPE, LinearGaussian
from ..pictures.figures import new_figure, save_figure
from .problems import fmt, linear_problem

CORRELATED_W = ((1.0, 0.9), (1.0, 1.1), (0.5, 0.4), (0.2, 0.3))  # nearly parallel columns: z₁, z₂ trade off


def explain_mean_field(path: Path, sigma: float = 0.5) -> dict[str, Any]:
    """The best diagonal Q of a correlated Gaussian posterior N(m, Λ⁻¹): Q = N(m, diag(1/Λ_jj))
    (Bishop 2006, eq. 10.12–10.13), with KL(Q ‖ p) = ½(Σ_j log Λ_jj − log det Λ)."""
    _, lg, x = linear_problem(torch.tensor(CORRELATED_W, dtype=DTYPE), sigma)
    post = lg.posterior(x)
    precision = torch.linalg.inv(post.covariance_matrix[0])
    m, var_q = post.loc[0], 1 / precision.diagonal()
    q = MultivariateNormal(m, torch.diag(var_q))
    kl = float(kl_divergence(q, MultivariateNormal(m, post.covariance_matrix[0])))
    kl_closed = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))
    gap = float(lg.log_marginal(x) - lg.elbo(x, m[None], torch.diag(var_q)[None]))
    fitted_mean, fitted_var = fit_linear(lg, x)
    fit_error = float(torch.cat([fitted_mean - m, fitted_var - var_q]).abs().max())
    corr = post.covariance_matrix[0, 0, 1] / post.covariance_matrix[0].diagonal().prod().sqrt()
    result = {"posterior_correlation": float(corr), "posterior_var": post.covariance_matrix[0].diagonal().tolist(),
              "q_var": var_q.tolist(), "kl_q_posterior": kl, "kl_closed_form": kl_closed, "elbo_gap": gap,
              "fitted_q_mean": fitted_mean.tolist(), "fitted_q_var": fitted_var.tolist(),
              "fitted_vs_closed_form": fit_error}
    result["claims"] = [
        (f"posterior correlation {float(corr):.3f}; best diagonal Q: mean = posterior mean, variances 1/Λ_jj = "
         f"{fmt(var_q.tolist())} < marginal posterior variances {fmt(result['posterior_var'])}"),
        f"KL(Q ‖ p(z|x)) = {kl:.5f} nats = ½(Σ log Λ_jj − log det Λ) = {kl_closed:.5f} = log p(x) − ELBO = {gap:.5f}",
        (f"L-BFGS on the closed-form ELBO, started at the prior N(0, I), finds the same mean and variances "
         f"(max difference {fit_error:.1e})"),
    ]
    result["figure"] = str(draw_mean_field(path, m, post.covariance_matrix[0], var_q))
    return result


def fit_linear(lg: LinearGaussian, x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variances [k] of the best diagonal Q by the fitter on the closed-form ELBO, from N(0, I)."""
    zeros = torch.zeros(1, lg.W.shape[1], dtype=lg.W.dtype)
    q = fit_diagonal_q(lambda loc, scale: lg.elbo(x, loc, torch.diag_embed(scale**2)), zeros, zeros)
    return q.mean[0], q.variance[0]


def draw_mean_field(path: Path, m: Tensor, cov: Tensor, var_q: Tensor) -> Path:
    fig, (ax,) = new_figure(size=(5.0, 4.6))
    r = 3.2 * float(cov.diagonal().max().sqrt())
    axis = torch.linspace(-r, r, 301, dtype=DTYPE)
    z = torch.stack(torch.meshgrid(axis + m[0], axis + m[1], indexing="xy"), -1)
    peak = float(MultivariateNormal(m, cov).log_prob(m).exp())
    levels = [f * peak for f in (0.05, 0.2, 0.4, 0.6, 0.8)]  # the same heights for both, so widths compare
    for c, color, name in ((cov, "tab:blue", "p(z|x)"), (torch.diag(var_q), "tab:orange", "best diagonal Q")):
        density = MultivariateNormal(m, c).log_prob(z).exp().numpy()
        ax.contour((axis + m[0]).numpy(), (axis + m[1]).numpy(), density, levels=levels, colors=color)
        ax.plot([], [], color=color, label=name)  # contour sets make no legend entries of their own
    ax.set(xlabel="z₁", ylabel="z₂", aspect="equal", title="mean field: too narrow along the correlation")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
