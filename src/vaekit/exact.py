"""The tractable case, in closed form: a linear decoder with Gaussian noise.

z ~ N(0, I_k), x|z ~ N(Wz + b, σ²I_d). Then (Bishop 2006, §2.3.3; Tipping & Bishop 1999):
  marginal   p(x)   = N(b, WWᵀ + σ²I)
  posterior  p(z|x) = N(Σ Wᵀ(x − b)/σ², Σ),  Σ = (I + WᵀW/σ²)⁻¹.
The seed's "Posterior Inference Challenge" contrasts this with a neural decoder, where neither exists.
These references let tests hold every estimator to an exact log p(x). Use float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from .distributions import GaussianObservation


@dataclass
class LinearGaussian:
    """W: [D, k], b: [D], sigma: the known noise scale."""

    W: Tensor
    b: Tensor
    sigma: float

    @classmethod
    def from_model(cls, generative) -> LinearGaussian:
        """Read W, b, σ off a `GenerativeModel` built with `hidden=()` and a known-σ Gaussian likelihood."""
        layers = list(generative.decoder)
        if len(layers) != 1 or not isinstance(generative.observation, GaussianObservation):
            raise ValueError("exact references need a linear decoder (hidden=()) and likelihood='gaussian'")
        lin = layers[0]
        return cls(lin.weight.detach(), lin.bias.detach(), float(generative.observation.sigma))

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
