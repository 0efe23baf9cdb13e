"""Evaluation: the ELBO over a dataset and the importance-sampled log-likelihood, each with its
Monte Carlo error; latent statistics; `evaluate_all`, what `vaekit evaluate` reports, with the checks
of `checks` (effective sample size, ELBO ≤ L_k).

Two kinds of error, not to be confused: the *spread over examples* (the standard error of the mean
over the test examples: how much another test set would move the mean) and the *Monte Carlo error*
(how much another seed would move the estimate on these same examples), far smaller on a test set
of hundreds of examples or more.

Everything runs under a forked, seeded RNG: the numbers repeat for a seed and evaluating during
training does not change the training run's random stream. Sums are accumulated in float64, and
the model's train/eval mode is left as it was found.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal

from ..errors import NonFiniteEstimateError, VaekitError
from ..objectives.estimators import draw, elbo_draws, log_weights
from ..parts.distributions import diagonal_normal, is_diagonal_normal, kl_diagonal_normal, mean_of, validating
from ..parts.modules import examples
from ..rng import MAX_SEED, batch_seed, forked_rng
from ..training.distributed import SINGLE, Context, all_reduce_sum
from ..training.progress import Progress
from .checks import bound_check, ess_summary

ACTIVE_UNIT_THRESHOLD = 1e-2  # Burda et al. 2016, §5.2
MAX_CHUNK_ELEMENTS = 1 << 24  # k-chunk × batch × D decoder outputs held at once (64 MB in float32)
CPU_CHUNK_ELEMENTS = 1 << 20  # on CPU, 4 MB: the decoder output stays in cache for the log-density (2× faster)
ELBO_SAMPLES = 200  # draws of z per example for the reported ELBO: MC error ≈ 0.007–0.009 nats on the test digits


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """`model.eval()` for the duration; afterwards every submodule's train/eval flag as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _my_batches(model, x: Tensor, batch_size: int, ctx: Context, y: Tensor | None = None):
    """(index, batch, model) triples this rank evaluates: batch b goes to rank b mod world, whole, no
    padding; the model with the batch's labels bound where there are labels (a conditional VAE)."""
    for b, (xb, mb) in enumerate(_batches(model, x, batch_size, y)):
        if b % ctx.world_size == ctx.rank:
            yield b, xb, mb


def _batches(model, x: Tensor, batch_size: int, y: Tensor | None = None):
    """(batch of x, the model given the batch's labels y, or the model itself when y is None)."""
    if y is None:
        return ((xb, model) for xb in x.split(batch_size))
    if getattr(model, "condition", None) is None:  # given(y) would be the model itself: the labels unused
        raise VaekitError("y given, but this VAE takes no labels (build it with condition='label' to condition on them)")
    if y.shape[:1] != x.shape[:1]:
        raise VaekitError(f"{y.shape[0]} labels for {x.shape[0]} examples")
    return ((xb, model.given(yb)) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))


