"""Evaluation: the ELBO over a dataset and the importance-sampled log-likelihood.

Both run under a forked, seeded RNG: the numbers repeat for a seed and evaluating during training
does not change the training run's random stream. Sums are accumulated in float64.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal

from .distributed import SINGLE, Context, all_reduce_sum
from .errors import VaekitError
from .likelihoods import diagonal_normal, is_diagonal_normal, kl_diagonal_normal, validating
from .model import mean_of
from .objectives import elbo, log_weights

ACTIVE_UNIT_THRESHOLD = 1e-2  # Burda et al. 2016, §5.2
MAX_CHUNK_ELEMENTS = 1 << 24  # k-chunk × batch × D decoder outputs held at once (64 MB in float32)
CPU_CHUNK_ELEMENTS = 1 << 20  # on CPU, 4 MB: the decoder output stays in cache for the log-density (2× faster)


def forked_rng(device: torch.device | str):
    """`torch.random.fork_rng` for the CPU and `device`: seeding inside leaves the caller's RNG, the
    training noise on a GPU included, exactly as it was."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def batch_seed(seed: int, b: int) -> int:
    """The RNG seed of evaluation batch b."""
    return seed * 1_000_003 + b


def _my_batches(x: Tensor, batch_size: int, ctx: Context):
    """(index, batch) pairs this rank evaluates: batch b goes to rank b mod world, whole, no padding."""
    for b, xb in enumerate(x.split(batch_size)):
        if b % ctx.world_size == ctx.rank:
            yield b, xb


@torch.no_grad()
def evaluate_elbo(
    model, x: Tensor, batch_size: int = 1000, num_samples: int = 1, seed: int = 0, ctx: Context = SINGLE
) -> dict[str, float]:
    """Means over x: [N, D] of the ELBO, reconstruction and KL terms (nats per example) and n.

    Batch b's noise is seeded by (seed, b), so its values do not depend on which rank computes it:
    under torch.distributed, float64 sums all-reduced over ranks equal the one-process values.
    """
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    with forked_rng(x.device):
        for b, xb in _my_batches(x, batch_size, ctx):
            torch.manual_seed(batch_seed(seed, b))
            r = elbo(model, xb, num_samples=num_samples)
            sums += torch.stack([r.elbo, r.reconstruction, r.kl]).double().sum(1)
    means = (all_reduce_sum(sums, ctx) / x.shape[0]).tolist()
    return {"elbo": means[0], "reconstruction": means[1], "kl": means[2], "n": int(x.shape[0])}


class LogLikelihood(NamedTuple):
    per_example: Tensor  # [N] float64, nats (under torch.distributed: this rank's batches only)
    mean: float
    stderr: float  # standard error of the mean over examples


def _chunk_size(k: int, batch: int, dim: int, device: torch.device) -> int:
    budget = CPU_CHUNK_ELEMENTS if device.type == "cpu" else MAX_CHUNK_ELEMENTS
    return max(1, min(k, budget // max(1, batch * dim)))


@torch.no_grad()
def log_likelihood(
    model,
    x: Tensor,
    k: int = 1000,
    batch_size: int = 100,
    chunk_size: int | None = None,
    seed: int = 0,
    ctx: Context = SINGLE,
) -> LogLikelihood:
    """log p(x) ≈ log (1/k) Σ_i p(x, z_i)/Q(z_i|x), z_i ~ Q(z|x) (Burda et al. 2016), per example.

    The [k, B] log-weights are computed in chunks of `chunk_size` samples (default: bounded memory
    for any k) and combined with logsumexp in float64, so chunking does not change the value beyond
    rounding. k = 1 is the single-sample ELBO; the estimate's expectation grows with k towards log p(x).
    Under torch.distributed, batches are shared out whole and the mean and standard error come from
    float64 sums all-reduced over ranks: the same numbers as one process.
    """
    model.eval()
    out = []
    with forked_rng(x.device):
        for b, xb in _my_batches(x, batch_size, ctx):
            torch.manual_seed(batch_seed(seed, b))
            out.append(_log_likelihood_batch(model, xb, k, chunk_size))
    per_example = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=x.device)
    finite = torch.isfinite(per_example)
    stats = torch.stack([per_example[finite].sum(), per_example[finite].pow(2).sum(),
                         (~finite).sum().double(), torch.tensor(float(per_example.numel()), dtype=torch.float64, device=x.device)])
    total, total_sq, n_bad, n = all_reduce_sum(stats, ctx).tolist()
    if n_bad:
        raise VaekitError(f"log-likelihood is not finite for {int(n_bad)} of {int(n)} examples; "
                          "the model's outputs are NaN or Inf")
    mean = total / n
    var = max(total_sq / n - mean**2, 0.0) * n / max(n - 1, 1)
    stderr = math.sqrt(var / n) if n > 1 else float("nan")
    return LogLikelihood(per_example.cpu(), mean, stderr)


def _log_likelihood_batch(model, xb: Tensor, k: int, chunk_size: int | None) -> Tensor:
    c = chunk_size or _chunk_size(k, xb.shape[0], xb.shape[1], xb.device)
    q_z = model.posterior(xb)
    model.p_x_given_z(mean_of(q_z)).log_prob(xb)  # validates x against the likelihood's support, once
    total = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=xb.device)
    with validating(model, False):  # the k samples need no re-validation of x or of finite network outputs
        for start in range(0, k, c):
            lw = log_weights(model, xb, min(c, k - start), q_z).double()
            total = torch.logaddexp(total, torch.logsumexp(lw, dim=0))
    return total - math.log(k)


