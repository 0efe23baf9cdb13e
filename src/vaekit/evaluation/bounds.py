"""The bounds as the Python API offers them (`vaekit.elbo`, `vaekit.iwae`, `vaekit.iwae_bound`): the estimators
of `objectives.estimators`, their arguments checked first, so a wrong input is one `VaekitError` naming it (the
objectives call the estimators themselves, unchecked, inside the training step)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..errors import VaekitError
from ..objectives import estimators
from ..objectives.estimators import ELBO, ESTIMATORS, IWAE, KL_MODES
from .estimates import checked_examples

MAX_HELD = 1 << 30  # draws × examples × values a bound holds at once (4 GiB of float32); log_likelihood chunks


def _checked(model, x: Any, k: Any, name: str, z: Tensor | None, q_z: Distribution | None) -> tuple[Tensor, int]:
    """(x as the model's examples, k as an int), or one line: x and k as `checked_examples` takes them (x scored as
    it is: a Bernoulli model's x is 0 or 1), and no more draws than fit at once."""
    x = checked_examples(model, x, k, encoder=q_z is None, k_name=name)  # a given Q: no encoder needed (GenerativeModel)
    held = int(k) * x.shape[0] * x[0].numel()
    if z is None and held > MAX_HELD:
        raise VaekitError(f"{name} = {int(k):,} draws of {x.shape[0]:,} examples hold {held:,} values at once, more than "
                          f"{MAX_HELD:,}: use fewer, or vaekit.log_likelihood (it works through the draws in chunks)")
    return x, int(k)


def _given(model, x: Tensor, q_z: Any, z: Any, draws: int | None) -> Tensor | None:
    """A given Q (a torch Distribution over the model's latents, one per example) and given draws z [S, B, k] of
    it (S = `draws` where the bound fixes it), or one line: a z of [B, k] (what `q_z.rsample()` gives) made every
    example's bound the batch's, and a z of 3 draws passed for k = 5."""
    b, size = x.shape[0], getattr(model, "latent_dim", None)
    if q_z is not None:
        if not isinstance(q_z, Distribution):
            raise VaekitError(f"q_z must be a torch Distribution over z (model.posterior(x)), got {type(q_z).__name__}")
        if tuple(q_z.batch_shape) != (b,) or (size is not None and tuple(q_z.event_shape) != (size,)):
            raise VaekitError(f"q_z must have batch shape ({b},) and event shape ({size},): one Q(z|x) of the "
                              f"model's latents per example, got {tuple(q_z.batch_shape)} and {tuple(q_z.event_shape)}")
        try:
            mean = q_z.mean
        except NotImplementedError:  # a Q without a closed-form mean: its draws are checked where they are used
            mean = None
        if isinstance(mean, Tensor) and mean.dtype != x.dtype:
            raise VaekitError(f"q_z draws {str(mean.dtype).removeprefix('torch.')}, but the model computes in "
                              f"{str(x.dtype).removeprefix('torch.')}: build it from parameters of that type")
        if isinstance(mean, Tensor) and not bool(torch.isfinite(mean).all()):
            raise VaekitError("q_z's mean holds NaN or Inf")
        base = q_z.base_dist if isinstance(q_z, torch.distributions.Independent) else q_z
        try:  # a Normal's own scale: its stddev is √variance, +1 for a scale of −1
            spread = base.scale if isinstance(base, torch.distributions.Normal) else q_z.stddev
        except NotImplementedError:
            spread = None
        if isinstance(spread, Tensor) and not bool((torch.isfinite(spread) & (spread > 0)).all()):  # draws Inf/NaN
            raise VaekitError("q_z's standard deviation must be finite and > 0; it holds NaN, Inf or a value ≤ 0")
    if z is None:
        return None
    if not isinstance(z, Tensor):
        raise VaekitError(f"z must be a tensor of draws [S, {b}, {size}], got {type(z).__name__}")
    if z.dim() != 3 or z.shape[0] < 1 or z.shape[1] != b or (size is not None and z.shape[2] != size) or \
            (draws is not None and z.shape[0] != draws):
        raise VaekitError(f"z must hold draws [S, {b}, {size}] ({f'S = k = {draws}' if draws else 'S ≥ 1'}: "
                          f"q_z.rsample((S,))), got {tuple(z.shape)}")
    if not z.is_floating_point() or not bool(torch.isfinite(z).all()):
        raise VaekitError(f"z must be finite floating-point draws, got {str(z.dtype).removeprefix('torch.')}"
                          + (" holding NaN or Inf" if z.is_floating_point() else ""))
    return z.to(x.dtype)


def _said(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def elbo(model, x: Any, q_z: Distribution | None = None, num_samples: int = 1, kl: str = "auto", beta: float = 1.0,
         estimator: str = "reparameterization", z: Tensor | None = None) -> ELBO:
    """`objectives.estimators.elbo` (its documentation holds), its arguments checked first."""
    x, num_samples = _checked(model, x, num_samples, "num_samples", z, q_z)
    z = _given(model, x, q_z, z, None)
    if kl not in KL_MODES:
        raise VaekitError(f"kl must be one of {', '.join(KL_MODES)}, got {kl!r}")
    if estimator not in ESTIMATORS:
        raise VaekitError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise VaekitError(f"beta must be a finite number ≥ 0, got {beta!r}")
    try:
        return estimators.elbo(model, x, q_z, num_samples, kl, float(beta), estimator, z)
    except ValueError as e:  # a kl = "analytic" that has no closed form
        raise VaekitError(_said(e)) from None


def iwae_bound(model, x: Any, k: int, q_z: Distribution | None = None, z: Tensor | None = None) -> Tensor:
    """`objectives.estimators.iwae_bound` (its documentation holds), its arguments checked first."""
    x, k = _checked(model, x, k, "k", z, q_z)
    return estimators.iwae_bound(model, x, k, q_z, _given(model, x, q_z, z, k))


def iwae(model, x: Any, k: int, q_z: Distribution | None = None, dreg: bool = False, z: Tensor | None = None) -> IWAE:
    """`objectives.estimators.iwae` (its documentation holds), its arguments checked first."""
    x, k = _checked(model, x, k, "k", z, q_z)
    if not isinstance(dreg, bool):
        raise VaekitError(f"dreg must be True or False, got {dreg!r}")
    z = _given(model, x, q_z, z, k)
    try:
        return estimators.iwae(model, x, k, q_z, dreg, z)
    except (ValueError, AttributeError) as e:  # DReG on a Q whose parameters cannot be detached
        raise VaekitError(f"iwae: {_said(e)}") from None
