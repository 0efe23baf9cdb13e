"""Binary data: Bernoulli(logits) per value (grey levels binarized by the data layer, --binarize)."""

from __future__ import annotations

from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Independent

from ..distributions import softplus
from .base import LIKELIHOODS, Likelihood


class BernoulliLogits(Independent):
    """Independent Bernoulli(logits) over the last dimension, with a leaner `log_prob`.

    log p(x|l) = Σ_d [x_d·l_d − softplus(l_d)], exact for x ∈ {0, 1}: two elementwise passes over the
    [..., D] logits instead of binary_cross_entropy_with_logits' six (the importance-sampled NLL spends
    most of its non-matmul time here). `distributions.softplus`: exact in float64 too.
    """

    def __init__(self, logits: Tensor, validate_args: bool | None = None):
        super().__init__(Bernoulli(logits=logits, validate_args=validate_args), 1, validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self.base_dist._validate_sample(value)
        logits = self.base_dist.logits
        return (value * logits).sum(-1) - softplus(logits).sum(-1)


class BernoulliObservation(Likelihood):
    """x|z ~ Bernoulli(sigmoid(h)) per pixel, parameterized by logits (never a sigmoid then BCE)."""

    support = "binary"

    def forward(self, h: Tensor) -> Distribution:
        return BernoulliLogits(h, validate_args=self.validate_args)


@LIKELIHOODS.register("bernoulli")
def bernoulli() -> Likelihood:
    """Bernoulli(logits) per value: binary data, or grey levels binarized (--binarize)"""
    return BernoulliObservation()
