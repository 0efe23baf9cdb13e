"""Counts: whole numbers ≥ 0, used unscaled (support "count"): Poisson, and the negative binomial with a
learned dispersion per dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, NegativeBinomial, Poisson

from .base import LIKELIHOODS, Likelihood


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


@LIKELIHOODS.register("poisson")
def poisson() -> Likelihood:
    """Poisson(e^g(z)) per value: counts, unscaled"""
    return PoissonObservation()


@LIKELIHOODS.register("negative-binomial")
def negative_binomial(data_dim: int) -> Likelihood:
    """negative binomial, mean e^g(z), a learned total count r per dimension: overdispersed counts"""
    return NegativeBinomialObservation(data_dim)
