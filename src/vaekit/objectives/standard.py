"""The ELBO and the importance-weighted bound as training objectives (`--objective elbo|iwae`)."""

from __future__ import annotations

from typing import Annotated

from torch import Tensor

from ..parts.registry import Setting
from .base import (
    KL,
    OBJECTIVES,
    Draw,
    Estimator,
    NumSamples,
    Objective,
    Warmup,
    Whole,
    one_process,
    reported,
    warmup_ramp,
)
from .estimators import elbo, iwae

Beta = Annotated[float, Setting("KL weight in the training objective only; the reported ELBO is β = 1", at_least=0)]


@OBJECTIVES.register("elbo")
class ELBOObjective(Objective):
    """the ELBO (Kingma & Welling 2013): --num-samples, --beta, --kl-warmup-epochs, --kl, --estimator

    Minimizes −(reconstruction − β·KL) with β warmed up linearly over `kl_warmup_epochs`; reports the
    true ELBO (β = 1) at the same draws."""

    def __init__(self, num_samples: NumSamples = 1, kl: KL = "auto", estimator: Estimator = "reparameterization",
                 beta: Beta = 1.0, kl_warmup_epochs: Warmup = 0.0):
        super().__init__()
        self.num_samples, self.kl, self.estimator = num_samples, kl, estimator
        self.beta, self.kl_warmup_epochs = beta, kl_warmup_epochs

    def loss(self, model, x: Tensor, draw: Draw, progress: float | Tensor, whole: Whole = one_process):
        q_z = model.posterior(x)
        z = draw(q_z, self.num_samples, self.estimator)
        beta = self.beta * warmup_ramp(progress, self.kl_warmup_epochs)
        r = elbo(model, x, q_z=q_z, kl=self.kl, beta=beta, estimator=self.estimator, z=z)
        return -r.surrogate.mean(), reported(r)


@OBJECTIVES.register("iwae")
class IWAEObjective(Objective):
    """the importance-weighted bound L_k (Burda et al. 2016): --train-k, --dreg"""

    def __init__(self, k: Annotated[int, Setting("importance samples per example", above=0, flag="--train-k")] = 1,
                 dreg: Annotated[bool, Setting("doubly reparameterized encoder gradients (Tucker et al. 2018)")] = False):
        super().__init__()
        self.k, self.dreg = k, dreg

    def loss(self, model, x: Tensor, draw: Draw, progress: float | Tensor, whole: Whole = one_process):
        q_z = model.posterior(x)
        r = iwae(model, x, self.k, q_z=q_z, dreg=self.dreg, z=draw(q_z, self.k, "reparameterization"))
        return -r.surrogate.mean(), {f"iwae{self.k}": r.bound.mean()}
