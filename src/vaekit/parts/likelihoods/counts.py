"""Counts: whole numbers ≥ 0, used unscaled (support "count"): Poisson, and the negative binomial with a
learned dispersion per dimension.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, NegativeBinomial, Poisson

from ..registry import Setting
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


class Log1p(nn.Module):
    """x → log(1 + x): counts as an encoder's input (raw counts in the hundreds overflow its first layer: Q's
    log-variance reaches e^hundreds at the first step)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.log1p(x.clamp_min(0))


class CountObservation(Likelihood):
    """A count likelihood's head. `data_scale`: counts in the hundreds meet a network made for values near 1 in
    both directions, so the encoder sees log(1 + x) and the log-rate (or log-mean) is g(z) plus a learned offset
    per dimension that starts at the log of the training mean (`initialize`); without it (vaekit < 0.4) raw
    counts go in and the rate starts at 1, which on the Frey faces (8–238) overflows within three steps."""

    support = "count"

    def __init__(self, data_dim: int, data_scale: bool = True):
        super().__init__()
        self.data_scale = data_scale
        if data_scale:
            self.offset = nn.Parameter(torch.zeros(data_dim))

    def encoder_input(self) -> nn.Module | None:
        return Log1p() if self.data_scale else None

    @torch.no_grad()
    def initialize(self, mean: Tensor) -> None:
        """Start the rates at the training split's mean counts [D] (a dimension always 0 at 10⁻³)."""
        if self.data_scale:
            self.offset.copy_(mean.to(self.offset).clamp_min(1e-3).log())

    def log_rate(self, h: Tensor) -> Tensor:
        return h + self.offset.to(h.dtype) if self.data_scale else h


class PoissonObservation(CountObservation):
    def forward(self, h: Tensor) -> Distribution:
        return Independent(PoissonLogRate(self.log_rate(h), self.validate_args), 1, validate_args=self.validate_args)


class NegativeBinomialObservation(CountObservation):
    """log μ from the decoder, log r learned per dimension (scVI's per-gene dispersion; Lopez et al. 2018),
    initially r = 1."""

    def __init__(self, data_dim: int, data_scale: bool = True):
        super().__init__(data_dim, data_scale)
        self.log_total_count = nn.Parameter(torch.zeros(data_dim))

    def learned(self) -> dict[str, Tensor]:
        return {"total count r": self.log_total_count.detach().exp()}

    def forward(self, h: Tensor) -> Distribution:
        log_r = self.log_total_count.to(h.dtype).expand_as(h)
        return Independent(NegativeBinomialLogMean(self.log_rate(h), log_r, self.validate_args), 1,
                           validate_args=self.validate_args)


DataScale = Annotated[bool, Setting("count likelihoods: the encoder sees log(1 + x) and the log-rate starts at the log "
                                    "of the training mean per dimension (a learned offset); false: raw counts in, "
                                    "rates from 1, as vaekit < 0.4")]


@LIKELIHOODS.register("poisson")
def poisson(data_dim: int, data_scale: DataScale = True) -> Likelihood:
    """Poisson(e^g(z)) per value: counts, unscaled"""
    return PoissonObservation(data_dim, data_scale)


@LIKELIHOODS.register("negative-binomial")
def negative_binomial(data_dim: int, data_scale: DataScale = True) -> Likelihood:
    """negative binomial, mean e^g(z), a learned total count r per dimension: overdispersed counts"""
    return NegativeBinomialObservation(data_dim, data_scale)
