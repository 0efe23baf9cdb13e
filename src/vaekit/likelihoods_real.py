"""Observation models for data as recorded: grey levels in [0, 1], 8-bit pixels, counts.

Registered on `import vaekit` (likelihoods.py imports this module last). Each head returns
`Independent(base, 1)` over the last dimension, so `log_prob` is one value per example in nats, with
every normalizing constant; `mean` is E[x|z] (what `decode` returns) and `sample` draws x.

- continuous-bernoulli (support "unit"): CB(λ), λ = sigmoid(η), Loaiza-Ganem & Cunningham (2019).
- discretized-logistic, categorical (support "discrete256"): probability masses of the 8-bit values
  k/255, k = 0…255 (Salimans et al. 2017, PixelCNN++; van den Oord et al. 2016), so their NLL is
  already that of the 8-bit data: bits/dim = NLL / (D ln 2) needs no log 256 correction.
- poisson, negative-binomial (support "count"): whole numbers ≥ 0, used unscaled.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, NegativeBinomial, Poisson, constraints

from .likelihoods import LIKELIHOODS, Likelihood

LOG_2 = math.log(2.0)
CB_BAND = 0.3  # |η| below which log C uses its Taylor series (see cb_log_norm)
CB_MEAN_BAND = 0.5  # |η| below which the mean does (see cb_mean)
LEVELS = 255  # the 8-bit values are k/LEVELS, k = 0…LEVELS
LOG_SCALE_MIN = -10.0  # floor of the logistic's log s (data units [0, 1]): s = 4.5e-5, a bin is 87 s wide
LOG_SCALE_MAX = 10.0  # its ceiling: s = 2.2e4, a bin 1.8e-7 s wide (beyond e^88 the width would round to 0)


def cb_log_norm(eta: Tensor) -> Tensor:
    """log C(λ) of the continuous Bernoulli at logits η, C(λ) = 2 artanh(1 − 2λ)/(1 − 2λ) = η / tanh(η/2).

    Written in η, C needs no λ = sigmoid(η): torch's ContinuousBernoulli works in probabilities clamped
    to [ε, 1 − ε], which in float32 freezes C beyond |η| ≈ 16 (0.23 nats per value wrong at |η| = 20,
    1.1 at 50). η / tanh(η/2) is a quotient of two accurate factors, but its gradient, 1/η − 1/sinh(η),
    cancels near 0 (an error of ~10⁻⁷/|η|), so |η| < CB_BAND uses the series
    log 2 + η²/12 − 7η⁴/1440 + 62η⁶/181440 (next term 127η⁸/4838400: < 2·10⁻⁹ in the band).
    """
    small = eta.abs() < CB_BAND
    safe = torch.where(small, torch.ones_like(eta), eta)
    e2 = eta * eta
    taylor = LOG_2 + e2 * (1 / 12 - e2 * (7 / 1440 - e2 * (62 / 181440)))
    return torch.where(small, taylor, torch.log(safe / torch.tanh(safe / 2)))


def cb_mean(eta: Tensor) -> Tensor:
    """E[x] of CB(λ) at logits η: λ/(2λ − 1) + 1/(2 artanh(1 − 2λ)) = 1/(1 − e^−η) − 1/η, NOT λ.

    The two terms are each ≈ 1/η near 0 (an error of ~10⁻⁷/|η| in float32), so |η| < CB_MEAN_BAND uses
    ½ + η/12 − η³/720 + η⁵/30240 (next term η⁷/1209600: < 10⁻⁸ in the band)."""
    small = eta.abs() < CB_MEAN_BAND
    safe = torch.where(small, torch.ones_like(eta), eta)
    e2 = eta * eta
    taylor = 0.5 + eta * (1 / 12 - e2 * (1 / 720 - e2 / 30240))
    return torch.where(small, taylor, -1 / torch.expm1(-safe) - 1 / safe)


class EightBit(constraints.Constraint):
    """The values k/255, k = 0…255 (as float: 255x within 10⁻³ of a whole number, in [0, 1])."""

    is_discrete = True
    event_dim = 0

    def check(self, value: Tensor) -> Tensor:
        k = value * LEVELS
        return (value >= 0) & (value <= 1) & ((k - k.round()).abs() < 1e-3)


EIGHT_BIT = EightBit()


class ContinuousBernoulliLogits(Distribution):
    """CB(λ) on [0, 1] per value, λ = sigmoid(logits): p(x) = C(λ) λ^x (1 − λ)^(1−x), so
    log p(x) = x·η − softplus(η) + log C(λ) (`cb_log_norm`). Its mean is `cb_mean`, not λ."""

    arg_constraints: ClassVar[dict] = {"logits": constraints.real}
    support = constraints.unit_interval

    def __init__(self, logits: Tensor, validate_args: bool | None = None):
        self.logits = logits
        super().__init__(logits.shape, validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        eta = self.logits
        return value * eta - F.softplus(eta) + cb_log_norm(eta)

    @property
    def mean(self) -> Tensor:
        return cb_mean(self.logits)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """Inverse CDF, F(x) = (e^{ηx} − 1)/(e^η − 1), drawn for −|η| (x = log1p(u·expm1(−a))/(−a),
        which never overflows) and reflected, x → 1 − x, for η > 0. |η| is floored at 10⁻⁶ (the η → 0
        limit is U(0, 1); the floor moves x by < 10⁻⁶)."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            eta = self.logits.expand(shape)
            a = eta.abs().clamp_min(1e-6)
            y = torch.log1p(torch.rand(shape, dtype=eta.dtype, device=eta.device) * torch.expm1(-a)) / -a
            return torch.where(eta > 0, 1 - y, y)


