"""The ELBO and the importance-weighted bound as training objectives (`--objective elbo|iwae`)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import OBJECTIVES, Draw
from .estimators import elbo, iwae


@OBJECTIVES.register("elbo")
def elbo_objective(model, x: Tensor, tc: Any, beta: float | Tensor, sample: Draw):
    """the ELBO (Kingma & Welling 2013): --num-samples, --beta, --kl, --estimator"""
    q_z = model.posterior(x)
    z = sample(q_z, tc.num_samples, tc.estimator)
    r = elbo(model, x, q_z=q_z, kl=tc.kl, beta=beta, estimator=tc.estimator, z=z)
    return -r.surrogate.mean(), {"elbo": r.elbo.mean(), "reconstruction": r.reconstruction.mean(), "kl": r.kl.mean()}


@OBJECTIVES.register("iwae")
def iwae_objective(model, x: Tensor, tc: Any, beta: float | Tensor, sample: Draw):
    """the importance-weighted bound L_k (Burda et al. 2016): --train-k, --dreg"""
    q_z = model.posterior(x)
    r = iwae(model, x, tc.train_k, q_z=q_z, dreg=tc.dreg, z=sample(q_z, tc.train_k, "reparameterization"))
    return -r.surrogate.mean(), {f"iwae{tc.train_k}": r.bound.mean()}
