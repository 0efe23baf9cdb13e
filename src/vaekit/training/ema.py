"""An exponential moving average of a module's weights, for evaluation and sampling.

θ̄ ← θ̄ + (1 − decay)·(θ − θ̄) after every update that was taken (VDVAE keeps one at decay 0.9999 and
evaluates and samples with it; NVAE, IAF-ResNet and most diffusion models do the same). A step the loop
refused (a non-finite or too large gradient, `loop.Guards`) moves nothing: the weight of the update is a
device tensor, 0 for such a step, so no host synchronization is needed. Buffers are copied, not averaged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .loop import OK


class EMA:
    """The average of `module`'s parameters; `state_dict()` holds it by the module's own names."""

    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"an EMA decay lies in (0, 1), got {decay}")
        self.module, self.decay = module, float(decay)
        self.names = [name for name, _ in module.named_parameters()]
        self.average = [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self, verdict: Tensor | None = None) -> None:
        """Move the average toward the current weights (after a step whose `verdict` is OK; None: always)."""
        weight = 1.0 - self.decay
        if verdict is not None:
            weight = (verdict == OK).to(self.average[0].dtype) * weight
        for avg, p in zip(self.average, self.module.parameters()):
            avg.lerp_(p.detach(), weight)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[nn.Module]:
        """The module with the averaged weights in place of its own for the duration (restored after)."""
        params = list(self.module.parameters())
        kept = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, avg in zip(params, self.average):
                p.copy_(avg)
        try:
            yield self.module
        finally:
            with torch.no_grad():
                for p, own in zip(params, kept):
                    p.copy_(own)

    @torch.no_grad()
    def load_into_module(self) -> None:
        """Replace the module's weights by the average for good (what a finished run hands back)."""
        for p, avg in zip(self.module.parameters(), self.average):
            p.copy_(avg)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.average))

    def load_state_dict(self, saved: dict[str, Tensor]) -> None:
        for avg, name in zip(self.average, self.names):
            avg.copy_(saved[name])
