"""Spectral regularization (NVAE, Vahdat & Kautz 2020, §3.2): the loss gains λ·Σ_l σ_max(W_l).

σ_max(W_l) is the largest singular value of layer l's weight (a convolution's [out, in, kh, kw] read as
the matrix [out, in·kh·kw], as NVAE does): an upper bound of the layer's Lipschitz constant, so the
penalty keeps the networks smooth, which NVAE found its deep hierarchies need to train stably. Each σ
is estimated by power iteration: u, v are kept from step to step and moved one iteration per step
(u ← W v / ‖W v‖ after v ← Wᵀ u / ‖Wᵀ u‖), and σ = uᵀ W v, whose gradient is u vᵀ (u, v held fixed):
Miyato et al. (2018) and torch's `spectral_norm` do the same. The vectors belong to the training
state: `state_dict()` is saved in train_state.pt, so a resumed run continues bit for bit.

Layers: every `nn.Linear` and convolution of the model, not the objective's own networks (a
discriminator). The first vectors come from a fixed seed (the global random stream is not touched)
and ten iterations, so σ is accurate from the first step; a layer that is zero (a residual head's last
layer at initialization) keeps its vectors until it is not, rather than losing them to 0. A lazy layer
(`nn.LazyLinear`) joins at the first step after it has its weight, its vectors from a seed of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

FIRST_ITERATIONS = 10  # before the first step; then one per step


def regularized_layers(module: nn.Module, *, lazy: bool = False) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every linear or convolutional layer of `module` whose weight exists (a lazy layer's does
    once it has seen an input), in module order; `lazy`: those whose weight does not exist yet."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, (nn.Linear, _ConvNd))
            and isinstance(m.weight, nn.parameter.UninitializedParameter) == lazy]


def _matrix(layer: nn.Module) -> Tensor:
    """The weight as [out, in·k…]: a transposed convolution's [in, out, k…] read with its output first, as
    torch's `spectral_norm` does (dim 1)."""
    w = layer.weight.transpose(0, 1) if getattr(layer, "transposed", False) else layer.weight
    return w.reshape(w.shape[0], -1)


def _step(vector: Tensor, image: Tensor) -> None:
    """vector ← image / ‖image‖, but kept where the image is 0: a layer that starts at zero (a residual
    head's last layer) would otherwise turn both vectors to 0 and keep them there, unregularized for good."""
    norm = image.norm()
    vector.copy_(torch.where(norm > 0, image / norm.clamp_min(torch.finfo(image.dtype).tiny), vector))


class SpectralPenalty:
    """`penalty()` = weight · Σ σ_max(W_l) over `module`'s layers (differentiable, one power iteration
    taken first); `sigmas()` the current estimates; `state_dict()` the vectors, by layer name."""

    def __init__(self, module: nn.Module, weight: float):
        if not weight > 0.0:
            raise ValueError(f"a spectral regularization weight is > 0, got {weight}")
        self.weight = float(weight)
        self.layers: list[tuple[str, nn.Module]] = []
        self.u: list[Tensor] = []
        self.v: list[Tensor] = []
        self._add(regularized_layers(module), torch.Generator().manual_seed(0))
        self._lazy = regularized_layers(module, lazy=True)

    def _add(self, layers: list[tuple[str, nn.Module]], generator: torch.Generator) -> None:
        """Start the vectors of `layers` from `generator` and iterate them ten times (theirs only)."""
        new = []
        for name, layer in layers:
            w = _matrix(layer)
            u = F.normalize(torch.randn(w.shape[0], generator=generator, dtype=w.dtype), dim=0).to(w.device)
            v = F.normalize(torch.randn(w.shape[1], generator=generator, dtype=w.dtype), dim=0).to(w.device)
            new.append((name, layer, u, v))
        for _ in range(FIRST_ITERATIONS):
            with torch.no_grad():
                for _, layer, u, v in new:
                    w = _matrix(layer).detach().to(u.dtype)
                    _step(v, w.t() @ u)
                    _step(u, w @ v)
        for name, layer, u, v in new:
            self.layers.append((name, layer))
            self.u.append(u)
            self.v.append(v)

    def _join_materialized(self) -> None:
        """Lazy layers that have their weight now join, each seeded by its place among them."""
        ready = [(i, nl) for i, nl in enumerate(self._lazy)
                 if not isinstance(nl[1].weight, nn.parameter.UninitializedParameter)]
        for i, named in ready:
            self._add([named], torch.Generator().manual_seed(1 + i))
        self._lazy = [nl for nl in self._lazy if all(nl is not r[1] for r in ready)]

    @torch.no_grad()
    def _iterate(self) -> None:
        for (_, layer), u, v in zip(self.layers, self.u, self.v):
            w = _matrix(layer).detach().to(u.dtype)
            _step(v, w.t() @ u)
            _step(u, w @ v)

    def sigmas(self) -> Tensor:
        """σ_l = uᵀ W_l v for each layer (differentiable in the weights)."""
        return torch.stack([u @ (_matrix(layer) @ v) for (_, layer), u, v in zip(self.layers, self.u, self.v)])

    def penalty(self) -> tuple[Tensor, Tensor]:
        """(weight · Σσ, Σσ) after one power iteration: what the loss gains, and the sum to log."""
        if self._lazy:
            self._join_materialized()
        self._iterate()
        total = self.sigmas().sum() if self.layers else torch.zeros(())
        return self.weight * total, total.detach()

    def state_dict(self) -> dict[str, Tensor]:
        return {**{f"{name}.u": u for (name, _), u in zip(self.layers, self.u)},
                **{f"{name}.v": v for (name, _), v in zip(self.layers, self.v)}}

    def load_state_dict(self, saved: dict[str, Tensor]) -> None:
        for (name, _), u, v in zip(self.layers, self.u, self.v):
            u.copy_(saved[f"{name}.u"])
            v.copy_(saved[f"{name}.v"])
