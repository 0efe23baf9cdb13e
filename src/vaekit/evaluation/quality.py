"""Sample quality in a feature space: the Fréchet distance between Gaussians fitted to real and generated
features (Heusel et al. 2017, FID when the features are Inception's; here they are a classifier's that vaekit
trains, or principal components, so the numbers are not comparable with published FIDs), and precision and
recall of Kynkäänniemi et al. (2019): the share of generated points inside the real set's k-nearest-neighbour
balls, and the share of real points inside the generated set's. All in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

PR_NEIGHBOURS = 3  # Kynkäänniemi et al.'s k


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """‖μ_r − μ_f‖² + tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½) for features [N, F] and [M, F] (unbiased covariances).

    tr (Σ_r Σ_f)^½ is the sum of the square roots of the eigenvalues of Σ_r^½ Σ_f Σ_r^½ (symmetric, positive
    semi-definite), which avoids the complex matrix square root of a non-symmetric product."""
    real, fake = real.to(torch.float64), fake.to(torch.float64)
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = torch.cov(real.T).reshape(real.shape[1], -1), torch.cov(fake.T).reshape(fake.shape[1], -1)
    values, vectors = torch.linalg.eigh(cov_r)
    root_r = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    middle = torch.linalg.eigvalsh(root_r @ cov_f @ root_r).clamp(min=0).sqrt().sum()
    return float((mu_r - mu_f).pow(2).sum() + cov_r.trace() + cov_f.trace() - 2 * middle)


def _radii(x: Tensor, k: int, chunk: int) -> Tensor:
    """The distance from each row of x to its k-th nearest other row: [N]."""
    return torch.cat([torch.cdist(xb, x).kthvalue(k + 1, dim=1).values for xb in x.split(chunk)])  # +1: itself


def _covered(points: Tensor, centres: Tensor, radii: Tensor, chunk: int) -> Tensor:
    """Whether each point lies in some centre's ball: [N] bool."""
    return torch.cat([(torch.cdist(pb, centres) <= radii).any(1) for pb in points.split(chunk)])


def precision_recall(real: Tensor, fake: Tensor, k: int = PR_NEIGHBOURS, chunk: int = 1000) -> tuple[float, float]:
    """(precision, recall) of generated features `fake` [M, F] against `real` [N, F] (Kynkäänniemi et al. 2019)."""
    real, fake = real.to(torch.float64), fake.to(torch.float64)
    precision = _covered(fake, real, _radii(real, k, chunk), chunk).double().mean()
    recall = _covered(real, fake, _radii(fake, k, chunk), chunk).double().mean()
    return float(precision), float(recall)