def _chunk_size(k: int, batch: int, dim: int, device: torch.device) -> int:
    budget = CPU_CHUNK_ELEMENTS if device.type == "cpu" else MAX_CHUNK_ELEMENTS
    return max(1, min(k, budget // max(1, batch * dim)))


def batch_rows(d: Distribution, rows: slice) -> Distribution:
    """d cut to `rows` of its first batch dimension: a Q over a whole data set, for one batch.

    Cuts `Independent` wrappers, `MultivariateNormal`, and families whose parameters are their
    `arg_constraints` (Normal, Laplace, …); any other Q is evaluated in one batch (batch_size ≥ N).
    """
    if isinstance(d, Independent):
        return Independent(batch_rows(d.base_dist, rows), d.reinterpreted_batch_ndims, validate_args=False)
    if isinstance(d, MultivariateNormal):
        return MultivariateNormal(d.loc[rows], scale_tril=d.scale_tril[rows], validate_args=False)
    try:
        return type(d)(**{name: getattr(d, name)[rows] for name in d.arg_constraints if name in vars(d)},
                       validate_args=False)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise ValueError(f"cannot cut a {type(d).__name__} into batches ({e}); pass batch_size >= len(x)") from None


def _q_batches(q_z: Distribution | None, n: int, batch_size: int):
    """q_z (batch shape [n]) for batch b, or None for the model's own Q(z|x)."""
    if q_z is not None and tuple(q_z.batch_shape[:1]) != (n,):
        raise ValueError(f"q_z has batch shape {tuple(q_z.batch_shape)}; x has {n} examples")
    if q_z is None or batch_size >= n:
        return lambda b: q_z
    return lambda b: batch_rows(q_z, slice(b * batch_size, (b + 1) * batch_size))


@dataclass(frozen=True)
class ELBOEstimate:
    """Means over the examples, nats: the ELBO and its terms, with the Monte Carlo standard error of
    the ELBO mean (NaN for one sample) from `num_samples` draws of z per example. `estimate["elbo"]`
    reads a field by name; `terms()` is what training logs."""

    elbo: float
    reconstruction: float
    kl: float
    mc_stderr: float
    num_samples: int
    n: int

    def __getitem__(self, name: str) -> float:
        return getattr(self, name)

    def terms(self) -> dict[str, float]:
        return {"elbo": self.elbo, "reconstruction": self.reconstruction, "kl": self.kl}


MAX_IMPORTANCE_SAMPLES = 1_000_000  # per example: hours over a test set already; 10^12 (a received eval_k) ran for days


def whole_number(value: Any, low: int, high: float = math.inf) -> bool:
    """Whether `value` is a whole number (an int or NumPy integer, not a bool) in [low, high]."""
    return not isinstance(value, bool) and hasattr(value, "__index__") and low <= value <= high


def checked_examples(model, x: Any, k: int = 1, batch_size: int = 1, scored: bool = True, seed: int = 0,
                     encoder: bool = True, k_name: str = "k") -> Tensor:
    """x as a tensor of examples for `model` (`model.examples`), k a whole number from 1 to
    MAX_IMPORTANCE_SAMPLES, batch_size one ≥ 1 and seed one torch takes, or one line naming what is wrong. `scored`: x is
    scored as it is, so a Bernoulli model's examples must be 0 or 1 (training binarizes grey levels)."""
    if not all(hasattr(model, name) for name in ("posterior", "prior", "p_x_given_z")[not encoder:]):
        raise VaekitError(f"model must be a VAE (vaekit.load(RUN), vaekit.VAE(…)), got {type(model).__name__}")
    if not whole_number(k, 1, MAX_IMPORTANCE_SAMPLES):
        raise VaekitError(f"{k_name} must be a whole number of {'importance samples' if k_name == 'k' else 'draws'} "
                          f"from 1 to {MAX_IMPORTANCE_SAMPLES:,}, got {k!r}")
    if not whole_number(batch_size, 1):
        raise VaekitError(f"batch_size must be a whole number ≥ 1, got {batch_size!r}")
    if not whole_number(seed, 0, MAX_SEED):
        raise VaekitError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    x = examples(model, x)
    support = getattr(getattr(model, "decoder", None), "support", None)
    if scored and support == "binary" and not bool(((x == 0) | (x == 1)).all()):
        raise VaekitError("x holds values other than 0 and 1, which a Bernoulli model does not score: binarize them "
                          "(torch.bernoulli(x), as training does with grey levels)")
    return x


@torch.no_grad()
def evaluate_elbo(
    model, x: Tensor, *, num_samples: int = 1, batch_size: int = 1000, seed: int = 0, ctx: Context = SINGLE,
    progress: bool = False, y: Tensor | None = None,
) -> ELBOEstimate:
    """The ELBO over x: [N, D] from `num_samples` draws of z ~ Q(z|x) per example, with its Monte
    Carlo standard error: sqrt(Σ_i s_i²/S)/N, s_i² the sample variance of example i's S one-draw
    ELBOs (closed-form KL where one exists, so only log p(x|z) is noisy). Training validates with one
    draw; `vaekit evaluate` takes `ELBO_SAMPLES`.

    Batch b's noise is seeded by (seed, b), so its values do not depend on which rank computes it:
    under torch.distributed, float64 sums all-reduced over ranks equal the one-process values. One
    sample draws exactly the noise of `elbo(model, x_b)` under that seed. y: the labels of x [N], for a
    conditional VAE (each batch is evaluated by `model.given(y_b)`).
    """
    x = checked_examples(model, x, num_samples, batch_size, seed=seed, k_name="num_samples")
    num_samples, batch_size, seed = int(num_samples), int(batch_size), int(seed)  # NumPy integers, as Python's
    sums = torch.zeros(4, dtype=torch.float64, device=x.device)
    bar = Progress(x.shape[0], f"ELBO ({num_samples} draws)", enabled=progress and ctx.is_main)
    with forked_rng(x.device), eval_mode(model), bar:
        for b, xb, mb in _my_batches(model, x, batch_size, ctx, y):
            torch.manual_seed(batch_seed(seed, b))
            sums += _elbo_batch(mb, xb, num_samples)
            bar.update(xb.shape[0] * ctx.world_size)
    total, recon, kl, mc_var = (all_reduce_sum(sums, ctx) / x.shape[0]).tolist()
    mc_stderr = math.sqrt(mc_var / x.shape[0]) if num_samples > 1 else float("nan")
    return ELBOEstimate(total, recon, kl, mc_stderr, num_samples, int(x.shape[0]))


def _elbo_batch(model, xb: Tensor, num_samples: int) -> Tensor:
    """float64 sums over the batch: [ELBO, reconstruction, KL, Σ_i s_i²/S]."""
    q_z = model.posterior(xb)
    z = draw(q_z, num_samples)  # [S, B, k]: all draws first, so chunking does not change them
    c = _chunk_size(num_samples, xb.shape[0], xb.shape[1], xb.device)
    terms = []
    for i, zc in enumerate(z.split(c)):
        with contextlib.nullcontext() if i == 0 else validating(model, False):  # x checked once
            log_px, kl = elbo_draws(model, xb, zc, q_z)
        terms.append(torch.stack([log_px - kl, log_px, kl.expand_as(log_px)]).double())  # as `elbo` rounds
    per_draw, recon, kl = torch.cat(terms, 1)  # each [S, B]
    var = per_draw.var(0) / num_samples if num_samples > 1 else torch.zeros_like(per_draw[0])
    return torch.stack([per_draw.mean(0), recon.mean(0), kl.mean(0), var]).sum(1)


class LogLikelihood(NamedTuple):
    per_example: Tensor  # [N] float64, nats, every example (under torch.distributed too)
    mean: float
    stderr: float  # standard error of the mean over examples: how much another test set would move it
    mc_stderr: float  # Monte Carlo standard error of the mean (delta method): another seed; NaN for k = 1
    ess: Tensor  # [N] float64: effective sample size (Σw)²/Σw² of each example's k importance weights


def delta_method_variance(ess: Tensor, k: int) -> Tensor:
    """Var(log p̂) ≈ Var(w)/(k·mean(w)²) for log p̂ = log mean_i w_i (the delta method), with the
    unbiased sample variance of the k weights: = (k/ESS − 1)/(k − 1). NaN for k = 1."""
    if k < 2:
        return torch.full_like(ess, float("nan"))
    return ((k / ess - 1) / (k - 1)).clamp_min(0.0)


@torch.no_grad()
def log_likelihood(
    model,
    x: Tensor,
    k: int = 1000,
    batch_size: int = 100,
    chunk_size: int | None = None,
    seed: int = 0,
    ctx: Context = SINGLE,
    q_z: Distribution | None = None,
    progress: bool = False,
    y: Tensor | None = None,
) -> LogLikelihood:
    """log p(x) ≈ log (1/k) Σ_i p(x, z_i)/Q(z_i|x), z_i ~ Q(z|x) (Burda et al. 2016), per example.

    The [k, B] log-weights are computed in chunks of `chunk_size` samples (default: bounded memory
    for any k) and combined with logsumexp in float64, so chunking does not change the value beyond
    rounding. k = 1 is the single-sample ELBO; the estimate's expectation grows with k towards log p(x).
    q_z: a Q over all of x (batch shape [N]) instead of the encoder's, cut per batch (`batch_rows`).
    The Monte Carlo error is the delta method on the weights (`delta_method_variance`), summed over
    examples: sqrt(Σ_i Var_i)/N. Under torch.distributed, batches are shared out whole and the
    per-example values gathered (an all-reduced sum of disjoint slots, exact): every rank returns
    the numbers of one process.
    """
    x = checked_examples(model, x, k, batch_size, seed=seed)
    k, batch_size, seed = int(k), int(batch_size), int(seed)  # NumPy integers, as Python's
    n, cut = x.shape[0], _q_batches(q_z, x.shape[0], batch_size)
    slots = torch.zeros(2, n, dtype=torch.float64, device=x.device)  # log p̂, ESS at each example's index
    bar = Progress(n, f"log-likelihood (k = {k})", enabled=progress and ctx.is_main)
    with forked_rng(x.device), eval_mode(model), bar:
        for b, xb, mb in _my_batches(model, x, batch_size, ctx, y):
            torch.manual_seed(batch_seed(seed, b))
            start = b * batch_size
            slots[:, start : start + xb.shape[0]] = _log_likelihood_batch(mb, xb, k, chunk_size, cut(b))
            bar.update(xb.shape[0] * ctx.world_size)
    per_example, ess = all_reduce_sum(slots, ctx).cpu()
    n_bad = int((~torch.isfinite(per_example)).sum())
    if n_bad:
        raise NonFiniteEstimateError(f"log-likelihood is not finite for {n_bad} of {n} examples; the model's outputs "
                                     "are NaN or Inf", what="the log-likelihood is not finite")
    mean = float(per_example.mean())
    stderr = float(per_example.std() / math.sqrt(n)) if n > 1 else float("nan")
    mc_stderr = float(delta_method_variance(ess, k).sum().sqrt() / n)
    return LogLikelihood(per_example, mean, stderr, mc_stderr, ess)


def _log_likelihood_batch(model, xb: Tensor, k: int, chunk_size: int | None, q_z: Distribution | None) -> Tensor:
    """[2, B] float64: log (1/k) Σ_i w_i and the ESS (Σw)²/Σw², from running logsumexps of log w and 2 log w."""
    c = chunk_size or _chunk_size(k, xb.shape[0], xb.shape[1], xb.device)
    if q_z is None:
        q_z = model.posterior(xb)
    model.p_x_given_z(mean_of(q_z)).log_prob(xb)  # validates x against the likelihood's support, once
    lse = torch.full((2, xb.shape[0]), -math.inf, dtype=torch.float64, device=xb.device)
    with validating(model, False):  # the k samples need no re-validation of x or of finite network outputs
        for start in range(0, k, c):
            lw = log_weights(model, xb, min(c, k - start), q_z).double()
            lse = torch.logaddexp(lse, torch.stack([torch.logsumexp(lw, 0), torch.logsumexp(2 * lw, 0)]))
    return torch.stack([lse[0] - math.log(k), (2 * lse[0] - lse[1]).exp()])


def marginals(d: Distribution) -> Independent | None:
    """The per-dimension marginals of a Gaussian over z as one diagonal Gaussian (a diagonal one
    itself, a full-covariance one N(μ_j, Σ_jj)); None for any other family."""
    if is_diagonal_normal(d):
        return d
    if isinstance(d, MultivariateNormal):
        return diagonal_normal(d.loc, d.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt())
    return None


@torch.no_grad()
def latent_statistics(model, x: Tensor, batch_size: int = 1000, seed: int = 0,
                      y: Tensor | None = None) -> dict[str, object]:
    """Active units and KL per latent dimension over x: [N, D], for any prior and posterior.

    A unit j is active when A_j = Cov_x(E_Q[z_j|x]) > 10⁻² (Burda et al. 2016; E_Q by Monte Carlo
    where Q has no closed-form mean). `kl_per_dim[j]` is the mean over x of KL(Q(z_j|x) ‖ p(z_j)) in
    nats, in closed form, where Q and p(z) are Gaussians (the marginals of a full-covariance Q); it
    sums to the ELBO's KL term when both are diagonal (`kl_per_dim_sums_to_kl`). For other families,
    a mixture prior say, the KL does not split by dimension: `kl_per_dim` is None.

    A model with stochastic layers (Q and p(z) with `layer_sizes`, `parts.hierarchical`) also gets
    `layer_sizes`, `active_units_per_layer`, `kl_per_layer` (nats, E_Q[log Q(z_l|·) − log p(z_l|·)] from
    one draw of z per example) and, where every conditional is a diagonal Gaussian, `kl_per_dim` from
    the same draws: a Monte Carlo estimate that sums to `kl_per_layer`'s total. Draws come from a
    forked RNG seeded with `seed`: the numbers repeat. y: the labels of x [N], for a conditional VAE.
    """
    with forked_rng(x.device), eval_mode(model):
        torch.manual_seed(seed)
        locs, kls, layer_kls = [], [], []
        for xb, mb in _batches(model, x, batch_size, y):
            p_z, q_z = mb.prior(), mb.posterior(xb)
            p_marginals = marginals(p_z)
            layers = getattr(p_z, "layer_sizes", None)
            locs.append(mean_of(q_z).double())
            q_marginals = marginals(q_z) if p_marginals is not None else None
            if q_marginals is not None:
                kls.append(kl_diagonal_normal(q_marginals, p_marginals, per_dimension=True).double().sum(0))
            if layers is not None:
                layer_kls.append(_layer_kl(q_z, p_z))
            diagonal = is_diagonal_normal(p_z) and is_diagonal_normal(q_z)
    activity = torch.cat(locs).var(0, unbiased=False)
    kl_per_dim = (torch.stack(kls).sum(0) / x.shape[0]).tolist() if len(kls) == len(locs) else None
    active = activity > ACTIVE_UNIT_THRESHOLD
    stats = {
        "active_units": int(active.sum()),
        "latent_dim": int(activity.shape[0]),
        "unit_activity": activity.tolist(),
        "kl_per_dim": kl_per_dim,
        "kl_per_dim_sums_to_kl": kl_per_dim is not None and diagonal,
    }
    if layers is not None:
        per_layer = sum(layer for layer, _ in layer_kls) / x.shape[0]
        dims = [d for _, d in layer_kls]
        per_dim = None if any(d is None for d in dims) else sum(dims) / x.shape[0]
        stats.update(layer_sizes=list(layers), active_units_per_layer=[int(a.sum()) for a in active.split(layers)],
                     kl_per_layer=per_layer.tolist(), kl_per_dim=None if per_dim is None else per_dim.tolist())
    return stats


def _layer_kl(q_z: Distribution, p_z: Distribution) -> tuple[Tensor, Tensor | None]:
    """Σ over a batch of log Q(z_l|·) − log p(z_l|·) per layer [L] and per dimension [Σ d_l] (None unless
    every conditional is a diagonal Gaussian), at one draw z ~ Q per example."""
    z = q_z.sample()
    per_layer = torch.stack([q - p for q, p in zip(q_z.layer_log_probs(z), p_z.layer_log_probs(z))]).double().sum(-1)
    q_dims, p_dims = q_z.layer_log_probs(z, per_dimension=True), p_z.layer_log_probs(z, per_dimension=True)
    if any(t is None for t in q_dims + p_dims):
        return per_layer, None
    return per_layer, (torch.cat(q_dims, -1) - torch.cat(p_dims, -1)).double().sum(0)


def bits_per_dim(log_likelihood_nats: float, data_dim: int) -> float:
    """−log₂ p(x) / D: nats per example to bits per data dimension."""
    return -log_likelihood_nats / (data_dim * math.log(2))


def bits_per_dim_of(model) -> str:
    """What `bits_per_dim` measures, from the likelihood's support: "probability mass" for discrete
    values (binary, counts, the 8-bit levels k/255 of discretized-logistic and categorical: the standard
    8-bit bits/dim, no correction), "density" for unit and real supports (continuous Bernoulli,
    Gaussian: not comparable with a mass; a density of uniformly dequantized 8-bit data scaled to
    [0, 1] gives 8-bit bits/dim + 8, i.e. log₂ 256 more), "unknown" for a likelihood without a support."""
    support = getattr(getattr(model, "decoder", None), "support", None)
    return {"binary": "probability mass", "count": "probability mass", "discrete256": "probability mass",
            "unit": "density", "real": "density"}.get(support, "unknown")


def evaluate_all(
    model, x: Tensor, k: int, seed: int = 0, ctx: Context = SINGLE, elbo_samples: int = ELBO_SAMPLES,
    progress: bool = False, y: Tensor | None = None,
) -> dict[str, object]:
    """What `vaekit evaluate` and the report show, over x: [N, D]: the ELBO terms (`elbo_samples`
    draws per example) and the k-sample log-likelihood, each with its Monte Carlo standard error
    (`*_mc_stderr`, another seed), the log-likelihood's standard error over examples
    (`log_likelihood_stderr`, another test set), the importance weights' ESS, the ELBO ≤ L_k check,
    NLL, bits/dim, active units and KL per dimension. y: the labels of x [N], for a conditional VAE."""
    e = evaluate_elbo(model, x, num_samples=elbo_samples, seed=seed, ctx=ctx, progress=progress, y=y)
    ll = log_likelihood(model, x, k=k, seed=seed, ctx=ctx, progress=progress, y=y)
    return {"elbo": e.elbo, "reconstruction": e.reconstruction, "kl": e.kl, "n": e.n,
            "elbo_samples": elbo_samples, "elbo_mc_stderr": e.mc_stderr,
            "log_likelihood": ll.mean, "log_likelihood_stderr": ll.stderr, "log_likelihood_mc_stderr": ll.mc_stderr,
            "nll": -ll.mean, "k": k, "bits_per_dim": bits_per_dim(ll.mean, x.shape[1]),
            "bits_per_dim_of": bits_per_dim_of(model), **ess_summary(ll.ess, k),
            "bound_check": bound_check(e.elbo, e.mc_stderr, ll.mean, ll.mc_stderr), **latent_statistics(model, x, seed=seed, y=y),
            "likelihood_learned": learned_summary(model)}


def learned_summary(model) -> dict[str, dict[str, float]]:
    """What the likelihood learned of its own (`Likelihood.learned`: a σ, a dispersion): each parameter's
    median, min and max over its values and their number; {} where it learns nothing."""
    learned = getattr(getattr(getattr(model, "decoder", None), "head", None), "learned", None)
    out = {}
    for name, value in (learned() if callable(learned) else {}).items():
        v = value.detach().double().flatten().cpu()
        out[name] = {"median": float(v.median()), "min": float(v.min()), "max": float(v.max()), "count": v.numel()}
    return out
