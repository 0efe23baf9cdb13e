"""Priors p(z) as modules the VAE owns: `prior()` returns the distribution, so a prior can have
parameters (learned by the same optimizer) and can see the encoder. Registered by name (`--prior`).

A prior may also offer pictures of itself: `pictures()` → {name: (images [N, D], caption)}, which
`report.plot_run` draws for any part that has the method (the VampPrior's pseudo-inputs).
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily, MultivariateNormal

from ..errors import VaekitError
from .distributions import LOG_2PI, Part, diagonal_normal, is_diagonal_normal
from .registry import MAX_COUNT, Registry, Setting

PRIORS = Registry("prior")


class StandardNormal(Part):
    """p(z) = N(0, I_k), the seed's prior. Buffers, not constants: they follow .to(device/dtype)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        if isinstance(latent_dim, bool) or not hasattr(latent_dim, "__index__") or not 1 <= latent_dim <= MAX_COUNT:
            raise VaekitError(f"StandardNormal: latent_dim must be a whole number ≥ 1, got {latent_dim!r:.40}")
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


class Mixture(MixtureSameFamily):
    """Σ_c π_c p_c(z) for components of one family with batch shape [K]: `MixtureSameFamily`, with a
    `log_prob` and `sample` that scale to hundreds of components when the components are diagonal
    Gaussians (or, for `sample`, full-covariance ones); any other family gets torch's own.

    torch's `log_prob` holds [N, K, k] differences and its `sample` draws every component for every
    draw, [n, K, k]: 1.6 GB for the 20 000 draws a traversal picture takes at K = 500, k = 40.
    """

    def log_prob(self, z: Tensor) -> Tensor:
        comp = self.component_distribution
        if not (is_diagonal_normal(comp) and len(comp.batch_shape) == 1):
            return super().log_prob(z)
        if self._validate_args:
            self._validate_sample(z)
        return diagonal_mixture_log_prob(z, self.mixture_distribution.logits, comp.base_dist.loc, comp.base_dist.scale)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        comp = self.component_distribution
        if len(comp.batch_shape) != 1 or not (is_diagonal_normal(comp) or isinstance(comp, MultivariateNormal)):
            return super().sample(sample_shape)
        with torch.no_grad():
            c = self.mixture_distribution.sample(sample_shape)  # which component each draw comes from
            if isinstance(comp, MultivariateNormal):
                return MultivariateNormal(comp.loc[c], scale_tril=comp.scale_tril[c], validate_args=False).sample()
            return torch.normal(comp.base_dist.loc[c], comp.base_dist.scale[c])


