"""Numerical references: the numbers vaekit's estimators and tests are held to. Use float64.

The tractable case in closed form: a linear decoder with Gaussian noise, z ~ N(0, I_k),
x|z ~ N(Wz + b, σ²I_d). Then (Bishop 2006, §2.3.3; Tipping & Bishop 1999):
  marginal   p(x)   = N(b, WWᵀ + σ²I)
  posterior  p(z|x) = N(Σ Wᵀ(x − b)/σ², Σ),  Σ = (I + WᵀW/σ²)⁻¹.
The seed's "Posterior Inference Challenge" contrasts this with a neural decoder, where neither exists.

For a nonlinear model with a 2-D latent space, integrals can be done on a grid:
- `posterior_grid`: p(x) = ∫ p(x, z) dz by the rectangle rule on a fine grid, hence log p(x) and the
  true posterior p(z|x) pointwise (`Grid.log_posterior`), its moments, and KL(Q ‖ p(z|x)) for any Q.
- `gauss_hermite_elbo`: the ELBO of a diagonal Gaussian Q with no sampling (product Gauss–Hermite
  rule for E_Q[log p(x|z)], closed-form KL), differentiable in Q; `vaekit.explain` maximizes it
  with `diagnostics.fit_diagonal_q`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal

from ..model import GenerativeModel
from ..parts.distributions import kl_diagonal_normal
from ..parts.likelihoods import GaussianObservation


@dataclass
class LinearGaussian:
    """W: [D, k], b: [D], sigma: the known noise scale."""

    W: Tensor
    b: Tensor
    sigma: float

    @classmethod
    def from_model(cls, generative) -> LinearGaussian:
        """Read W, b, σ off a `GenerativeModel` built with `hidden=()` and a known-σ Gaussian likelihood."""
        layers, head = list(generative.decoder.net), generative.decoder.head
        if len(layers) != 1 or not isinstance(head, GaussianObservation):
            raise ValueError("exact references need a linear decoder (hidden=()) and likelihood='gaussian'")
        lin = layers[0]
        return cls(lin.weight.detach(), lin.bias.detach(), float(head.sigma))

    def _cov_x(self) -> Tensor:
        d = self.W.shape[0]
        return self.W @ self.W.T + self.sigma**2 * torch.eye(d, dtype=self.W.dtype, device=self.W.device)

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, WWᵀ + σ²I)."""
        return MultivariateNormal(self.b, covariance_matrix=self._cov_x())

    def log_marginal(self, x: Tensor) -> Tensor:
        """log p(x): [B]."""
        return self.marginal().log_prob(x)

    def posterior(self, x: Tensor) -> MultivariateNormal:
        """p(z|x) for x: [B, D], batch shape [B], event shape [k]."""
        k = self.W.shape[1]
        precision = torch.eye(k, dtype=self.W.dtype, device=self.W.device) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(precision)
        cov = 0.5 * (cov + cov.T)
        loc = ((x - self.b) @ self.W / self.sigma**2) @ cov  # Σ symmetric, so (Σ Wᵀ r)ᵀ = rᵀ W Σ
        return MultivariateNormal(loc, covariance_matrix=cov.expand(x.shape[0], k, k))

    def elbo(self, x: Tensor, loc: Tensor, cov: Tensor) -> Tensor:
        """ELBO(x; Q) for Gaussian Q = N(loc, cov) in closed form: [B]. loc: [B, k], cov: [B, k, k].

        E_Q[log p(x|z)] = log N(x; W·loc + b, σ²I) − tr(WᵀW·cov)/(2σ²), and
        KL(Q ‖ N(0, I)) = ½(tr cov + ‖loc‖² − k − log det cov). Equals log p(x) iff Q = p(z|x).
        """
        d, k = self.W.shape
        resid = x - loc @ self.W.T - self.b
        s2 = self.sigma**2
        recon = -0.5 * (resid.pow(2).sum(-1) / s2 + d * math.log(2 * math.pi * s2))
        recon = recon - torch.einsum("ij,bji->b", self.W.T @ self.W, cov) / (2 * s2)
        kl = 0.5 * (cov.diagonal(dim1=-2, dim2=-1).sum(-1) + loc.pow(2).sum(-1) - k - torch.logdet(cov))
        return recon - kl


