"""Evaluation: the ELBO over a dataset and the importance-sampled log-likelihood.

Both run under a forked, seeded RNG: the numbers repeat for a seed and evaluating during training
does not change the training run's random stream. Sums are accumulated in float64.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .distributions import kl_diagonal_normal, unchecked
from .errors import VaekitError
from .objectives import elbo, log_weights

ACTIVE_UNIT_THRESHOLD = 1e-2  # Burda et al. 2016, §5.2
MAX_CHUNK_ELEMENTS = 1 << 24  # k-chunk × batch × D decoder outputs held at once (64 MB in float32)


@torch.no_grad()
def evaluate_elbo(model, x: Tensor, batch_size: int = 1000, num_samples: int = 1, seed: int = 0) -> dict[str, float]:
    """Means over x: [N, D] of the ELBO, reconstruction and KL terms (nats per example) and n."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for xb in x.split(batch_size):
            r = elbo(model, xb, num_samples=num_samples)
            sums += torch.stack([r.elbo.sum(), r.reconstruction.sum(), r.kl.sum()]).double()
    means = (sums / x.shape[0]).tolist()
    return {"elbo": means[0], "reconstruction": means[1], "kl": means[2], "n": int(x.shape[0])}


class LogLikelihood(NamedTuple):
    per_example: Tensor  # [N] float64, nats
    mean: float
    stderr: float  # standard error of the mean over examples


def _chunk_size(k: int, batch: int, dim: int) -> int:
    return max(1, min(k, MAX_CHUNK_ELEMENTS // max(1, batch * dim)))


@torch.no_grad()
def log_likelihood(
    model, x: Tensor, k: int = 1000, batch_size: int = 100, chunk_size: int | None = None, seed: int = 0
) -> LogLikelihood:
    """log p(x) ≈ log (1/k) Σ_i p(x, z_i)/Q(z_i|x), z_i ~ Q(z|x) (Burda et al. 2016), per example.

    The [k, B] log-weights are computed in chunks of `chunk_size` samples (default: bounded memory
    for any k) and combined with logsumexp in float64, so chunking does not change the value beyond
    rounding. k = 1 is the single-sample ELBO; the estimate's expectation grows with k towards log p(x).
    """
    model.eval()
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for xb in x.split(batch_size):
            c = chunk_size or _chunk_size(k, xb.shape[0], xb.shape[1])
            q_z = model.posterior(xb)
            model.p_x_given_z(q_z.mean).log_prob(xb)  # validates x against the likelihood's support, once
            total = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=xb.device)
            with unchecked():  # the k samples need no re-validation of x or of finite network outputs
                for start in range(0, k, c):
                    lw = log_weights(model, xb, min(c, k - start), q_z).double()
                    total = torch.logaddexp(total, torch.logsumexp(lw, dim=0))
            out.append(total - math.log(k))
    per_example = torch.cat(out).cpu()
    bad = ~torch.isfinite(per_example)
    if bool(bad.any()):
        raise VaekitError(f"log-likelihood is not finite for {int(bad.sum())} of {bad.numel()} examples "
                          f"(first: example {int(bad.nonzero()[0, 0])}); the model's outputs are NaN or Inf")
    n = per_example.numel()
    stderr = float(per_example.std() / math.sqrt(n)) if n > 1 else float("nan")
    return LogLikelihood(per_example, float(per_example.mean()), stderr)


@torch.no_grad()
def latent_statistics(model, x: Tensor, batch_size: int = 1000) -> dict[str, object]:
    """Active units and KL per latent dimension over x: [N, D].

    A unit j is active when A_j = Cov_x(E_Q[z_j|x]) > 10⁻² (Burda et al. 2016); `kl_per_dim[j]` is the
    mean over x of KL(Q(z_j|x) ‖ p(z_j)) in nats, and the list sums to the mean KL term of the ELBO.
    """
    model.eval()
    p_z = model.prior()
    locs, kls = [], []
    for xb in x.split(batch_size):
        q_z = model.posterior(xb)
        locs.append(q_z.base_dist.loc.double())
        kls.append(kl_diagonal_normal(q_z, p_z, per_dimension=True).double().sum(0))
    activity = torch.cat(locs).var(0, unbiased=False)
    kl_per_dim = torch.stack(kls).sum(0) / x.shape[0]
    return {
        "active_units": int((activity > ACTIVE_UNIT_THRESHOLD).sum()),
        "unit_activity": activity.tolist(),
        "kl_per_dim": kl_per_dim.tolist(),
    }


def bits_per_dim(log_likelihood_nats: float, data_dim: int) -> float:
    """−log₂ p(x) / D: nats per example to bits per data dimension."""
    return -log_likelihood_nats / (data_dim * math.log(2))
