"""The bounds as the Python API offers them (`vaekit.elbo`, `vaekit.iwae`, `vaekit.iwae_bound`): the estimators
of `objectives.estimators`, their arguments checked first, so a wrong input is one `VaekitError` naming it (the
objectives call the estimators themselves, unchecked, inside the training step)."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor
from torch.distributions import Distribution

from ..errors import VaekitError
from ..objectives import estimators
from ..objectives.estimators import ELBO, ESTIMATORS, IWAE, KL_MODES
from .estimates import MAX_IMPORTANCE_SAMPLES, checked_examples

MAX_HELD = 1 << 30  # draws × examples × values a bound holds at once (4 GiB of float32); log_likelihood chunks


def _checked(model, x: Any, k: Any, name: str, z: Tensor | None, q_z: Distribution | None) -> tuple[Tensor, int]:
    """(x as the model's examples, k as an int), or one line: x as `checked_examples` takes it (scored as it is:
    a Bernoulli model's x is 0 or 1), k a whole number of draws, and no more draws than fit at once."""
    if isinstance(k, bool) or not hasattr(k, "__index__") or not 1 <= k <= MAX_IMPORTANCE_SAMPLES:
        raise VaekitError(f"{name} must be a whole number of draws from 1 to {MAX_IMPORTANCE_SAMPLES:,}, got {k!r}")
    x = checked_examples(model, x, encoder=q_z is None)  # a given Q: a GenerativeModel, without an encoder, will do
    held = int(k) * x.shape[0] * x[0].numel()
    if z is None and held > MAX_HELD:
        raise VaekitError(f"{name} = {int(k):,} draws of {x.shape[0]:,} examples hold {held:,} values at once, more than "
                          f"{MAX_HELD:,}: use fewer, or vaekit.log_likelihood (it works through the draws in chunks)")
    return x, int(k)


def elbo(model, x: Any, q_z: Distribution | None = None, num_samples: int = 1, kl: str = "auto", beta: float = 1.0,
         estimator: str = "reparameterization", z: Tensor | None = None) -> ELBO:
    """`objectives.estimators.elbo` (its documentation holds), its arguments checked first."""
    x, num_samples = _checked(model, x, num_samples, "num_samples", z, q_z)
    if kl not in KL_MODES:
        raise VaekitError(f"kl must be one of {', '.join(KL_MODES)}, got {kl!r}")
    if estimator not in ESTIMATORS:
        raise VaekitError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise VaekitError(f"beta must be a finite number ≥ 0, got {beta!r}")
    try:
        return estimators.elbo(model, x, q_z, num_samples, kl, float(beta), estimator, z)
    except ValueError as e:  # a kl = "analytic" that has no closed form, z of another count of draws
        raise VaekitError(str(e)) from None


def iwae_bound(model, x: Any, k: int, q_z: Distribution | None = None, z: Tensor | None = None) -> Tensor:
    """`objectives.estimators.iwae_bound` (its documentation holds), its arguments checked first."""
    x, k = _checked(model, x, k, "k", z, q_z)
    try:
        return estimators.iwae_bound(model, x, k, q_z, z)
    except ValueError as e:
        raise VaekitError(str(e)) from None


def iwae(model, x: Any, k: int, q_z: Distribution | None = None, dreg: bool = False, z: Tensor | None = None) -> IWAE:
    """`objectives.estimators.iwae` (its documentation holds), its arguments checked first."""
    x, k = _checked(model, x, k, "k", z, q_z)
    if not isinstance(dreg, bool):
        raise VaekitError(f"dreg must be True or False, got {dreg!r}")
    return estimators.iwae(model, x, k, q_z, dreg, z)