DTYPE = torch.float64  # quadratures compared at 1e-3 relative need more than float32


class Grid(NamedTuple):
    """p(x, z) on an n×n grid of z over [−lim, lim]²: axis [n], z [n, n, 2], log_joint [n, n]; log_px is
    log Σ p(x, z) ΔA (the rectangle rule, spectrally accurate for smooth densities that vanish at the edges)."""

    axis: Tensor
    z: Tensor
    log_joint: Tensor
    log_px: float
    cell: float

    def log_posterior(self) -> Tensor:
        """log p(z|x) = log p(x, z) − log p(x) at the grid points: [n, n]."""
        return self.log_joint - self.log_px


@torch.no_grad()
def posterior_grid(model: GenerativeModel, x: Tensor, lim: float = 6.0, n: int = 481) -> Grid:
    """Numerical integration of p(x) = ∫ p(x|z) p(z) dz over z ∈ [−lim, lim]² (k = 2 only)."""
    axis = torch.linspace(-lim, lim, n, dtype=DTYPE)
    z = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1)  # z[i, j] = (axis[j], axis[i])
    log_joint = model.log_joint(x, z)
    cell = float((axis[1] - axis[0]) ** 2)
    return Grid(axis, z, log_joint, float(torch.logsumexp(log_joint.reshape(-1), 0)) + math.log(cell), cell)


def grid_kl(q_z: Independent, grid: Grid) -> float:
    """KL(Q ‖ p(z|x)) = ∫ Q(z) [log Q(z) − log p(z|x)] dz on the grid, in nats."""
    log_q = q_z.log_prob(grid.z)
    return float((log_q.exp() * (log_q - grid.log_posterior())).sum() * grid.cell)


def grid_moments(grid: Grid) -> tuple[Tensor, Tensor]:
    """Mean [2] and covariance [2, 2] of p(z|x) by the same quadrature."""
    w = grid.log_posterior().exp() * grid.cell
    mean = (w[..., None] * grid.z).sum((0, 1))
    dz = grid.z - mean
    return mean, (w[..., None, None] * dz[..., :, None] * dz[..., None, :]).sum((0, 1))


def gauss_hermite_elbo(model, x: Tensor, q_z: Independent, nodes: int = 48) -> tuple[Tensor, Tensor, Tensor]:
    """ELBO(x; Q) = E_Q[log p(x|z)] − KL(Q ‖ p(z)) for a diagonal Q in 2-D, without sampling:
    the expectation by a product Gauss–Hermite rule (exact for polynomials of degree < 2·nodes),
    the KL in closed form. Returns (elbo, reconstruction, kl), each [B]; differentiable in Q."""
    e, w = np.polynomial.hermite_e.hermegauss(nodes)  # ∫ f(ε) exp(−ε²/2) dε ≈ Σ w f(e)
    e, w = torch.tensor(e, dtype=DTYPE), torch.tensor(w / math.sqrt(2 * math.pi), dtype=DTYPE)
    eps = torch.stack(torch.meshgrid(e, e, indexing="ij"), -1).reshape(-1, 1, 2)  # [n², 1, 2]
    weights = torch.outer(w, w).reshape(-1, 1)
    z = q_z.base_dist.loc + q_z.base_dist.scale * eps  # [n², B, 2]
    reconstruction = (weights * model.p_x_given_z(z).log_prob(x)).sum(0)
    kl = kl_diagonal_normal(q_z, model.prior())
    return reconstruction - kl, reconstruction, kl

