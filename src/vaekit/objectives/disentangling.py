"""Objectives that pay ELBO for a disentangled code: β-TCVAE, DIP-VAE I and II, capacity-annealed β-VAE.

Each is an `Objective` (`objectives.base`), registered by name, whose `__init__` declares its settings.
What each reports as `elbo`, `reconstruction` and `kl` is `estimators.elbo` at the very draws of z the
loss used: the true β = 1 ELBO; only the minimized surrogate differs. The estimators below are pure
functions of Q and the draws.

Unlike the ELBO, these losses are functions of the whole minibatch (an aggregate posterior, a
covariance over examples), so they are not sums over examples. Each takes `whole(t, dim)`, which
gathers a tensor of this rank's block into the global batch (`distributed.gather_batch`; the tensor
itself in one process): the statistic is computed identically on every rank over the global batch
and added to the mean over the rank's own examples, so N processes train as one does.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from ..errors import VaekitError
from ..parts.distributions import is_diagonal_normal
from ..parts.registry import Setting
from .base import (
    KL,
    OBJECTIVES,
    Draw,
    Estimator,
    NumSamples,
    Objective,
    Warmup,
    Whole,
    one_process,
    reported,
    warmup_ramp,
)
from .estimators import elbo

TC_ESTIMATORS = ("mws", "mss")
Gamma = Annotated[float, Setting("γ, the weight of the objective's penalty", at_least=0)]


# ---- β-TCVAE: the KL term split by the aggregate posterior (Chen et al. 2018) ----------------------

def log_importance_weights(batch: int, dataset_size: int, estimator: str,
                           dtype: torch.dtype = torch.float32, device: Any = None) -> Tensor:
    """log w_ij, [B, B]: the weight of q(z_i|x_j) in the estimate q(z_i) ≈ Σ_j w_ij q(z_i|x_j), where
    q(z) = (1/N) Σ_n q(z|x_n) is the aggregate posterior over the N training examples and z_i ~ Q(z|x_i).

    "mws", minibatch-weighted sampling (Chen et al. 2018, §4.1): w_ij = 1/B. The authors' code
    (rtqichen/beta-tcvae) uses 1/(NB); that shifts every log q(z) and log q(z_d) by −log N, so the
    reported MI, TC and dimension-wise KL by +log N, +(k−1)·log N and −k·log N: constants the gradient
    never sees but that make the reported terms meaningless. With 1/B the weights sum to 1, and the
    estimate is consistent as B grows; it over-weights the example's own term (1/B where q(z) gives it
    1/N), which biases log q(z) upwards for B ≪ N.
    "mss", minibatch stratified sampling (Chen et al. 2018, App. C.2), with M = B − 1 other examples:
    w_ii = 1/N, one other (j = i + 1 mod B) (N − M)/(NM), the remaining M − 1 weigh 1/M. For a batch
    drawn without replacement Σ_j w_ij q(z_i|x_j) is an unbiased estimate of q(z_i) (the reference
    code sets a column instead of this diagonal: the typo of rtqichen/beta-tcvae PR #1).
    A batch of one has no other example: both give w = 1.
    """
    if estimator not in TC_ESTIMATORS:
        raise ValueError(f"unknown TC estimator {estimator!r}; choose from {TC_ESTIMATORS}")
    if estimator == "mws" or batch == 1:
        return torch.full((batch, batch), -math.log(batch), dtype=dtype, device=device)
    if dataset_size < batch:
        raise ValueError(f"MSS needs the training set size N ≥ the batch size, got N = {dataset_size}, B = {batch}")
    n, m = float(dataset_size), float(batch - 1)
    w = torch.full((batch, batch), -math.log(m), dtype=dtype, device=device)
    i = torch.arange(batch, device=device)
    w[i, (i + 1) % batch] = math.log((n - m) / (n * m))
    w[i, i] = -math.log(n)
    return w


def aggregate_log_density(q_z: Distribution, z: Tensor, dataset_size: int, estimator: str = "mws"):
    """(log q(z) [S, B], log q(z_d) [S, B, k]) at draws z [S, B, k] of a diagonal Gaussian Q with batch
    shape [B], by `log_importance_weights`: logsumexp_j over the batch of log w_ij + log q(z_i|x_j)."""
    loc, scale = q_z.base_dist.loc, q_z.base_dist.scale  # [B, k]
    pairs = Normal(loc, scale, validate_args=False).log_prob(z.unsqueeze(-2))  # [S, B(i), B(j), k]
    log_w = log_importance_weights(loc.shape[0], dataset_size, estimator, pairs.dtype, pairs.device)
    log_qz = torch.logsumexp(pairs.sum(-1) + log_w, dim=-1)
    log_marginals = torch.logsumexp(pairs + log_w.unsqueeze(-1), dim=-2)
    return log_qz, log_marginals


class KLDecomposition(NamedTuple):
    """Per draw [S, B] (Chen et al. 2018, eq. 2): their sum is log Q(z|x) − log p(z), the Monte Carlo KL."""

    mutual_information: Tensor  # index-code MI: log q(z|x) − log q(z)
    total_correlation: Tensor  # log q(z) − Σ_d log q(z_d)
    dimension_kl: Tensor  # Σ_d [log q(z_d) − log p(z_d)]


def kl_decomposition(q_z: Distribution, p_z: Distribution, z: Tensor, dataset_size: int,
                     estimator: str = "mws") -> KLDecomposition:
    """The ELBO's KL split into index-code MI, total correlation and dimension-wise KL at draws z
    [S, B, k] of Q, log q(z) estimated over the minibatch (`aggregate_log_density`). The three terms
    telescope: on every draw they sum to log Q(z|x) − log p(z) exactly, whatever the estimator, so in
    expectation to KL(Q ‖ p). Needs Q and p(z) factorized over dimensions (diagonal Gaussians)."""
    needs_factorized(q_z, p_z, "beta-tcvae")
    log_qz, log_marginals = aggregate_log_density(q_z, z, dataset_size, estimator)
    log_p_dims = p_z.base_dist.log_prob(z)  # [S, B, k]
    return KLDecomposition(q_z.log_prob(z) - log_qz, log_qz - log_marginals.sum(-1),
                           (log_marginals - log_p_dims).sum(-1))


def needs_factorized(q_z: Distribution, p_z: Distribution, objective: str) -> None:
    if not (is_diagonal_normal(q_z) and is_diagonal_normal(p_z)):
        raise VaekitError(f"objective {objective!r} needs a diagonal Gaussian Q(z|x) and a factorized (diagonal "
                          f"Gaussian) prior p(z), for log q(z_d) and log p(z_d) per dimension; this model has Q = "
                          f"{type(q_z).__name__} and p(z) = {type(p_z).__name__}")


@OBJECTIVES.register("beta-tcvae")
class BetaTCVAE(Objective):
    """β-TCVAE (Chen et al. 2018): the ELBO with its total correlation weighted by --beta; --tc-estimator mws or mss

    The paper's surrogate, with α = γ = 1, is log p(x|z) − MI − β·TC − dimension-wise KL =
    log p(x|z) − (log Q(z|x) − log p(z)) − (β − 1)·TC on every draw. We take the ELBO's own surrogate
    (closed-form KL where --kl gives one: the same expectation, less noise) minus (β − 1)·TC, so the
    only estimator noise added to the ELBO's is TC's. z is reparameterized: TC's gradient needs it.
    β is warmed up as the ELBO's is (--kl-warmup-epochs).
    """

    # Chen et al. 2018 train with MWS; MSS is their appendix's lower-bias alternative
    def __init__(self, num_samples: NumSamples = 1, kl: KL = "auto",
                 beta: Annotated[float, Setting("β, the weight of the total correlation (1: the ELBO)", at_least=0)] = 1.0,
                 kl_warmup_epochs: Warmup = 0.0,
                 tc_estimator: Annotated[str, Setting("log q(z) over the minibatch by minibatch-weighted (mws) or "
                                                      "minibatch-stratified (mss) sampling (Chen et al. 2018)",
                                                      choices=TC_ESTIMATORS)] = "mws"):
        super().__init__()
        self.num_samples, self.kl, self.beta, self.kl_warmup_epochs = num_samples, kl, beta, kl_warmup_epochs
        self.tc_estimator = tc_estimator
        self.dataset_size = 0

    def setup(self, model, dataset_size: int) -> None:
        self.dataset_size = dataset_size

    def loss(self, model, x: Tensor, draw: Draw, progress: float | Tensor, whole: Whole = one_process):
        q_z = model.posterior(x)
        z = draw(q_z, self.num_samples, "reparameterization")
        r = elbo(model, x, q_z=q_z, kl=self.kl, z=z)
        p_z = model.prior()
        needs_factorized(q_z, p_z, "beta-tcvae")
        q_all = Independent(Normal(whole(q_z.base_dist.loc), whole(q_z.base_dist.scale), validate_args=False), 1)
        d = kl_decomposition(q_all, p_z, whole(z, 1), self.dataset_size, self.tc_estimator)  # over the global batch
        total_correlation = d.total_correlation.mean()
        beta = self.beta * warmup_ramp(progress, self.kl_warmup_epochs)
        loss = -r.surrogate.mean() + (beta - 1) * total_correlation
        return loss, {**reported(r), "mi": d.mutual_information.mean(), "tc": total_correlation,
                      "dim_kl": d.dimension_kl.mean()}


# ---- DIP-VAE: moments of the aggregate posterior pulled to the prior's (Kumar et al. 2018) ----------

def dip_covariance(q_z: Distribution, kind: str, whole: Whole = one_process) -> Tensor:
    """[k, k]: Cov_x[μ(x)] over the batch (kind "i", Kumar et al. 2018, eq. 6) or E_x[Σ(x)] + Cov_x[μ(x)],
    the covariance of the aggregate posterior over the batch ("ii", eq. 7; by the law of total
    covariance). Covariances over the B examples divide by B: they are the batch's own moments."""
    if not (is_diagonal_normal(q_z) or isinstance(q_z, MultivariateNormal)):
        raise VaekitError(f"objective 'dip-vae-{'1' if kind == 'i' else '2'}' needs a Gaussian Q(z|x) (diagonal or full covariance), "
                          f"for its mean and covariance; this model has Q = {type(q_z).__name__}")
    mu = whole(q_z.mean)  # [B, k], the global batch
    centred = mu - mu.mean(0)
    cov = (centred.unsqueeze(-1) * centred.unsqueeze(-2)).mean(0)  # not a matmul: --precision bf16 leaves it float32
    if kind == "ii":
        sigma = q_z.covariance_matrix if isinstance(q_z, MultivariateNormal) else torch.diag_embed(q_z.variance)
        cov = cov + whole(sigma).mean(0)
    return cov


def dip_penalties(q_z: Distribution, kind: str, whole: Whole = one_process) -> tuple[Tensor, Tensor]:
    """(Σ_{i≠j} C_ij², Σ_i (C_ii − 1)²) for C = `dip_covariance(q_z, kind)`: the off-diagonal and diagonal
    penalties that DIP-VAE weights by λ_od and λ_d (Kumar et al. 2018, eqs. 6-7)."""
    cov = dip_covariance(q_z, kind, whole)
    diag = cov.diagonal()
    return cov.pow(2).sum() - diag.pow(2).sum(), (diag - 1).pow(2).sum()


class DIPVAE(Objective):
    """DIP-VAE (Kumar et al. 2018): ELBO − λ_od Σ_{i≠j} C_ij² − λ_d Σ_i (C_ii − 1)² for C = `dip_covariance`
    of `kind` ("i" or "ii"). λ_d by default 10·λ_od for DIP-VAE-I and λ_od for II (§5); λ_od = 10, the
    middle of Locatello et al. (2019)'s sweep 1-50."""

    kind = "i"

    def __init__(self, num_samples: NumSamples = 1, kl: KL = "auto", estimator: Estimator = "reparameterization",
                 lambda_od: Annotated[float, Setting("λ_od, weight of Σ_{i≠j} C_ij² (Kumar et al. 2018)", at_least=0,
                                                     flag="--dip-lambda-od")] = 10.0,
                 lambda_d: Annotated[float | None, Setting("λ_d, weight of Σ_i (C_ii − 1)²; none: 10·λ_od for dip-vae-1, "
                                                           "λ_od for dip-vae-2", at_least=0, flag="--dip-lambda-d")] = None):
        super().__init__()
        self.num_samples, self.kl, self.estimator = num_samples, kl, estimator
        self.lambda_od = lambda_od
        self.lambda_d = lambda_d if lambda_d is not None else (10.0 if self.kind == "i" else 1.0) * lambda_od

    def loss(self, model, x: Tensor, draw: Draw, progress: float | Tensor, whole: Whole = one_process):
        q_z = model.posterior(x)
        r = elbo(model, x, q_z=q_z, kl=self.kl, estimator=self.estimator, z=draw(q_z, self.num_samples, self.estimator))
        off, diag = dip_penalties(q_z, self.kind, whole)
        loss = -r.surrogate.mean() + self.lambda_od * off + self.lambda_d * diag
        return loss, {**reported(r), "dip_off_diagonal": off.detach(), "dip_diagonal": diag.detach()}


@OBJECTIVES.register("dip-vae-1")
class DIPVAE1(DIPVAE):
    """DIP-VAE-I (Kumar et al. 2018): ELBO − λ_od Σ_{i≠j} C_ij² − λ_d Σ_i (C_ii − 1)², C = Cov[μ(x)]

    --dip-lambda-od, --dip-lambda-d. Decorrelates the encoder's means over the batch and scales each
    to unit variance: the aggregate posterior's second moments matched to N(0, I)'s, without the TC's
    density estimate."""

    kind = "i"


@OBJECTIVES.register("dip-vae-2")
class DIPVAE2(DIPVAE):
    """DIP-VAE-II (Kumar et al. 2018): as DIP-VAE-I with C = E[Σ(x)] + Cov[μ(x)], the aggregate's covariance

    --dip-lambda-od, --dip-lambda-d."""

    kind = "ii"


# ---- capacity: the KL held to a rising target (Burgess et al. 2018) --------------------------------

def capacity_target(progress: float | Tensor, capacity_max: float, epochs: float) -> float | Tensor:
    """C(t) = C_max · min(1, t / epochs) nats at t epochs of training (C_max at once without a ramp)."""
    if epochs <= 0:
        return capacity_max
    if isinstance(progress, Tensor):
        return capacity_max * torch.clamp(progress / epochs, max=1.0)
    return capacity_max * min(1.0, progress / epochs)


@OBJECTIVES.register("capacity")
class Capacity(Objective):
    """capacity-annealed β-VAE (Burgess et al. 2018): reconstruction − γ·abs(KL − C), C rising to --capacity-max

    C rises linearly from 0 to --capacity-max nats over --capacity-epochs; --gamma weighs the penalty
    (eq. 8). KL is the batch mean: the capacity is the code's rate E_x KL(Q ‖ p), not each example's
    (an absolute value per example would pin every example to C). z is reparameterized. γ = 1000 is
    Burgess et al.'s on dSprites: Adam's steps do not depend on the loss's scale, and γ only has to
    exceed what a nat of KL buys in reconstruction (about 1 near the ELBO's optimum)."""

    def __init__(self, num_samples: NumSamples = 1, kl: KL = "auto", gamma: Gamma = 1000.0,
                 capacity_max: Annotated[float, Setting("C_max, the KL target in nats that C rises to (25: Burgess "
                                                        "et al.'s dSprites)", at_least=0)] = 25.0,
                 capacity_epochs: Annotated[float, Setting("C rises linearly from 0 to C_max over this many epochs "
                                                           "(0: C_max from the start)", at_least=0)] = 25.0):
        super().__init__()
        self.num_samples, self.kl, self.gamma = num_samples, kl, gamma
        self.capacity_max, self.capacity_epochs = capacity_max, capacity_epochs

    def loss(self, model, x: Tensor, draw: Draw, progress: float | Tensor, whole: Whole = one_process):
        q_z = model.posterior(x)
        r = elbo(model, x, q_z=q_z, kl=self.kl, z=draw(q_z, self.num_samples, "reparameterization"))
        target = torch.as_tensor(capacity_target(progress, self.capacity_max, self.capacity_epochs),
                                 dtype=r.kl.dtype, device=r.kl.device)
        loss = -(r.reconstruction.mean() - self.gamma * (r.kl.mean() - target).abs())
        return loss, {**reported(r), "capacity": target.detach()}
