"""FactorVAE (Kim & Mnih 2018): the total correlation estimated by a discriminator, trained beside the VAE.

TC(z) = KL(q(z) ‖ ∏_d q(z_d)) has no closed form. Kim & Mnih train a classifier D(z) to tell draws
of the aggregate posterior q(z) from draws of the product of its marginals (each latent dimension
permuted independently across the batch, `permute_dims`); at its optimum the logit of D is the
log density ratio log q(z) − log ∏_d q(z_d), so TC ≈ E_q(z)[logit D(z)] (the density-ratio trick).
The VAE maximizes the ELBO − γ·TC; D minimizes its cross-entropy. As in disentanglement_lib (whose
runs Locatello et al. 2019 report), both terms are computed on the same minibatch.

The discriminator is the objective's own module: built by `FactorVAE.setup` once k is known, stepped by its own Adam parameter group with Kim & Mnih's β₁, β₂ = 0.5, 0.9, saved
in train_state.pt and never in model.safetensors. One backward pass serves both players: the VAE's
term sees D's weights detached and D's term sees z detached, so each gradient reaches only its own
parameters, and a step equals the paper's two optimizers stepping in turn (tests/test_factorvae.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..parts.registry import Setting
from .base import KL, OBJECTIVES, Draw, Objective, Whole, one_process, reported
from .estimators import elbo


class Discriminator(nn.Module):
    """D: z [..., k] → logit [...], the log-odds that z came from q(z) rather than ∏_d q(z_d): an MLP
    with LeakyReLU(0.2) (Kim & Mnih 2018, App. A: six layers of 1000 units)."""

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


def permute_dims(z: Tensor) -> Tensor:
    """z [..., B, k] with each latent dimension permuted independently across the batch (Kim & Mnih
    2018, Algorithm 2): from draws of q(z), draws of ∏_d q(z_d). Uses torch's generator."""
    order = torch.rand(z.shape, device=z.device).argsort(dim=-2)
    return z.gather(-2, order)


def discriminator_loss(critic: nn.Module, z: Tensor, z_permuted: Tensor) -> Tensor:
    """½ (−E log D(z) − E log(1 − D(z̃))): D's cross-entropy, q(z) labelled 1 and ∏_d q(z_d) 0."""
    return 0.5 * (F.softplus(-critic(z)).mean() + F.softplus(critic(z_permuted)).mean())


@OBJECTIVES.register("factorvae")
class FactorVAE(Objective):
    """FactorVAE (Kim & Mnih 2018): the ELBO − γ·TC, TC from a discriminator on permuted latents; --gamma, --discriminator-hidden

    The loss is the VAE's plus the discriminator's: −(ELBO − γ·E[logit D(z)]) with D's weights
    detached, plus D's cross-entropy on z detached and on its permutation over the global batch (the
    same on every rank under torchrun). Reports the true ELBO, the TC estimate and D's loss. γ = 40:
    the middle of Locatello et al. (2019)'s sweep 10-100.
    """

    adam: ClassVar[dict] = {"betas": (0.5, 0.9)}  # D's Adam group (Kim & Mnih 2018, App. A); lr follows --lr

    def __init__(self, kl: KL = "auto",
                 gamma: Annotated[float, Setting("γ, the weight of the total correlation (Kim & Mnih 2018)",
                                                 at_least=0)] = 40.0,
                 discriminator_hidden: Annotated[tuple[int, ...], Setting("the discriminator's hidden sizes (Kim & "
                                                                          "Mnih 2018: six of 1000)", above=0)]
                 = (1000,) * 6):
        super().__init__()
        self.kl, self.gamma, self.hidden = kl, gamma, discriminator_hidden
        self.discriminator: Discriminator | None = None

    def setup(self, model, dataset_size: int) -> None:
        self.discriminator = Discriminator(model.latent_dim, self.hidden).to(next(model.parameters()).device)

    def loss(self, model, x: Tensor, draw: Draw, progress: float | Tensor, whole: Whole = one_process):
        critic = self.discriminator
        q_z = model.posterior(x)
        z = draw(q_z, 1, "reparameterization")  # [1, B, k]
        r = elbo(model, x, q_z=q_z, kl=self.kl, z=z)
        frozen = {name: p.detach() for name, p in critic.named_parameters()}
        total_correlation = functional_call(critic, frozen, (z,)).mean()
        everyone = whole(z.detach(), 1)
        critic_loss = discriminator_loss(critic, everyone, permute_dims(everyone))
        loss = -r.surrogate.mean() + self.gamma * total_correlation + critic_loss
        return loss, {**reported(r), "tc": total_correlation.detach(), "discriminator": critic_loss.detach()}