def marginals(d: Distribution) -> Independent | None:
    """The per-dimension marginals of a Gaussian over z as one diagonal Gaussian (a diagonal one
    itself, a full-covariance one N(μ_j, Σ_jj)); None for any other family."""
    if is_diagonal_normal(d):
        return d
    if isinstance(d, MultivariateNormal):
        return diagonal_normal(d.loc, d.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt())
    return None


@torch.no_grad()
def latent_statistics(model, x: Tensor, batch_size: int = 1000) -> dict[str, object]:
    """Active units and KL per latent dimension over x: [N, D], for any prior and posterior.

    A unit j is active when A_j = Cov_x(E_Q[z_j|x]) > 10⁻² (Burda et al. 2016; E_Q by Monte Carlo
    where Q has no closed-form mean). `kl_per_dim[j]` is the mean over x of KL(Q(z_j|x) ‖ p(z_j)) in
    nats, in closed form, where Q and p(z) are Gaussians (the marginals of a full-covariance Q); it
    sums to the ELBO's KL term when both are diagonal (`kl_per_dim_sums_to_kl`). For other families,
    a mixture prior say, the KL does not split by dimension: `kl_per_dim` is None.
    """
    model.eval()
    p_marginals = marginals(model.prior())
    locs, kls = [], []
    for xb in x.split(batch_size):
        q_z = model.posterior(xb)
        locs.append(mean_of(q_z).double())
        q_marginals = marginals(q_z) if p_marginals is not None else None
        if q_marginals is not None:
            kls.append(kl_diagonal_normal(q_marginals, p_marginals, per_dimension=True).double().sum(0))
    activity = torch.cat(locs).var(0, unbiased=False)
    kl_per_dim = (torch.stack(kls).sum(0) / x.shape[0]).tolist() if len(kls) == len(locs) else None
    return {
        "active_units": int((activity > ACTIVE_UNIT_THRESHOLD).sum()),
        "latent_dim": int(activity.shape[0]),
        "unit_activity": activity.tolist(),
        "kl_per_dim": kl_per_dim,
        "kl_per_dim_sums_to_kl": kl_per_dim is not None and is_diagonal_normal(model.prior()) and
        is_diagonal_normal(model.posterior(x[:1])),
    }


def bits_per_dim(log_likelihood_nats: float, data_dim: int) -> float:
    """−log₂ p(x) / D: nats per example to bits per data dimension."""
    return -log_likelihood_nats / (data_dim * math.log(2))


def evaluate_all(model, x: Tensor, k: int, seed: int = 0, ctx: Context = SINGLE) -> dict[str, object]:
    """What `vaekit evaluate` and the report show: the ELBO terms, the k-sample log-likelihood with its
    standard error, NLL, bits/dim, active units and KL per dimension, all over x: [N, D]."""
    metrics: dict[str, object] = dict(evaluate_elbo(model, x, seed=seed, ctx=ctx))
    ll = log_likelihood(model, x, k=k, seed=seed, ctx=ctx)
    metrics.update(log_likelihood=ll.mean, log_likelihood_stderr=ll.stderr, nll=-ll.mean, k=k,
                   bits_per_dim=bits_per_dim(ll.mean, x.shape[1]), **latent_statistics(model, x))
    return metrics
