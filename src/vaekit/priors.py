"""Priors p(z) as modules the VAE owns: `prior()` returns the distribution, so a prior can have
parameters (learned by the same optimizer) and can see the encoder. Registered by name (`--prior`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily

from .likelihoods import Part, diagonal_normal
from .registry import Registry

PRIORS = Registry("prior")


class StandardNormal(Part):
    """p(z) = N(0, I_k), the seed's prior. Buffers, not constants: they follow .to(device/dtype)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> Distribution:
        return diagonal_normal(self.loc, self.scale, self.validate_args)


class MixtureOfGaussians(Part):
    """p(z) = Σ_c π_c N(z; μ_c, diag σ_c²) with K learnable components (means, log-scales, weights).

    Initialised with means drawn from N(0, I), unit scales and equal weights, so at the start it is a
    broad cloud around the standard normal. There is no closed-form KL against it: the ELBO uses the
    Monte Carlo estimate E_Q[log Q(z) − log p(z)] (`kl="auto"` falls back to it).
    """

    def __init__(self, latent_dim: int, components: int):
        super().__init__()
        if components < 1:
            raise ValueError(f"a mixture needs at least one component, got {components}")
        self.latent_dim = latent_dim
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def forward(self) -> Distribution:
        v = self.validate_args
        return MixtureSameFamily(Categorical(logits=self.logits, validate_args=v),
                                 diagonal_normal(self.means, self.log_scales.exp(), v), validate_args=v)


@PRIORS.register("standard")
def standard(latent_dim: int) -> nn.Module:
    """N(0, I): the seed's prior"""
    return StandardNormal(latent_dim)


@PRIORS.register("mog")
def mog(latent_dim: int, components: int) -> nn.Module:
    """a mixture of K learned diagonal Gaussians (--prior-components K)"""
    return MixtureOfGaussians(latent_dim, components)
