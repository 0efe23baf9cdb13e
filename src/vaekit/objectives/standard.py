"""The ELBO and the importance-weighted bound as training objectives (`--objective elbo|iwae`)."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from ..errors import VaekitError
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
from .estimators import ELBO, elbo, group_kl, iwae

Beta = Annotated[float, Setting("KL weight in the training objective only; the reported ELBO is β = 1", at_least=0)]
FreeBits = Annotated[float, Setting("free bits (Kingma et al. 2016): nats per group of latents (a stochastic layer) "
                                    "below which a group's batch-mean KL is not penalized (0: off)", at_least=0)]
Balance = Annotated[bool, Setting("KL balancing during the warm-up (NVAE, Vahdat & Kautz 2020, App. A): each group's "
                                  "KL weighted by its share of the KL per latent, so no group is switched off early")]


@OBJECTIVES.register("elbo")
class ELBOObjective(Objective):
    """the ELBO (Kingma & Welling 2013): --num-samples, --beta, --kl-warmup-epochs, --kl, --estimator

    Minimizes −(reconstruction − β·KL) with β warmed up linearly over `kl_warmup_epochs`; reports the
    true ELBO (β = 1) at the same draws."""

    def __init__(self, num_samples: NumSamples = 1, kl: KL = "auto", estimator: Estimator = "reparameterization",
                 beta: Beta = 1.0, kl_warmup_epochs: Warmup = 0.0, free_bits: FreeBits = 0.0,
                 kl_balance: Balance = False):
        super().__init__()
        self.num_samples, self.kl, self.estimator = num_samples, kl, estimator
        self.beta, self.kl_warmup_epochs = beta, kl_warmup_epochs
        self.free_bits, self.kl_balance = free_bits, kl_balance
        if (free_bits or kl_balance) and estimator != "reparameterization":
            raise VaekitError("free bits and KL balancing shape the reparameterized gradient: use "
                              "--estimator reparameterization with them")

    def loss(self, model, x: Tensor, draw: Draw, progress: float | Tensor, whole: Whole = one_process):
        q_z = model.posterior(x)
        z = draw(q_z, self.num_samples, self.estimator)
        beta = self.beta * warmup_ramp(progress, self.kl_warmup_epochs)
        if self.free_bits or self.kl_balance:
            return self._per_group(model, x, q_z, z, beta, whole)
        r = elbo(model, x, q_z=q_z, kl=self.kl, beta=beta, estimator=self.estimator, z=z)
        return -r.surrogate.mean(), reported(r)

    def _group_sizes(self, q_z, z: Tensor) -> Tensor:
        """[G] the groups' latent counts, made once on the device (the first, eager step), not per step: a
        host-to-device copy in the step costs a sync and cannot be captured in a CUDA graph."""
        sizes = getattr(self, "_sizes", None)
        if sizes is None or sizes.device != z.device:
            sizes = torch.tensor([float(d) for d in getattr(q_z, "layer_sizes", (z.shape[-1],))], device=z.device)
            self._sizes = sizes
        return sizes

    def _per_group(self, model, x: Tensor, q_z, z: Tensor, beta: float | Tensor, whole: Whole):
        """−E[log p(x|z)] + β Σ_g γ_g · max(λ, KL_g): KL_g the batch mean of group g's KL term, λ the free bits,
        γ_g NVAE's balancing weights while β < 1 (else 1). Which groups sit below λ and the weights are decided
        on the whole batch (every rank alike), so N processes take one process's gradient."""
        log_px = model.p_x_given_z(z).log_prob(x)  # [S, B]
        kls = group_kl(q_z, model.prior(), z)  # [G, S, B]
        local = kls.mean((1, 2))  # [G]: this rank's batch means, what the gradient flows through
        overall = whole(kls.detach().mean(1), 1).mean(-1)  # [G]: the whole batch's
        penalty = local
        if self.free_bits:  # a group under λ contributes the constant λ: no gradient pushes its KL lower
            penalty = torch.where(overall > self.free_bits, local, torch.full_like(local, self.free_bits))
        if self.kl_balance:
            gamma = (overall.abs() + 0.01) / self._group_sizes(q_z, z)
            gamma = gamma / gamma.mean()
            if isinstance(beta, Tensor):  # balanced only during the warm-up (a device tensor under graphs, compile)
                penalty = penalty * torch.where(beta < 1, gamma, torch.ones_like(gamma))
            elif beta < 1:
                penalty = penalty * gamma
        r = ELBO((log_px - kls.sum(0)).mean(0), log_px.mean(0), kls.sum(0).mean(0), log_px.mean(0))
        return -(log_px.mean() - beta * penalty.sum()), reported(r)


@OBJECTIVES.register("iwae")
class IWAEObjective(Objective):
    """the importance-weighted bound L_k (Burda et al. 2016): --train-k, --dreg"""

    def __init__(self, k: Annotated[int, Setting("importance samples per example", above=0, at_most=10_000,
                                                 flag="--train-k")] = 1,
                 dreg: Annotated[bool, Setting("doubly reparameterized encoder gradients (Tucker et al. 2018)")] = False):
        super().__init__()
        self.k, self.dreg = k, dreg

    def loss(self, model, x: Tensor, draw: Draw, progress: float | Tensor, whole: Whole = one_process):
        q_z = model.posterior(x)
        r = iwae(model, x, self.k, q_z=q_z, dreg=self.dreg, z=draw(q_z, self.k, "reparameterization"))
        return -r.surrogate.mean(), {f"iwae{self.k}": r.bound.mean()}
