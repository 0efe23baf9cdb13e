"""FactorVAE (Kim & Mnih 2018): the total correlation estimated by a discriminator, trained beside the VAE.

TC(z) = KL(q(z) ‖ ∏_d q(z_d)) has no closed form. Kim & Mnih train a classifier D(z) to tell draws
of the aggregate posterior q(z) from draws of the product of its marginals (each latent dimension
permuted independently across the batch, `permute_dims`); at its optimum the logit of D is the
log density ratio log q(z) − log ∏_d q(z_d), so TC ≈ E_q(z)[logit D(z)] (the density-ratio trick).
The VAE maximizes the ELBO − γ·TC; D minimizes its cross-entropy. As in disentanglement_lib (whose
runs Locatello et al. 2019 report), both terms are computed on the same minibatch.

The discriminator is the objective's own trainable part (`parts`): built by `discriminator`, handed
to the objective, stepped by its own Adam parameter group with Kim & Mnih's β₁, β₂ = 0.5, 0.9, saved
in train_state.pt and never in model.safetensors. One backward pass serves both players: the VAE's
term sees D's weights detached and D's term sees z detached, so each gradient reaches only its own
parameters, and a step equals the paper's two optimizers stepping in turn (tests/test_factorvae.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .disentangling import Whole, one_process, reported
from .estimators import elbo


class Discriminator(nn.Module):
    """D: z [..., k] → logit [...], the log-odds that z came from q(z) rather than ∏_d q(z_d): an MLP
    with LeakyReLU(0.2) (Kim & Mnih 2018, App. A: six layers of 1000 units)."""

    adam: ClassVar[dict] = {"betas": (0.5, 0.9)}  # its Adam group's settings (Kim & Mnih 2018, App. A); lr follows --lr

    def __init__(self, latent_dim: int, hidden: Sequence[int] = (1000,) * 6):
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


def discriminator(latent_dim: int, tc: Any) -> Discriminator:
    """FactorVAE's trainable part: a `Discriminator` of --discriminator-hidden sizes."""
    return Discriminator(latent_dim, tc.discriminator_hidden)


def permute_dims(z: Tensor) -> Tensor:
    """z [..., B, k] with each latent dimension permuted independently across the batch (Kim & Mnih
    2018, Algorithm 2): from draws of q(z), draws of ∏_d q(z_d). Uses torch's generator."""
    order = torch.rand(z.shape, device=z.device).argsort(dim=-2)
    return z.gather(-2, order)


def discriminator_loss(critic: nn.Module, z: Tensor, z_permuted: Tensor) -> Tensor:
    """½ (−E log D(z) − E log(1 − D(z̃))): D's cross-entropy, q(z) labelled 1 and ∏_d q(z_d) 0."""
    return 0.5 * (F.softplus(-critic(z)).mean() + F.softplus(critic(z_permuted)).mean())


def factorvae_objective(model, x: Tensor, tc: Any, beta: float | Tensor, sample, parts: nn.Module,
                        whole: Whole = one_process):
    """FactorVAE (Kim & Mnih 2018): the ELBO − γ·TC, TC from a discriminator on permuted latents; --gamma, --discriminator-hidden

    Returns the VAE's loss plus the discriminator's: −(ELBO − γ·E[logit D(z)]) with D's weights
    detached, plus D's cross-entropy on z detached and on its permutation over the global batch (the
    same on every rank under torchrun). Reports the true ELBO, the TC estimate and D's loss.
    """
    q_z = model.posterior(x)
    z = sample(q_z, 1, "reparameterization")  # [1, B, k]
    r = elbo(model, x, q_z=q_z, kl=tc.kl, z=z)
    frozen = {name: p.detach() for name, p in parts.named_parameters()}
    total_correlation = functional_call(parts, frozen, (z,)).mean()
    everyone = whole(z.detach(), 1)
    critic_loss = discriminator_loss(parts, everyone, permute_dims(everyone))
    gamma = 40.0 if tc.gamma is None else tc.gamma  # the middle of Locatello et al. (2019)'s sweep 10-100
    loss = -r.surrogate.mean() + gamma * total_correlation + critic_loss
    return loss, {**reported(r), "tc": total_correlation.detach(), "discriminator": critic_loss.detach()}


factorvae_objective.parts = discriminator  # type: ignore[attr-defined]
