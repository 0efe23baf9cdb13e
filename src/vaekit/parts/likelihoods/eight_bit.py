"""8-bit data: probability masses of the values k/255, k = 0…255, support "discrete256" — a discretized
logistic (Salimans et al. 2017, PixelCNN++) or a 256-way softmax (van den Oord et al. 2016). Their NLL is
already that of the 8-bit data: bits/dim = NLL / (D ln 2) needs no log 256 correction.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, constraints

from ..distributions import softplus
from .base import LIKELIHOODS, Likelihood

LEVELS = 255  # the 8-bit values are k/LEVELS, k = 0…LEVELS
LOG_SCALE_MIN = -10.0  # floor of the logistic's log s (data units [0, 1]): s = 4.5e-5, a bin is 87 s wide
LOG_SCALE_MAX = 10.0  # its ceiling: s = 2.2e4, a bin 1.8e-7 s wide (beyond e^88 the width would round to 0)


class EightBit(constraints.Constraint):
    """The values k/255, k = 0…255 (as float: 255x within 10⁻³ of a whole number, in [0, 1])."""

    is_discrete = True
    event_dim = 0

    def check(self, value: Tensor) -> Tensor:
        k = value * LEVELS
        return (value >= 0) & (value <= 1) & ((k - k.round()).abs() < 1e-3)


EIGHT_BIT = EightBit()

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
    return (torch.where(top, zero, -softplus(-a)) + torch.where(bottom, zero, -softplus(b))
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


@LIKELIHOODS.register("discretized-logistic")
def discretized_logistic() -> Likelihood:
    """a logistic per value rounded to the 8-bit levels k/255, the edge bins taking the tails (Salimans et al. 2017)"""
    return DiscretizedLogisticObservation()


@LIKELIHOODS.register("categorical")
def categorical() -> Likelihood:
    """a 256-way softmax per value over the 8-bit levels k/255 (256·D decoder outputs)"""
    return CategoricalObservation()
