"""A full-covariance Gaussian mixture fitted by EM: the ex-post density estimator of Ghosh et al. (2020,
"From variational to deterministic autoencoders", §4: a 10-component GMM on the training codes), which
vaekit fits on a trained VAE's aggregate posterior to draw latents the decoder has seen.

The algorithm is scikit-learn's `GaussianMixture(covariance_type="full")` written in torch float64: the
same E and M steps, the same `reg_covar` on the diagonal, k-means++ then Lloyd iterations for the start,
and the same stopping rule (the change in the mean log-likelihood below `tol`). tests/test_samplers.py
checks it against scikit-learn from one start to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from ..errors import VaekitError


@dataclass
class Mixture:
    """A Gaussian mixture's parameters, float64: weights [K] (summing to 1), means [K, d], covariances [K, d, d]."""

    weights: Tensor
    means: Tensor
    covariances: Tensor

    def distribution(self) -> MixtureSameFamily:
        """The mixture as a torch distribution over [d] (sample, log_prob)."""
        return MixtureSameFamily(Categorical(probs=self.weights),
                                 MultivariateNormal(self.means, scale_tril=torch.linalg.cholesky(self.covariances)))

    def component_log_prob(self, z: Tensor) -> Tensor:
        """log w_k + log N(z; μ_k, Σ_k) for every row and component: [N, K]."""
        chol = torch.linalg.cholesky(self.covariances)  # [K, d, d]
        diff = z[:, None, :] - self.means[None]  # [N, K, d]
        solved = torch.linalg.solve_triangular(chol[None], diff[..., None], upper=False).squeeze(-1)
        log_det = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # ½ log|Σ_k|
        d = z.shape[1]
        return self.weights.log() - 0.5 * solved.pow(2).sum(-1) - log_det - 0.5 * d * math.log(2 * math.pi)


def m_step(z: Tensor, resp: Tensor, reg: float) -> Mixture:
    """Weights, means and covariances from responsibilities [N, K] (scikit-learn's `_m_step`)."""
    nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps  # a component with no point keeps a finite mean
    means = resp.T @ z / nk[:, None]
    diff = z[None] - means[:, None]  # [K, N, d]
    cov = torch.einsum("kn,kni,knj->kij", resp.T, diff, diff) / nk[:, None, None]
    cov = cov + reg * torch.eye(z.shape[1], dtype=z.dtype)
    return Mixture(nk / z.shape[0], means, cov)


def kmeans_start(z: Tensor, k: int, generator: torch.Generator, iterations: int = 100) -> Tensor:
    """Hard responsibilities [N, K] from k-means++ seeding and Lloyd iterations (a start for EM)."""
    centres = z[torch.randint(z.shape[0], (1,), generator=generator)]
    for _ in range(1, k):  # each next centre drawn ∝ the squared distance to the nearest one
        d2 = torch.cdist(z, centres).pow(2).min(1).values
        centres = torch.cat([centres, z[torch.multinomial(d2 / d2.sum(), 1, generator=generator)]])
    labels = torch.cdist(z, centres).argmin(1)
    for _ in range(iterations):
        centres = torch.stack([z[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)])
        new = torch.cdist(z, centres).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return torch.nn.functional.one_hot(labels, k).to(z.dtype)


def fit_mixture(z: Tensor, components: int = 10, seed: int = 0, iterations: int = 100, tol: float = 1e-3,
                reg: float = 1e-6, start: Mixture | None = None) -> tuple[Mixture, float]:
    """EM for a K-component full-covariance mixture on z [N, d]: (the mixture, the mean log-likelihood per row
    at the end). `start`: parameters to begin from (else k-means, seeded). Runs `iterations` E and M steps at
    most, and stops when the mean log-likelihood moves by less than `tol`."""
    z = z.detach().to(torch.float64).cpu()
    if not torch.isfinite(z).all():
        raise VaekitError("the codes to fit a mixture on contain NaN or Inf")
    if not 0 < components <= z.shape[0]:
        raise VaekitError(f"a mixture of {components} components needs at least as many codes; there are {z.shape[0]}")
    if start is None:
        distinct = torch.unique(z, dim=0).shape[0]
        if distinct < components:  # k-means++ would have no point left to draw
            raise VaekitError(f"the codes take {distinct} distinct values: fewer than the {components} components asked "
                              "for (is the encoder dead? fewer --components)")
        mixture = m_step(z, kmeans_start(z, components, torch.Generator().manual_seed(seed)), reg)
    else:
        mixture = Mixture(*(t.to(torch.float64) for t in (start.weights, start.means, start.covariances)))
    previous = -math.inf
    for _ in range(iterations):
        log_joint = mixture.component_log_prob(z)
        norm = torch.logsumexp(log_joint, 1, keepdim=True)
        mixture = m_step(z, (log_joint - norm).exp(), reg)
        current = float(norm.mean())
        if abs(current - previous) < tol:
            break
        previous = current
    return mixture, float(torch.logsumexp(mixture.component_log_prob(z), 1).mean())