def discretized_logistic_log_prob(value: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x = k/255) for y ~ Logistic(loc, s) rounded to the nearest k/255, the edge bins taking the
    tails (Salimans et al. 2017, eq. 2): log F(½/255) at k = 0, log(1 − F(254.5/255)) at k = 255.

    An interior bin uses σ(a) − σ(b) = σ(a)·σ(−b)·(1 − e^−(a−b)), a, b the bin's edges in units of s:
    log σ(a) − softplus(b) + log(−expm1(−(a − b))), with a − b = 1/(255 s) exactly. Every term is
    accurate in float32 however small the mass, so PixelCNN++'s fallback to density × width when the
    CDF difference is below 10⁻⁵ (an approximation) is not needed.
    """
    k = (value * LEVELS).round()
    inv_s = torch.exp(-log_scale)
    a = ((k + 0.5) / LEVELS - loc) * inv_s
    b = ((k - 0.5) / LEVELS - loc) * inv_s
    top, bottom = k >= LEVELS, k <= 0
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    log_width = torch.log(-torch.expm1(-inv_s / LEVELS))
    return (torch.where(top, zero, -F.softplus(-a)) + torch.where(bottom, zero, -F.softplus(b))
            + torch.where(top | bottom, zero, log_width))


def discretized_logistic_mean(loc: Tensor, log_scale: Tensor) -> Tensor:
    """E[x] = Σ_{k=1}^{255} P(x ≥ k/255)/255 = Σ_k σ((loc − (k − ½)/255)/s)/255: exact (no closed form
    for the rounded variable), summed bin edge by bin edge so memory stays that of loc."""
    inv_s = torch.exp(-log_scale)
    total = torch.zeros_like(loc)
    for k in range(1, LEVELS + 1):
        total = total + torch.sigmoid((loc - (k - 0.5) / LEVELS) * inv_s)
    return total / LEVELS


class DiscretizedLogistic(Distribution):
    """A logistic rounded to the 256 values k/255 per value (`discretized_logistic_log_prob`); log s
    clamped to [LOG_SCALE_MIN, LOG_SCALE_MAX] (PixelCNN++ floors it at −7 on its [−1, 1] scale)."""

    arg_constraints: ClassVar[dict] = {"loc": constraints.real, "log_scale": constraints.real}
    support = EIGHT_BIT

    def __init__(self, loc: Tensor, log_scale: Tensor, validate_args: bool | None = None):
        self.loc, self.log_scale = loc, log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        super().__init__(loc.shape, validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return discretized_logistic_log_prob(value, self.loc, self.log_scale)

    @property
    def mean(self) -> Tensor:
        return discretized_logistic_mean(self.loc, self.log_scale)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            y = self.loc + self.log_scale.exp() * torch.logit(u)  # u = 0 gives −inf: the bottom bin
            return (y * LEVELS).round().clamp(0, LEVELS) / LEVELS


class Categorical256(Distribution):
    """A free 256-way distribution over k/255 per value: logits [..., D, 256] (van den Oord et al. 2016)."""

    arg_constraints: ClassVar[dict] = {"logits": constraints.real}
    support = EIGHT_BIT

    def __init__(self, logits: Tensor, validate_args: bool | None = None):
        self.logits = logits
        super().__init__(logits.shape[:-1], validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        logits = self.logits.expand(*shape, LEVELS + 1)
        k = (value * LEVELS).round().long().expand(shape).unsqueeze(-1)
        return logits.gather(-1, k).squeeze(-1) - torch.logsumexp(logits, -1)

    @property
    def mean(self) -> Tensor:
        levels = torch.arange(LEVELS + 1, dtype=self.logits.dtype, device=self.logits.device) / LEVELS
        return torch.softmax(self.logits, -1) @ levels

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=self.logits, validate_args=False).sample(sample_shape)
            return k.to(self.logits.dtype) / LEVELS


class PoissonLogRate(Poisson):
    """Poisson(λ = e^η) from the log-rate η: log p(x) = x·η − e^η − log x!, in float64 (for counts of
    10⁴ the three terms are ~10⁵ each and float32 would keep ~0.01 nats of the difference)."""

    def __init__(self, log_rate: Tensor, validate_args: bool | None = None):
        self.log_rate = log_rate
        super().__init__(log_rate.exp(), validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        eta, x = self.log_rate.double(), value.double()
        return (x * eta - eta.exp() - torch.lgamma(x + 1)).to(self.log_rate.dtype)


class NegativeBinomialLogMean(NegativeBinomial):
    """NB with mean μ = e^η and total count r: torch's NegativeBinomial(r, logits = η − log r) (x
    successes before r failures; variance μ + μ²/r), its log-density in float64: lgamma(x + r) −
    lgamma(r) with r = 10⁴ is 10⁵ nats in float32 terms (0.008 nats per ulp)."""

    def __init__(self, log_mean: Tensor, log_total_count: Tensor, validate_args: bool | None = None):
        self.log_mean = log_mean
        super().__init__(log_total_count.exp(), logits=log_mean - log_total_count, validate_args=validate_args)

    @property
    def mean(self) -> Tensor:
        return self.log_mean.exp().expand(self.batch_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        r, logits, x = self.total_count.double(), self.logits.double(), value.double()
        log_p = r * F.logsigmoid(-logits) + x * F.logsigmoid(logits)
        return (log_p + torch.lgamma(x + r) - torch.lgamma(r) - torch.lgamma(x + 1)).to(self.logits.dtype)


class ContinuousBernoulliObservation(Likelihood):
    """x|z ~ CB(sigmoid(h)) per value in [0, 1]: grey levels without binarization."""

    support = "unit"

    def forward(self, h: Tensor) -> Distribution:
        return Independent(ContinuousBernoulliLogits(h, self.validate_args), 1, validate_args=self.validate_args)


class DiscretizedLogisticObservation(Likelihood):
    """h = (loc [D], log s [D]), the decoder's outputs in two blocks of D (a conv decoder: two channels)."""

    support = "discrete256"

    def out_features(self, data_dim: int) -> int:
        return 2 * data_dim

    def forward(self, h: Tensor) -> Distribution:
        loc, log_scale = h.chunk(2, dim=-1)
        return Independent(DiscretizedLogistic(loc, log_scale, self.validate_args), 1, validate_args=self.validate_args)


