"""The generative model p(x, z; θ) = p(z) p(x|z; θ), the encoder Q(z|x; φ, ψ), and the VAE joining them.

Seed §"Neural Network Parameterization": z ~ N(0, I_k), x|z ~ N(g(z; θ), σ²I) (or Bernoulli(logits=g)).
Seed §"Gaussian Q and the Encoder/Decoder": Q_i = N(q(x⁽ⁱ⁾; φ), diag(v(x⁽ⁱ⁾; ψ))²).
Every method returns torch distributions or per-example tensors; reducing over a batch is the caller's.
Shapes: x is [..., D] (flattened data), z is [..., k]; leading sample dimensions broadcast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent

from .likelihoods import diagonal_normal, make_observation
from .networks import ConvDecoderNet, ConvEncoderNet, mlp


def _image_shape(data_shape: Sequence[int] | None, data_dim: int) -> tuple[int, int, int]:
    if data_shape is None or len(data_shape) != 3:
        raise ValueError(f"arch='conv' needs image data of shape (C, H, W), got {data_shape} ({data_dim} values)")
    return tuple(data_shape)  # type: ignore[return-value]


def _widen(t: Tensor) -> Tensor:
    """A network output as float32 (a no-op unless autocast made it bf16/fp16)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _head(hidden: Sequence[int]) -> int:
    """The conv nets' fully connected layer: the last hidden size given, else 256."""
    return hidden[-1] if hidden else 256


class GenerativeModel(nn.Module):
    """p(z) = N(0, I_k) and p(x|z; θ) = observation(g(z; θ)), with g an MLP (`hidden=()`: linear)."""

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (400,),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        sigma: float = 1.0,
        init: str = "default",
        arch: str = "mlp",
        data_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.observation = make_observation(likelihood, data_dim, sigma)
        out = self.observation.out_features(data_dim)
        if arch == "conv":
            shape = _image_shape(data_shape, data_dim)
            self.decoder = ConvDecoderNet(latent_dim, shape, out // (shape[1] * shape[2]),
                                          hidden=_head(hidden), activation=activation)
        else:
            self.decoder = mlp(latent_dim, hidden, out, activation, init)
        # Buffers, not constants: they follow .to(device/dtype) and are saved with the weights.
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def prior(self) -> Independent:
        """p(z) = N(0, I_k) as an `Independent(Normal)` with event shape [k]."""
        return diagonal_normal(self.prior_loc, self.prior_scale)

    def decode(self, z: Tensor) -> Tensor:
        """g(z; θ): [..., k] → [..., D] (logits for Bernoulli, means for Gaussian), always float32
        or wider: under bf16 autocast the matmuls run in bf16 but no log-density is summed in it."""
        return _widen(self.decoder(z))

    def p_x_given_z(self, z: Tensor) -> Distribution:
        """p(x|z; θ) with batch shape z.shape[:-1] and event shape [D]."""
        return self.observation(self.decode(z))

    def sample_prior(self, n: int) -> Tensor:
        """z ~ p(z): [n, k]."""
        return self.prior().sample((n,))

    @torch.no_grad()
    def sample(self, n: int, mean: bool = False) -> Tensor:
        """x ~ p(x) by ancestral sampling: [n, D]. `mean=True` returns E[x|z] instead of a draw."""
        p = self.p_x_given_z(self.sample_prior(n))
        return p.mean if mean else p.sample()

    def log_prob_z(self, z: Tensor) -> Tensor:
        """log p(z): [...]."""
        return self.prior().log_prob(z)

    def log_prob_x_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z; θ): [...], with all constants."""
        return self.p_x_given_z(z).log_prob(x)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x, z; θ) = log p(z) + log p(x|z; θ): [...]."""
        return self.log_prob_z(z) + self.log_prob_x_given_z(x, z)


class Encoder(nn.Module):
    """Q(z|x) = N(q(x; φ), diag(v(x; ψ))²), the mean-field Gaussian family of the seed.

    `shared=True` (default) computes μ and log σ² from one trunk; `shared=False` uses two networks,
    q(·; φ) for the mean and v(·; ψ) for the scale, as the text writes them. The scale is
    parameterized by its log-variance, so it is positive without a constraint: σ = exp(½·log σ²).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (400,),
        activation: str = "relu",
        shared: bool = True,
        init: str = "default",
        arch: str = "mlp",
        data_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        self.latent_dim, self.shared = latent_dim, shared

        def net(out: int) -> nn.Module:
            if arch == "conv":
                return ConvEncoderNet(_image_shape(data_shape, data_dim), out, hidden=_head(hidden), activation=activation)
            return mlp(data_dim, hidden, out, activation, init)

        if shared:
            self.net = net(2 * latent_dim)
        else:
            self.mean_net, self.log_var_net = net(latent_dim), net(latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: [B, D] → (μ, log σ²), each [B, k]."""
        if self.shared:
            loc, log_var = _widen(self.net(x)).chunk(2, dim=-1)
            return loc, log_var
        return _widen(self.mean_net(x)), _widen(self.log_var_net(x))

    def posterior(self, x: Tensor) -> Independent:
        loc, log_var = self(x)
        return diagonal_normal(loc, torch.exp(0.5 * log_var))


class VAE(nn.Module):
    """A variational auto-encoder: `encoder` Q(z|x; φ, ψ) and `generative` p(x, z; θ).

    Build it directly, or from a config with `VAE.from_config(cfg)` (the one way the CLI and
    checkpoints build models). `decoder_hidden=None` mirrors the encoder's hidden sizes.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 20,
        hidden: Sequence[int] = (400,),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        sigma: float = 1.0,
        shared_encoder: bool = True,
        init: str = "default",
        decoder_hidden: Sequence[int] | None = None,
        arch: str = "mlp",
        data_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        dec_hidden = tuple(reversed(tuple(hidden))) if decoder_hidden is None else tuple(decoder_hidden)
        self.encoder = Encoder(data_dim, latent_dim, hidden, activation, shared_encoder, init, arch, data_shape)
        self.generative = GenerativeModel(
            data_dim, latent_dim, dec_hidden, activation, likelihood, sigma, init, arch, data_shape
        )
        self.data_dim, self.latent_dim = data_dim, latent_dim

    @classmethod
    def from_config(cls, cfg) -> VAE:
        """Build from a `vaekit.config.ModelConfig` (needs `data_dim` resolved)."""
        return cls(
            data_dim=cfg.data_dim,
            latent_dim=cfg.latent_dim,
            hidden=cfg.hidden,
            activation=cfg.activation,
            likelihood=cfg.likelihood,
            sigma=cfg.sigma,
            shared_encoder=cfg.shared_encoder,
            init=cfg.init,
            decoder_hidden=cfg.decoder_hidden,
            arch=cfg.arch,
            data_shape=cfg.data_shape,
        )

    def posterior(self, x: Tensor) -> Independent:
        """Q(z|x): batch shape [B], event shape [k]."""
        return self.encoder.posterior(x)

    def prior(self) -> Independent:
        return self.generative.prior()

    def p_x_given_z(self, z: Tensor) -> Distribution:
        return self.generative.p_x_given_z(z)

    def forward(self, x: Tensor) -> Independent:
        return self.posterior(x)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> Tensor:
        """n draws from the model: E[x|z] for z ~ p(z) by default (what pictures show), [n, D]."""
        return self.generative.sample(n, mean=mean)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x|z] at z = the posterior mean of Q(z|x): [B, D]."""
        return self.p_x_given_z(self.posterior(x).mean).mean