def diagonal_mixture_log_prob(z: Tensor, logits: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """log Σ_c π_c N(z; μ_c, diag σ_c²) with π = softmax(logits): z [..., k], logits [K], loc and scale
    [K, k] → [...].

    Each −½ Σ_j (z_j − μ_cj)²/σ_cj² + log π_c + const expands into one matmul of [z², z, 1] [..., 2k + 1]
    with a [2k + 1, K] matrix: memory [..., K] instead of torch's [..., K, k], and ~40× faster at K = 500
    on CPU. The expansion cancels large terms (float32 would be 1e-3 nats off at σ ≈ 0.1), so it runs
    in float64 (except on MPS, which has none) on z and μ centred on the mean μ, and is returned in z's dtype.
    """
    wide = torch.float64 if z.device.type != "mps" else z.dtype
    zc, logits, loc, scale = (t.to(wide) for t in (z, logits, loc, scale))
    centre = loc.mean(0).detach()
    zc, mc = zc - centre, loc - centre
    precision = scale.pow(-2)
    log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * LOG_2PI
    bias = torch.log_softmax(logits, -1) - 0.5 * (mc.pow(2) * precision).sum(-1) - log_norm
    weights = torch.cat([-0.5 * precision, mc * precision, bias[:, None]], 1)  # [K, 2k + 1]
    features = torch.cat([zc.pow(2), zc, torch.ones_like(zc[..., :1])], -1)  # [..., 2k + 1]
    return torch.logsumexp(features @ weights.T, -1).to(z.dtype)


class VampPrior(Part):
    """p(z) = (1/K) Σ_k Q(z|u_k): the encoder's own posterior at K learned pseudo-inputs u_k [K, D]
    (Tomczak & Welling 2018, "VAE with a VampPrior", the "variational mixture of posteriors" prior).

    The encoder is the VAE's, shared, not owned: it is kept in a tuple, so it is no submodule of the
    prior and its weights appear once in `state_dict()`/`parameters()` (under `encoder.`), move with
    the VAE's `.to()` and are trained by its optimizer, through both Q(z|x) and p(z). The prior's own
    parameter is `pseudo_inputs`. Give it the encoder of the VAE it goes into: an encoder no module
    owns would be neither trained nor saved.

    Q(z|u) may be any family the encoder returns (batch shape [K], event shape [k]): a diagonal
    Gaussian gets `Mixture`'s [N, K]-memory log-density, a full covariance (`--posterior full`)
    MixtureSameFamily's own. No closed-form KL: the ELBO takes the Monte Carlo KL.

    Pseudo-inputs live in data space, flat like the encoder's input, initialised at random, each
    pixel N(`init_mean`, `init_std`²) = N(0.05, 0.01²) as in the authors' code for MNIST (a build does
    not see the training data, so there is no initialisation from data), and passed through a
    hardtanh to `bounds` = [0, 1] (the paper's), so they stay images the encoder could be shown;
    `bounds=None` leaves them unbounded, for real-valued (e.g. standardized) data.
    """

    def __init__(self, encoder: nn.Module, data_dim: int, components: int,
                 bounds: tuple[float, float] | None = (0.0, 1.0), init_mean: float = 0.05, init_std: float = 0.01):
        super().__init__()
        if components < 1:
            raise ValueError(f"a VampPrior needs at least one pseudo-input, got {components}")
        self.pseudo_inputs = nn.Parameter(init_mean + init_std * torch.randn(components, data_dim))
        self.bounds = bounds
        self._encoder = (encoder,)  # a tuple hides it from nn.Module: the VAE owns the encoder, once

    @property
    def encoder(self) -> nn.Module:
        return self._encoder[0]

    def inputs(self) -> Tensor:
        """The pseudo-inputs u_k as the encoder sees them: [K, D], within `bounds`."""
        return self.pseudo_inputs if self.bounds is None else self.pseudo_inputs.clamp(*self.bounds)

    def forward(self) -> Distribution:
        q_u = self.encoder(self.inputs())
        uniform = Categorical(logits=self.pseudo_inputs.new_zeros(self.pseudo_inputs.shape[0]),
                              validate_args=self.validate_args)
        return Mixture(uniform, q_u, validate_args=self.validate_args)

    @torch.no_grad()
    def pictures(self) -> dict[str, tuple[Tensor, str]]:
        k = self.pseudo_inputs.shape[0]
        caption = (f"The prior's learned pseudo-inputs u_k (of K = {k}): p(z) is the mean of the encoder's "
                   "Q(z|u_k) (Tomczak & Welling 2018).")
        return {"pseudo_inputs": (self.inputs().detach(), caption)}


class LabelGaussian(Part):
    """p(z|y) = N(μ_y, diag σ_y²): a learned Gaussian per label y, the conditional prior of a conditional
    VAE (Sohn et al. 2015, whose prior network p(z|x) here sees only the label). `forward(c)` takes the
    one-hot context c(y) [B, C] and gives batch shape [B]; every label starts at N(0, I). Gaussian
    against a diagonal Q: the ELBO keeps the closed-form KL."""

    conditional = True  # `prior(context)`: a conditional VAE's `given(y)` passes the labels' context

    def __init__(self, latent_dim: int, classes: int):
        super().__init__()
        self.latent_dim = latent_dim  # k, known without the labels
        self.means = nn.Parameter(torch.zeros(classes, latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(classes, latent_dim))

    def forward(self, context: Tensor | None = None) -> Distribution:
        if context is None:
            raise VaekitError("p(z|y) needs the labels: use model.given(y).prior()")
        return diagonal_normal(context @ self.means, (context @ self.log_scales).exp(), self.validate_args)


@PRIORS.register("standard")
def standard(latent_dim: int) -> nn.Module:
    """N(0, I): the seed's prior"""
    return StandardNormal(latent_dim)


Components = Annotated[int, Setting("K, the components of a mixture prior (mog: Gaussians; vampprior: "
                                    "pseudo-inputs)", above=0, at_most=65536, flag="--prior-components")]


@PRIORS.register("mog")
def mog(latent_dim: int, components: Components = 10) -> nn.Module:
    """a mixture of K learned diagonal Gaussians (--prior-components K)"""
    return MixtureOfGaussians(latent_dim, components)


@PRIORS.register("vampprior")
def vampprior(encoder: nn.Module, data_dim: int, classes: int = 0, components: Components = 10) -> nn.Module:
    """VampPrior: mean of the encoder's Q at K learned pseudo-inputs (--prior-components K), init N(0.05, 0.01²)

    Pseudo-inputs clamped to [0, 1]; random initialisation only (a model is built before it sees data).
    See `VampPrior`."""
    if classes:
        raise VaekitError("a VampPrior's pseudo-inputs carry no label: a conditional VAE takes --prior standard, "
                          "mog or label")
    return VampPrior(encoder, data_dim, components)


@PRIORS.register("label")
def label(latent_dim: int, classes: int = 0) -> nn.Module:
    """p(z|y): a learned Gaussian per label (with --condition label; Sohn et al. 2015)"""
    if not classes:
        raise VaekitError("prior 'label' is p(z|y): it needs a conditional VAE (--condition label)")
    return LabelGaussian(latent_dim, classes)