class CategoricalObservation(Likelihood):
    """h: 256 blocks of D logits (a conv decoder: 256 channels), one free distribution per value."""

    support = "discrete256"

    def out_features(self, data_dim: int) -> int:
        return (LEVELS + 1) * data_dim

    def forward(self, h: Tensor) -> Distribution:
        logits = h.unflatten(-1, (LEVELS + 1, -1)).movedim(-2, -1)  # [..., D, 256]
        return Independent(Categorical256(logits, self.validate_args), 1, validate_args=self.validate_args)


class PoissonObservation(Likelihood):
    support = "count"

    def forward(self, h: Tensor) -> Distribution:
        return Independent(PoissonLogRate(h, self.validate_args), 1, validate_args=self.validate_args)


class NegativeBinomialObservation(Likelihood):
    """log μ from the decoder, log r learned per dimension (scVI's per-gene dispersion; Lopez et al. 2018),
    initially r = 1."""

    support = "count"

    def __init__(self, data_dim: int):
        super().__init__()
        self.log_total_count = nn.Parameter(torch.zeros(data_dim))

    def forward(self, h: Tensor) -> Distribution:
        log_r = self.log_total_count.to(h.dtype).expand_as(h)
        return Independent(NegativeBinomialLogMean(h, log_r, self.validate_args), 1, validate_args=self.validate_args)


@LIKELIHOODS.register("continuous-bernoulli")
def continuous_bernoulli() -> Likelihood:
    """continuous Bernoulli CB(λ) per value in [0, 1] (Loaiza-Ganem & Cunningham 2019): grey levels as given; mean ≠ λ"""
    return ContinuousBernoulliObservation()


@LIKELIHOODS.register("discretized-logistic")
def discretized_logistic() -> Likelihood:
    """a logistic per value rounded to the 8-bit levels k/255, the edge bins taking the tails (Salimans et al. 2017)"""
    return DiscretizedLogisticObservation()


@LIKELIHOODS.register("categorical")
def categorical() -> Likelihood:
    """a 256-way softmax per value over the 8-bit levels k/255 (256·D decoder outputs)"""
    return CategoricalObservation()


@LIKELIHOODS.register("poisson")
def poisson() -> Likelihood:
    """Poisson(e^g(z)) per value: counts, unscaled"""
    return PoissonObservation()


@LIKELIHOODS.register("negative-binomial")
def negative_binomial(data_dim: int) -> Likelihood:
    """negative binomial, mean e^g(z), a learned total count r per dimension: overdispersed counts"""
    return NegativeBinomialObservation(data_dim)
