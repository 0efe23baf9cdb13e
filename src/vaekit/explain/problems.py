"""The models the topics share: a 2-D nonlinear decoder whose posterior can be integrated on a grid,
and a linear-Gaussian one whose posterior is known in closed form; and how numbers are printed."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributions import Independent

from ..evaluation.diagnostics import fit_diagonal_q
from ..evaluation.references import DTYPE, Grid, LinearGaussian, gauss_hermite_elbo, grid_moments, posterior_grid
from ..model import GenerativeModel
from ..parts.distributions import diagonal_normal


def toy_problem(seed: int = 0, data_dim: int = 12, weight_scale: float = 3.0) -> tuple[GenerativeModel, Tensor]:
    """A Bernoulli decoder with k = 2 (tanh MLP, weights scaled up so the posterior is far from the
    prior and not Gaussian) and one x drawn from it: (model in float64, x [1, D])."""
    torch.manual_seed(seed)
    model = GenerativeModel(data_dim, 2, hidden=(16,), activation="tanh", likelihood="bernoulli").to(DTYPE)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(weight_scale)
    torch.manual_seed(seed + 1)
    return model, model.sample(1, mean=False)


def linear_problem(W: Tensor, sigma: float, seed: int = 0) -> tuple[GenerativeModel, LinearGaussian, Tensor]:
    """x|z ~ N(Wz, σ²I) as a `GenerativeModel` (hidden=()), its closed form, and one x ~ p(x)."""
    d, k = W.shape
    model = GenerativeModel(d, k, hidden=(), likelihood={"name": "gaussian", "sigma": sigma}).to(DTYPE)
    with torch.no_grad():
        model.decoder.net[0].weight.copy_(W)
        model.decoder.net[0].bias.zero_()
    lg = LinearGaussian.from_model(model)
    torch.manual_seed(seed)
    return model, lg, lg.marginal().sample((1,))


def fitted_toy() -> tuple[GenerativeModel, Tensor, Grid, Independent]:
    """The toy problem, its grid, and the best diagonal Q: L-BFGS on the Gauss–Hermite ELBO (no
    sampling, so a deterministic objective), started from the grid posterior's moments."""
    model, x = toy_problem()
    grid = posterior_grid(model, x)
    mean, cov = grid_moments(grid)
    q = fit_diagonal_q(lambda loc, scale: gauss_hermite_elbo(model, x, diagonal_normal(loc, scale))[0],
                       mean[None], cov.diagonal().sqrt().log()[None])
    return model, x, grid, q


def fmt(value: Any) -> str:
    """A number (or a list of them) to 6 significant digits; anything else as str."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)
