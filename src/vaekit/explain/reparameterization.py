"""`vaekit explain reparameterization`: the variance of the score-function and the reparameterized
gradient estimators of the same expectation (Kingma & Welling 2013, §2.4; Williams 1992)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Independent

from ..objectives.estimators import expectation
from ..parts.distributions import diagonal_normal
from ..pictures.figures import new_figure, save_figure
from .problems import fitted_toy


def explain_reparameterization(path: Path, sample_counts: tuple[int, ...] = (1, 4, 16, 64, 256),
                               repeats: int = 2000) -> dict[str, Any]:
    """Var of ∇_(μ, log σ) E_Q[log p(x|z)]: score function (REINFORCE) vs reparameterization, against
    the number of samples S per estimate (both ∝ 1/S; Kingma & Welling 2013, §2.4)."""
    model, x, _, q = fitted_toy()
    rows = {name: [gradient_stats(model, x, q, s, name, repeats) for s in sample_counts]
            for name in ("score-function", "reparameterization")}
    var = {name: [r[0] for r in rs] for name, rs in rows.items()}
    z_scores = [float(((a[1] - b[1]).abs() / (a[2] ** 2 + b[2] ** 2).sqrt()).max())
                for a, b in zip(rows["score-function"], rows["reparameterization"])]
    ratios = [s / r for s, r in zip(var["score-function"], var["reparameterization"])]
    result = {"num_samples": list(sample_counts), "variance_score_function": var["score-function"],
              "variance_reparameterization": var["reparameterization"], "variance_ratio": ratios,
              "mean_difference_z": z_scores}
    result["claims"] = [
        "total gradient variance over (μ, log σ), score function vs reparameterization: " + ", ".join(
            f"S={s}: {a:.3g} vs {b:.3g}" for s, a, b in zip(sample_counts, *var.values())),
        f"reparameterization is lower at every S, by {min(ratios):.0f}× to {max(ratios):.0f}×; both fall as 1/S",
        f"both are unbiased: their means differ by at most {max(z_scores):.1f} standard errors",
    ]
    result["figure"] = str(draw_reparameterization(path, sample_counts, var))
    return result


def gradient_stats(model, x: Tensor, q: Independent, num_samples: int, estimator: str, repeats: int):
    """(total variance, mean [2k], standard error [2k]) of `repeats` independent gradient estimates.

    The repeats are a batch of identical Qs: the surrogate sums over them, so its gradient with respect
    to the [repeats, k] parameters holds each repeat's own estimate.
    """
    torch.manual_seed(num_samples)
    loc = q.mean.expand(repeats, -1).clone().requires_grad_(True)
    log_scale = q.stddev.log().expand(repeats, -1).clone().requires_grad_(True)
    q_r = diagonal_normal(loc, log_scale.exp())
    _, surrogate = expectation(q_r, lambda z: model.p_x_given_z(z).log_prob(x), num_samples, estimator)
    grads = torch.cat(torch.autograd.grad(surrogate.sum(), [loc, log_scale]), 1)  # [repeats, 2k]
    return float(grads.var(0).sum()), grads.mean(0), grads.std(0) / math.sqrt(repeats)


def draw_reparameterization(path: Path, sample_counts, var: dict[str, list[float]]) -> Path:
    fig, (ax,) = new_figure(size=(5.5, 4.2))
    for name, values in var.items():
        ax.plot(sample_counts, values, marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="samples S per estimate", ylabel="Var of the gradient estimate",
           title="∇ E_Q[log p(x|z)] w.r.t. (μ, log σ)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
