"""Network building blocks and the registered architectures. No probability here: tensors to tensors.

An architecture (`--arch`) is a factory `(role, in_features, out_features, …) → nn.Module` for the
encoder network (x → h, role "encoder") and the decoder network (z → h, role "decoder").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Annotated, Any

import torch
from torch import Tensor, nn

from ..errors import VaekitError
from .registry import Registry, Setting

ARCHITECTURES = Registry("architecture")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus,
               "leaky-relu": nn.LeakyReLU}  # slope 0.01: Lasagne's leaky_rectify, the ladder VAE's
NORMS = ("none", "batch")


def _global_sum(t: Tensor) -> Tensor:
    """t summed over the processes of torch.distributed (with its gradient: each rank's backward gets the sum of
    every rank's), or t itself in one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        return _AllReduce.apply(t)
    return t


class _AllReduce(torch.autograd.Function):
    """A sum over the processes whose gradient is the sum of every process's gradient."""

    @staticmethod
    def forward(saved, t: Tensor) -> Tensor:
        t = t.clone()
        torch.distributed.all_reduce(t)
        return t

    @staticmethod
    def backward(saved, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad


class BatchNorm(nn.Module):
    """Batch normalization (Ioffe & Szegedy 2015) of the last dimension over every leading one (a batch [B, C],
    importance samples [k, B, C]): in training, (h − mean) / √(var + ε)·γ + β with the biased variance of the
    batch, which under torch.distributed is the global batch (its sums taken over the ranks with their
    gradients, so N processes train as one); in evaluation, the running averages (each step moves them by
    `momentum` toward the batch's mean and unbiased variance): torch's BatchNorm1d, written for any rank
    and any number of processes."""

    def __init__(self, features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight, self.bias = nn.Parameter(torch.ones(features)), nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def forward(self, h: Tensor) -> Tensor:
        flat = h.reshape(-1, h.shape[-1])
        if self.training:
            sums = _global_sum(torch.cat([flat.sum(0), flat.new_tensor([flat.shape[0]])]))
            count, mean = sums[-1], sums[:-1] / sums[-1]
            var = _global_sum((flat - mean).pow(2).sum(0)) / count
            with torch.no_grad():  # a batch of one (an epoch's last) has no variance: the averages stay as they are
                step = (count > 1).to(mean.dtype) * self.momentum
                self.running_mean.lerp_(mean.detach(), step)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), step)
        else:
            mean, var = self.running_mean, self.running_var
        return ((flat - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias).reshape(h.shape)


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "relu",
    init: str = "default",
    norm: str = "none",
) -> nn.Sequential:
    """Linear layers of sizes in → hidden… → out with `activation` between them (none after the last), each
    hidden layer batch-normalized before its activation where `norm="batch"` (`BatchNorm`).

    `hidden=()` gives a single linear map. `init="glorot"` uses Glorot-uniform weights and zero biases,
    as in Kingma & Welling (2013) and Burda et al. (2016); "default" keeps PyTorch's.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    sizes = [in_features, *hidden, out_features]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        hidden_layer = i < len(sizes) - 2
        layers.append(nn.Linear(a, b, bias=not (hidden_layer and norm == "batch")))  # BN's β is the bias
        if hidden_layer:
            if norm == "batch":
                layers.append(BatchNorm(b))
            layers.append(ACTIVATIONS[activation]())
    net = nn.Sequential(*layers)
    if init == "glorot":
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    elif init != "default":
        raise ValueError(f"unknown init {init!r}; choose 'default' or 'glorot'")
    return net


class ConvEncoderNet(nn.Module):
    """Images [B, C·H·W] (flattened) → [B, out]: two stride-2 convolutions, then a linear head.

    Works for any H, W ≥ 1 (padding keeps odd sizes); the flattened size is computed, not assumed.
    `extra` features after the image (a conditional VAE's one-hot label) join the convolutions' output
    before the head: the input is then [B, C·H·W + extra].
    """

    def __init__(self, shape: Sequence[int], out_features: int, channels: Sequence[int] = (32, 64),
                 hidden: int = 256, activation: str = "relu", extra: int = 0):
        super().__init__()
        c, h, w = shape
        self.shape, self.size, self.extra = (c, h, w), c * h * w, extra
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, kernel_size=3, stride=2, padding=1), act()]
            c, h, w = c_out, (h + 1) // 2, (w + 1) // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = mlp(c * h * w + extra, (hidden,), out_features, activation)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        h = self.features(x[..., : self.size].reshape(-1, *self.shape))
        if self.extra:
            h = torch.cat([h, x[..., self.size :].reshape(-1, self.extra)], -1)
        return self.head(h).reshape(*lead, -1)


class ConvDecoderNet(nn.Module):
    """z [..., k] → [..., out_channels·H·W]: a linear map to a coarse grid, two stride-2 transposed
    convolutions up to at least H×W, then a crop to exactly H×W (so odd sizes need no special case)."""

    def __init__(self, latent_dim: int, shape: Sequence[int], out_channels: int | None = None,
                 channels: Sequence[int] = (64, 32), hidden: int = 256, activation: str = "relu"):
        super().__init__()
        c, self.h, self.w = shape
        out_channels = out_channels or c
        n_up = len(channels)
        self.h0, self.w0 = -(-self.h // 2**n_up), -(-self.w // 2**n_up)  # ceil division
        act = ACTIVATIONS[activation]
        self.stem = nn.Sequential(mlp(latent_dim, (hidden,), channels[0] * self.h0 * self.w0, activation), act())
        self.c0 = channels[0]
        layers: list[nn.Module] = []
        sizes = [*channels, out_channels]
        for i, (a, b) in enumerate(pairwise(sizes)):
            layers.append(nn.ConvTranspose2d(a, b, kernel_size=4, stride=2, padding=1))
            if i < len(sizes) - 2:
                layers.append(act())
        self.up = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        y = self.stem(z.reshape(-1, z.shape[-1])).reshape(-1, self.c0, self.h0, self.w0)
        y = self.up(y)[:, :, : self.h, : self.w]
        return y.reshape(*lead, -1)


class GatedDense(nn.Module):
    """h = (W x + b) ⊙ sigmoid(V x + c): a gated linear unit (Dauphin et al. 2017), the layer of Tomczak &
    Welling's (2018) MLPs (their `GatedDense`)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.h, self.g = nn.Linear(in_features, out_features), nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class Concat(nn.Module):
    """Several networks on one input, their outputs side by side: e.g. the seed's separate q(x; φ)
    and v(x; ψ) for the mean and the log-variance of Q."""

    def __init__(self, *nets: nn.Module):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([net(x) for net in self.nets], dim=-1)


class First(nn.Module):
    """The first n features of the input, and its last `context` ones: the decoder of a hierarchical VAE
    sees z₁ of z = [z₁, …, z_L] (a conditional one [z₁, c(y)] of [z₁, …, z_L, c(y)])."""

    def __init__(self, n: int, net: nn.Module, context: int = 0):
        super().__init__()
        self.n, self.net, self.context = n, net, context

    def forward(self, z: Tensor) -> Tensor:
        if self.context:
            return self.net(torch.cat([z[..., : self.n], z[..., z.shape[-1] - self.context :]], -1))
        return self.net(z[..., : self.n])


def _image_shape(data_shape: Sequence[int] | None) -> tuple[int, int, int]:
    if data_shape is None or len(data_shape) != 3:
        raise VaekitError(f"arch = 'conv' needs image data of shape (C, H, W), got {tuple(data_shape or ())}; "
                          "use arch = 'mlp' for vectors")
    return tuple(data_shape)  # type: ignore[return-value]


@ARCHITECTURES.register("mlp")
def mlp_architecture(role: str, in_features: int, out_features: int, hidden: Sequence[int], activation: str = "relu",
                     init: str = "default",
                     norm: Annotated[str, Setting("batch: batch normalization before every hidden layer's activation, "
                                                  "in the networks between stochastic layers too (the ladder VAE's "
                                                  "recipe); statistics of the global batch under torchrun",
                                                  choices=NORMS)] = "none") -> nn.Module:
    """fully connected layers (--hidden sizes, --activation, --init, --norm)"""
    return mlp(in_features, hidden, out_features, activation, init, norm)


@ARCHITECTURES.register("gated")
def gated_architecture(role: str, in_features: int, out_features: int, hidden: Sequence[int]) -> nn.Module:
    """gated dense layers h ⊙ sigmoid(g) of the --hidden sizes, then a linear map (Tomczak & Welling 2018)"""
    sizes = [in_features, *hidden]
    return nn.Sequential(*[GatedDense(a, b) for a, b in pairwise(sizes)], nn.Linear(sizes[-1], out_features))


@ARCHITECTURES.register("conv")
def conv_architecture(role: str, in_features: int, out_features: int, hidden: Sequence[int],
                      data_shape: Sequence[int] | None, activation: str = "relu") -> nn.Module:
    """two stride-2 convolutions and a dense layer (the last --hidden size), for images"""
    shape = _image_shape(data_shape)
    dense = hidden[-1] if hidden else 256
    if role == "encoder":  # inputs beyond the image (a label's one-hot) join before the dense layer
        extra = in_features - math.prod(shape)
        return ConvEncoderNet(shape, out_features, hidden=dense, activation=activation, extra=extra)
    return ConvDecoderNet(in_features, shape, out_features // (shape[1] * shape[2]), hidden=dense, activation=activation)


def check_sizes(settings: dict[str, Any]) -> None:
    """A model's sizes (data_dim, latent_dim, the hidden layers') are whole numbers ≥ 1, or one line naming the
    setting (a size of −1 ended in a torch error inside a layer's constructor); a hidden layer given as one number
    (`hidden=16`, the CLI's spelling) becomes a list of one, in `settings`. The activation is one vaekit has."""
    for name in ("data_dim", "latent_dim", "hidden", "decoder_hidden", "layer_hidden", "data_shape"):
        value = settings.get(name)
        sizes = [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, bool) or not hasattr(v, "__index__") or v < 1 for v in sizes) or (
                name in ("data_dim", "latent_dim") and not sizes) or (name == "data_dim" and len(sizes) > 1):
            raise VaekitError(f"VAE: {name} must be {'a size' if name == 'data_dim' else 'sizes'} of whole numbers ≥ 1, "
                              f"got {value!r:.80}")
        if len(sizes) > MAX_LAYERS:  # 100,000 layers of 8 pass the weight bound, and took 7 GB and minutes a step
            raise VaekitError(f"VAE: {name} lists {len(sizes):,} {'groups' if name == 'latent_dim' else 'layers'}; "
                              f"vaekit builds at most {MAX_LAYERS:,}")
        if name.endswith("hidden") and value is not None and not isinstance(value, (list, tuple)):
            settings[name] = (int(value),)
        if name == "data_dim" and isinstance(value, (list, tuple)):  # (64,): the size it holds
            settings[name] = int(value[0])
    shape, dim = settings.get("data_shape"), settings.get("data_dim")  # data_dim one number by now
    if shape and dim is not None and math.prod(shape) != dim:  # else found at the first forward pass
        raise VaekitError(f"VAE: data_shape {tuple(shape)} holds {math.prod(shape)} values, but data_dim is {dim}")
    if "activation" in settings and (not isinstance(settings["activation"], str) or
                                     settings["activation"] not in ACTIVATIONS):
        raise VaekitError(f"VAE: activation {settings['activation']!r:.40} is not one of {', '.join(sorted(ACTIVATIONS))}")
    weights = dense_weights(settings)
    if weights > MAX_WEIGHTS:
        sizes = ", ".join(f"{n} {settings.get(n)!r}" for n in ("data_dim", "latent_dim", "hidden", "decoder_hidden",
                                                                 "layer_hidden")
                          if settings.get(n) is not None)
        raise VaekitError(f"VAE: {sizes} make ≈ {weights:.3g} weights ({4 * weights / 2**30:,.0f} GiB in float32), more "
                          f"than vaekit builds (≤ {MAX_WEIGHTS:.3g}): choose smaller sizes")


def check_layer(n_in: int, n_out: int, what: str) -> None:
    """One dense layer's weights within MAX_WEIGHTS (a likelihood's outputs, 256 a value for the categorical, are
    known only once it is built), or one line."""
    if n_in * n_out > MAX_WEIGHTS:
        raise VaekitError(f"VAE: {what} maps {n_in:,} inputs to {n_out:,} outputs, ≈ {n_in * n_out:.3g} weights "
                          f"({4 * n_in * n_out / 2**30:,.0f} GiB in float32), more than vaekit builds (≤ "
                          f"{MAX_WEIGHTS:.3g}): choose smaller sizes")


MAX_LAYERS = 1000  # layers in one network, or stochastic groups: ten times the deepest VAE published (VDVAE's ≈ 70)
MAX_WEIGHTS = 2**31  # 8 GiB of float32 weights: a model beyond is a typo (hidden 10**6), not a VAE to train here


def dense_weights(settings: dict[str, Any]) -> int:
    """The weights of the dense maps the sizes ask for, x → hidden → z and z → decoder hidden → x (the likelihood's
    extra parameters and the layers between stochastic layers left out): a lower bound of the model's size, to
    refuse a typo in one line before torch tries to allocate it."""
    def listed(name: str) -> list[int]:
        value = settings.get(name)
        return [] if value is None else [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]

    data, latent, hidden = listed("data_dim"), listed("latent_dim"), listed("hidden")
    decoder = listed("decoder_hidden") if settings.get("decoder_hidden") is not None else hidden[::-1]
    chains = [[*data, *hidden, 2 * sum(latent)], [latent[0] if latent else 1, *decoder, *data],
              [max(latent, default=1), *listed("layer_hidden"), max(latent, default=1)]]
    return sum(a * b for chain in chains for a, b in pairwise(chain))
