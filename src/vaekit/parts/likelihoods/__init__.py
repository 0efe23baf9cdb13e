"""Observation models p(x|z), one module per support of the data; importing this package registers them all
(in this order: the order of `--likelihood`'s choices and the README's table)."""

# isort: off
from . import binary, real, unit, eight_bit, counts, table  # noqa: F401  (registration, in this order)
# isort: on
from .base import LIKELIHOODS, SUPPORTS, Likelihood, likelihood_support
from .binary import BernoulliLogits, BernoulliObservation
from .counts import NegativeBinomialLogMean, NegativeBinomialObservation, PoissonLogRate, PoissonObservation
from .eight_bit import (
    EIGHT_BIT,
    LEVELS,
    Categorical256,
    CategoricalObservation,
    DiscretizedLogistic,
    DiscretizedLogisticObservation,
    discretized_logistic_log_prob,
    discretized_logistic_mean,
)
from .real import GaussianObservation, LearnedGaussianObservation
from .table import MixedTable, TableInput, TableObservation
from .unit import ContinuousBernoulliLogits, ContinuousBernoulliObservation, cb_log_norm, cb_mean

__all__ = [
    "EIGHT_BIT", "LEVELS", "LIKELIHOODS", "SUPPORTS", "BernoulliLogits", "BernoulliObservation", "Categorical256",
    "CategoricalObservation", "ContinuousBernoulliLogits", "ContinuousBernoulliObservation", "DiscretizedLogistic",
    "DiscretizedLogisticObservation", "GaussianObservation", "LearnedGaussianObservation", "Likelihood", "MixedTable",
    "NegativeBinomialLogMean", "NegativeBinomialObservation", "PoissonLogRate", "PoissonObservation", "TableInput", "TableObservation", "cb_log_norm",
    "cb_mean", "discretized_logistic_log_prob", "discretized_logistic_mean", "likelihood_support",
]
