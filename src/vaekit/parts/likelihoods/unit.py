"""Grey levels in [0, 1] as given, without binarization: the continuous Bernoulli CB(λ), λ = sigmoid(η)
(Loaiza-Ganem & Cunningham 2019), support "unit".

Each head returns `Independent(base, 1)` over the last dimension, so `log_prob` is one value per
example in nats, with every normalizing constant; `mean` is E[x|z] (what `decode` returns).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, constraints

from ..distributions import softplus
from .base import LIKELIHOODS, Likelihood

LOG_2 = math.log(2.0)
CB_BAND = 0.3  # |η| below which log C uses its Taylor series (see cb_log_norm)
CB_MEAN_BAND = 0.5  # |η| below which the mean does (see cb_mean)


def cb_log_norm(eta: Tensor) -> Tensor:
    """log C(λ) of the continuous Bernoulli at logits η, C(λ) = 2 artanh(1 − 2λ)/(1 − 2λ) = η / tanh(η/2).

    Written in η, C needs no λ = sigmoid(η): torch's ContinuousBernoulli works in probabilities clamped
    to [ε, 1 − ε], which in float32 freezes C beyond |η| ≈ 16 (0.23 nats per value wrong at |η| = 20,
    1.1 at 50). η / tanh(η/2) is a quotient of two accurate factors, but its gradient, 1/η − 1/sinh(η),
    cancels near 0 (an error of ~10⁻⁷/|η|), so |η| < CB_BAND uses the series
    log 2 + η²/12 − 7η⁴/1440 + 31η⁶/90720 − 127η⁸/4838400 + 73η¹⁰/34214400 − 1414477η¹²/7846046208000
    + 8191η¹⁴/523069747200 (next term 16931177η¹⁶/12194997534720000: < 10⁻¹⁷ in the band).
    """
    small = eta.abs() < CB_BAND
    safe = torch.where(small, torch.ones_like(eta), eta)
    e2 = eta * eta
    taylor = LOG_2 + e2 * (1 / 12 - e2 * (7 / 1440 - e2 * (31 / 90720 - e2 * (127 / 4838400 - e2 * (
        73 / 34214400 - e2 * (1414477 / 7846046208000 - e2 * (8191 / 523069747200)))))))
    return torch.where(small, taylor, torch.log(safe / torch.tanh(safe / 2)))


def cb_mean(eta: Tensor) -> Tensor:
    """E[x] of CB(λ) at logits η: λ/(2λ − 1) + 1/(2 artanh(1 − 2λ)) = 1/(1 − e^−η) − 1/η, NOT λ.

    The two terms are each ≈ 1/η near 0 (an error of ~10⁻⁷/|η| in float32), so |η| < CB_MEAN_BAND uses
    ½ + η/12 − η³/720 + η⁵/30240 − η⁷/1209600 + η⁹/47900160 − 691η¹¹/1307674368000 (next term
    η¹³/74724249600: < 2·10⁻¹⁵ in the band)."""
    small = eta.abs() < CB_MEAN_BAND
    safe = torch.where(small, torch.ones_like(eta), eta)
    e2 = eta * eta
    taylor = 0.5 + eta * (1 / 12 - e2 * (1 / 720 - e2 * (1 / 30240 - e2 * (1 / 1209600 - e2 * (
        1 / 47900160 - e2 * (691 / 1307674368000))))))
    return torch.where(small, taylor, -1 / torch.expm1(-safe) - 1 / safe)


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
        return value * eta - softplus(eta) + cb_log_norm(eta)

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


class ContinuousBernoulliObservation(Likelihood):
    """x|z ~ CB(sigmoid(h)) per value in [0, 1]: grey levels without binarization."""

    support = "unit"

    def forward(self, h: Tensor) -> Distribution:
        return Independent(ContinuousBernoulliLogits(h, self.validate_args), 1, validate_args=self.validate_args)


@LIKELIHOODS.register("continuous-bernoulli")
def continuous_bernoulli() -> Likelihood:
    """continuous Bernoulli CB(λ) per value in [0, 1] (Loaiza-Ganem & Cunningham 2019): grey levels as given; mean ≠ λ"""
    return ContinuousBernoulliObservation()
