"""The modules a VAE holds around its networks: `Encoder` (x → Q(z|x), a network and a posterior head),
`Decoder` (z → p(x|z), a network and a likelihood head) and `Labels` (y → the one-hot context of a
conditional VAE). A head is a module or a registered part: its name, or a table of its name and settings."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..data.dataset import check_values
from ..data.files import MAX_CONDITION_CLASSES
from ..errors import VaekitError
from .likelihoods import LIKELIHOODS
from .posteriors import POSTERIORS
from .registry import Choice

Part = str | dict | Choice  # a registered part: its name, {"name": …, setting: value}, or a Choice


def widen(t: Tensor) -> Tensor:
    """A network output as float32 (a no-op unless autocast made it bf16/fp16): no log-density is
    summed in bf16."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def beside(t: Tensor, context: Tensor | None) -> Tensor:
    """[t, context] along the last dimension, the context [B, C] broadcast to t's leading dimensions
    ([S, B, k] draws of z): what a conditional encoder and decoder take (Sohn et al. 2015)."""
    if context is None:
        return t
    return torch.cat([t, context.to(t.dtype).expand(*t.shape[:-1], context.shape[-1])], -1)


class Encoder(nn.Module):
    """x: [..., D] → Q(z|x): `head(net(x))` (`head(net(inputs(x)))` with `inputs`). Any `nn.Module` can be the
    net; the head is a posterior family, a module or a registered name (`Encoder(my_net, "full", latent_dim=8)`),
    and needs `head.out_features(k)` outputs from the net."""

    def __init__(self, net: nn.Module, head: nn.Module | Part = "diagonal", inputs: nn.Module | None = None,
                 **settings: Any):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise VaekitError(f"Encoder: net must be a torch module (nn.Sequential, …), got {type(net).__name__}")
        self.net = net
        self.head = head if isinstance(head, nn.Module) else POSTERIORS.build(head, settings)
        self.inputs = inputs  # how the net sees x where the raw values would not do (`Likelihood.encoder_input`)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Distribution:
        if self.inputs is not None:
            x = self.inputs(x)
        return self.head(widen(self.net(beside(x, context))))


class Decoder(nn.Module):
    """z: [..., k] → p(x|z): `head(net(z))`, the head a likelihood module or a registered name with its
    settings (`Decoder(my_net, "gaussian", sigma=0.1)`); the net gives `head.out_features(D)` outputs."""

    def __init__(self, net: nn.Module, head: nn.Module | Part = "bernoulli", data_dim: int | None = None,
                 **settings: Any):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise VaekitError(f"Decoder: net must be a torch module (nn.Sequential, …), got {type(net).__name__}")
        self.net, self.data_dim = net, data_dim
        self.head = head if isinstance(head, nn.Module) else LIKELIHOODS.build(head, settings, data_dim=data_dim)

    @property
    def support(self) -> str | None:
        """What data the likelihood takes (likelihoods.SUPPORTS), when the head says."""
        return getattr(self.head, "support", None)

    def forward(self, z: Tensor, context: Tensor | None = None) -> Distribution:
        return self.head(widen(self.net(beside(z, context))))


class Labels(nn.Module):
    """Whole-number labels y [B] in 0…C−1 → the one-hot context c(y) [B, C] of a conditional VAE."""

    def __init__(self, classes: int):
        super().__init__()
        if not 1 <= classes <= MAX_CONDITION_CLASSES:
            raise VaekitError(f"a conditional VAE (condition = 'label') takes condition_classes in "
                              f"1…{MAX_CONDITION_CLASSES}, got {classes}")
        self.classes = classes
        self.register_buffer("like", torch.zeros(0), persistent=False)  # no values: the model's dtype and device,
        # which the codes take (a C × C table of them would ask C² floats of memory for one large label)

    def forward(self, y: Tensor) -> Tensor:
        y = torch.as_tensor(y)
        if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise VaekitError(f"labels must be whole numbers of shape [B], got {y.dtype} of shape {tuple(y.shape)}")
        if y.device.type == "cpu" and y.numel() and not (0 <= int(y.min()) and int(y.max()) < self.classes):
            i = int(((y < 0) | (y >= self.classes)).nonzero()[0, 0])
            raise VaekitError(f"labels must lie in 0…{self.classes - 1} (the model's {self.classes} classes); the label "
                              f"of example {i} is {int(y[i])} (all lie in {int(y.min())}…{int(y.max())})")
        y = y.to(self.like.device).long()
        return torch.zeros(len(y), self.classes, dtype=self.like.dtype, device=y.device).scatter_(1, y[:, None], 1.0)


def examples(model, x: Any, name: str = "x") -> Tensor:
    """x as a tensor of examples for `model` (a NumPy array becomes one, in the model's float dtype; images
    [N, C, H, W] become the rows [N, C·H·W] every network takes), or one line naming what is wrong: no
    examples, examples of another size than the model's."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise VaekitError(f"{name} must be a tensor or an array of examples, got {type(x).__name__} ({e})") from None
    if x.is_meta or x.layout != torch.strided:  # no values to score (meta), or none torch's networks take (sparse)
        raise VaekitError(f"{name} must be a dense tensor of values, got a {'meta' if x.is_meta else str(x.layout)} "
                          f"tensor ({'x.to_dense()' if not x.is_meta else 'a meta tensor has shapes, no values'})")
    if x.dim() == 0 or x.shape[0] == 0:
        raise VaekitError(f"{name} holds no examples (shape {tuple(x.shape)})")
    if x.is_complex():  # torch would drop the imaginary part with a warning
        raise VaekitError(f"{name} must hold real numbers, got {str(x.dtype).removeprefix('torch.')}")
    data_dim = getattr(model, "data_dim", None)
    if data_dim and x[0].numel() != data_dim:
        raise VaekitError(f"{name} holds examples of shape {tuple(x.shape[1:])} ({x[0].numel()} values); the model "
                          f"takes {data_dim}")
    shape = tuple((getattr(model, "settings", None) or {}).get("data_shape") or ())
    if x.dim() > 2 and len(shape) > 1 and tuple(x.shape[1:]) != shape:  # an image model's [N, 64, 1] is no image
        raise VaekitError(f"{name} holds examples of shape {tuple(x.shape[1:])}; the model takes images {shape} "
                          f"(or rows of {data_dim})")
    if data_dim and x.dim() > 2:
        x = x.reshape(x.shape[0], data_dim)
    support = getattr(getattr(model, "decoder", None), "support", None)
    if support is not None and x.is_floating_point():  # ints are whole and finite already
        check_values(x, 1.0, name, support, mixed='likelihood="mixed" (a table)')  # NaN (a table's missing cell aside), Inf,
        # the support's range: what the CLI checks of a dataset
    parameters = model.parameters() if isinstance(model, nn.Module) else ()  # a model bound to labels: as given
    dtype = next((p.dtype for p in parameters if p.is_floating_point()), None)
    return x if dtype is None or x.dtype == dtype else x.to(dtype)
