"""A deep top-down VAE: L stochastic groups on a deterministic path shared by the prior and the posterior.

The structure of the IAF-ResNet VAE (Kingma et al. 2016, §6), NVAE (Vahdat & Kautz 2020) and VDVAE
(Child 2021), written for vectors: a bottom-up path a₁ = f(x), a_{l+1} = a_l + cell(a_l) reads the data,
and a top-down path starts from a learned state h_L and runs down the groups,

    p(z_l | z_>l) = N(μ_p(h_l), σ_p(h_l)²)                     the prior, from the state alone
    Q(z_l | z_>l, x) = N(μ_p + Δμ(h_l, a_l), σ_p·exp Δ(h_l, a_l))   the posterior, from the same state and x
    h_{l−1} = cell_l(h_l + W_l z_l)                                  the state takes the group in

so that p(z) = Π_l p(z_l|z_>l), Q(z|x) = Π_l Q(z_l|z_>l, x) and p(x|z) = p(x | h₀) (the decoder network on
the last state). The top group's prior is N(μ_p(h_L), σ_p(h_L)²) from the learned state, or any registered
prior over it (`TopDownPrior(path, top)`): a VampPrior mixes the top group's own posterior Q(z_L|u_k) at its
pseudo-inputs (`TopGroup`), as Tomczak & Welling's HVAE does for its top layer. Q is written relative to the prior (NVAE's residual Normal, §3.2): at initialisation
Δ = 0 and Q = p, and the KL of a group is a function of the two networks' difference. The log-scales are
soft-clamped to (−5, 5) (NVAE's soft_clamp5) and every residual cell's last layer starts at 1/√L of its
default scale (VDVAE scales its blocks' last convolution the same way), so a deep stack starts near the
identity and no σ under- or overflows.

Each of Q and p(z) is one torch `Distribution` over z = [z₁, …, z_L] (z₁ nearest x, as stored by every
hierarchical model here) with `rsample`, `sample`, an exact `log_prob` and `layer_log_probs`: the objectives,
the evaluation and the pictures take it as they take any model. One walk down the path gives Q's draws,
p's conditionals and h₀ together; the path remembers its last walk so that the prior's `log_prob(z)` and the
decoder on the same z tensor reuse it (a new tensor, or weights changed since, walks again).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints
from torch.func import functional_call
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..errors import VaekitError
from .distributions import diagonal_normal, is_diagonal_normal, tempered
from .networks import ACTIVATIONS

EMPTY = torch.Size()
_STEPS = [0]  # optimizer steps taken in this process: a fused kernel writes weights without bumping their versions


def _count_step(optimizer, args, kwargs) -> None:
    _STEPS[0] += 1


register_optimizer_step_post_hook(_count_step)
LOG_SCALE_BOUND = 5.0  # |log σ| < 5: σ in (0.0067, 148), NVAE's soft_clamp5


def soft_clamp(t: Tensor, bound: float = LOG_SCALE_BOUND) -> Tensor:
    """bound·tanh(t / bound): the identity near 0, smooth, never beyond ±bound."""
    return bound * torch.tanh(t / bound)


def bottleneck(width: int) -> int:
    """A residual cell's inner width: a quarter of the path's (VDVAE's bottleneck blocks), at least 16."""
    return max(16, width // 4)


class Residual(nn.Module):
    """h → h + W₂·act(W₁·act(h)): a residual cell whose last layer starts at `scale` of its default init."""

    def __init__(self, width: int, inner: int, activation: str, scale: float = 1.0):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.inner = nn.Sequential(act(), nn.Linear(width, inner), act(), nn.Linear(inner, width))
        with torch.no_grad():
            self.inner[-1].weight.mul_(scale)
            self.inner[-1].bias.zero_()

    def forward(self, h: Tensor) -> Tensor:
        return h + self.inner(h)


class Walk(NamedTuple):
    """One pass down the path: z [..., Σd] (z₁ first), the conditionals in drawing order (top group first):
    Q(z_l|z_>l, x) where the walk saw x (else None each), p(z_l|z_>l), and the last state h₀ [..., width]."""

    z: Tensor
    q: list[Distribution | None]
    p: list[Distribution]
    h: Tensor


class TopDownPath(nn.Module):
    """The top-down path: the learned top state, and per group (listed from the top down) the prior's head,
    the posterior's head (on [h_l, a_l]), the map W_l of z_l into the state, and a residual cell.

    `forward(features, z, sample_shape, temperature)` walks it: with `features` (the bottom-up a₁ … a_L) it
    draws from Q, without from p (at `temperature`: every σ_p times it); given `z` it scores those values
    instead of drawing. `walked` is the same with the last walk remembered."""

    def __init__(self, sizes: Sequence[int], width: int, activation: str = "relu"):
        super().__init__()
        self.layer_sizes, self.width = tuple(int(d) for d in sizes), int(width)
        top_down = self.layer_sizes[::-1]
        scale = 1.0 / math.sqrt(len(top_down))
        act = ACTIVATIONS[activation]
        self.top = nn.Parameter(torch.zeros(width))
        self.prior_heads = nn.ModuleList([nn.Sequential(act(), nn.Linear(width, 2 * d)) for d in top_down])
        self.posterior_heads = nn.ModuleList([
            nn.Sequential(act(), nn.Linear(2 * width, 2 * d)) for d in top_down])
        self.inject = nn.ModuleList([nn.Linear(d, width) for d in top_down])
        self.cells = nn.ModuleList([Residual(width, bottleneck(width), activation, scale) for _ in top_down])
        with torch.no_grad():  # Δ = 0 at the start: Q = p, every group's KL 0 (NVAE)
            for head in self.posterior_heads:
                head[-1].weight.zero_()
                head[-1].bias.zero_()
        self._memo: tuple | None = None

    def posterior(self, i: int, h: Tensor, a: Tensor, p_loc: Tensor, p_log_scale: Tensor) -> Distribution:
        """Q(z_l|z_>l, x) of the i-th group from the top: the prior's (loc, log-scale) moved by the head on [h, a]."""
        dq_loc, dq_log_scale = self.posterior_heads[i](torch.cat([h, a.expand(*h.shape[:-1], a.shape[-1])], -1)).chunk(2, -1)
        return diagonal_normal(p_loc + dq_loc, soft_clamp(p_log_scale + dq_log_scale).exp(), validate_args=False)

    def top_posterior(self, a: Tensor) -> Distribution:
        """Q(z_L|x) from the top of the bottom-up path a_L [..., width] alone (it sees no other group)."""
        h = self.top.expand(*a.shape[:-1], self.width)
        return self.posterior(0, h, a, *self.prior_heads[0](h).chunk(2, -1))

    def forward(self, features: Sequence[Tensor] | None, z: Tensor | None = None,
                sample_shape: torch.Size = EMPTY, temperature: float = 1.0, draw: bool = True,
                top: Distribution | None = None) -> Walk:
        lead = torch.Size(sample_shape) + (features[0].shape[:-1] if features is not None else torch.Size())
        if z is not None:
            lead = z.shape[:-1]
        h = self.top.expand(*lead, self.width)
        given = list(z.split(self.layer_sizes, -1))[::-1] if z is not None else None
        blocks, qs, ps = [], [], []
        for i, d in enumerate(self.layer_sizes[::-1]):
            p_loc, p_log_scale = self.prior_heads[i](h).chunk(2, -1)
            ps.append(diagonal_normal(p_loc, soft_clamp(p_log_scale).exp(), validate_args=False))
            q = None
            if features is not None:
                q = self.posterior(i, h, features[len(self.layer_sizes) - 1 - i], p_loc, p_log_scale)
            qs.append(q)
            if given is not None:
                block = given[i]
            else:
                from_top = q is None and i == 0 and top is not None  # the top group's registered prior: no batch
                dist = q if q is not None else top if from_top else ps[-1]
                if q is None and temperature != 1.0:
                    dist = tempered(dist, temperature)
                shape = lead if from_top else EMPTY
                block = dist.rsample(shape) if draw and dist.has_rsample else dist.sample(shape)
            blocks.append(block)
            h = self.cells[i](h + self.inject[i](block))
        out = z if z is not None else torch.cat(blocks[::-1], -1)
        return Walk(out, qs, ps, h)

    def version(self) -> tuple[int, int]:
        """What changes whenever a weight of the path may have changed: the parameters' version counters (any
        in-place write through autograd's view) and the count of optimizer steps (fused kernels bump no counter)."""
        return sum(p._version for p in self.parameters()), _STEPS[0]

    def remember(self, walk: Walk, features: Sequence[Tensor] | None) -> Walk:
        if not torch.compiler.is_compiling():  # compiled, the memo's version counters would recompile every step
            self._memo = (walk.z, features, self.version(), torch.is_grad_enabled(), walk)
        return walk

    def walked(self, z: Tensor, features: Sequence[Tensor] | None = None) -> Walk:
        """The walk that scores z (with Q's conditionals when `features` are given): the last one if it was
        of this very tensor, these features (or none needed), the same weights and grad mode; else a new one."""
        memo = None if torch.compiler.is_compiling() else self._memo
        if (memo is not None and memo[0] is z and (features is None or memo[1] is features)
                and memo[3] == torch.is_grad_enabled() and memo[2] == self.version()):
            return memo[4]
        return self.remember(self(features, z=z), features)


class TopDown(Distribution):
    """Q(z|x) (with the bottom-up `features`) or p(z) (without) of a `TopDownPath`, over z = [z₁, …, z_L].
    `params`: the path's parameters to use instead of its own (`detach`); `temperature` scales p's σ when drawn;
    `top`: p(z_L), the top group's prior, where it is not the path's own head (a VampPrior's mixture)."""

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, path: TopDownPath, features: Sequence[Tensor] | None = None,
                 params: dict[str, Tensor] | None = None, temperature: float = 1.0, top: Distribution | None = None):
        self.path, self.features, self.params, self.temperature = path, features, params, temperature
        self.top = top if features is None else None
        self.layer_sizes = path.layer_sizes
        batch = features[0].shape[:-1] if features is not None else torch.Size()
        super().__init__(batch, torch.Size([sum(self.layer_sizes)]), validate_args=False)

    def _walk(self, z: Tensor | None = None, sample_shape: torch.Size = EMPTY, draw: bool = True) -> Walk:
        args = (self.features, z, torch.Size(sample_shape), self.temperature, draw, self.top)
        if self.params is not None:
            return functional_call(self.path, self.params, args)
        if z is not None:
            return self.path.walked(z, self.features)
        return self.path.remember(self.path(*args), self.features)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        return self._walk(sample_shape=torch.Size(sample_shape)).z

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            return self._walk(sample_shape=torch.Size(sample_shape), draw=False).z

    def conditionals(self, z: Tensor) -> list[tuple[Distribution, Tensor]]:
        """(distribution, block) per group in storage order (z₁ first)."""
        walk = self._walk(z)
        dists = walk.q if self.features is not None else walk.p
        if self.top is not None:
            dists = [self.top, *dists[1:]]
        return list(zip(dists[::-1], z.split(self.layer_sizes, -1), strict=True))

    def log_prob(self, z: Tensor) -> Tensor:
        return sum(d.log_prob(b) for d, b in self.conditionals(z))

    def layer_log_probs(self, z: Tensor, per_dimension: bool = False) -> list[Tensor]:
        """log of each group's conditional at z in storage order (z₁ first): [...] each, or [..., d_l]."""
        if not per_dimension:
            return [d.log_prob(b) for d, b in self.conditionals(z)]
        return [d.base_dist.log_prob(b) if is_diagonal_normal(d) else None for d, b in self.conditionals(z)]

    def expand(self, batch_shape: torch.Size, _instance=None) -> TopDown:
        if self.features is None:
            raise VaekitError("a top-down prior p(z) has no batch to expand; draw with a sample shape instead")
        features = [a.expand(*batch_shape, a.shape[-1]) for a in self.features]
        return TopDown(self.path, features, self.params, self.temperature, self.top)

    def detach(self) -> TopDown:
        """The same density with every parameter (the path's, and the bottom-up features) cut from the graph,
        gradients still flowing through z: what DReG scores log Q with."""
        params = {name: p.detach() for name, p in self.path.named_parameters()}
        features = None if self.features is None else [a.detach() for a in self.features]
        return TopDown(self.path, features, params, self.temperature, self.top)

    def tempered(self, temperature: float) -> TopDown:
        """p(z) drawn with every group's σ_p times `temperature` (NVAE and VDVAE sample at 0.6–0.9); a draw at
        a temperature is for pictures: the density (`log_prob`) stays the model's."""
        return TopDown(self.path, self.features, self.params, temperature, self.top)


class TopDownEncoder(nn.Module):
    """x → Q(z|x): the bottom-up path (`trunk` on x, then a residual cell per group above the first) and the
    shared top-down path (held, not owned: the prior owns it)."""

    def __init__(self, trunk: nn.Module, path: TopDownPath, activation: str = "relu"):
        super().__init__()
        groups = len(path.layer_sizes)
        self.trunk = trunk
        self.up = nn.ModuleList([Residual(path.width, bottleneck(path.width), activation, 1.0 / math.sqrt(groups))
                                 for _ in range(groups - 1)])
        self._path = (path,)
        self.layer_sizes = path.layer_sizes

    def forward(self, x: Tensor, context: Tensor | None = None) -> TopDown:
        if context is not None:
            raise VaekitError("a top-down VAE (--inference top-down) is not conditioned on labels yet; "
                              "use --inference bottom-up with --condition label")
        return TopDown(self._path[0], self.features(x))

    def features(self, x: Tensor) -> list[Tensor]:
        """The bottom-up path a₁ … a_L from x."""
        features = [self.trunk(x)]
        for cell in self.up:
            features.append(cell(features[-1]))
        return features


class TopGroup(nn.Module):
    """x → Q(z_L|x): the top group's posterior alone, what a prior over the top group built on the encoder mixes
    (a VampPrior: p(z_L) = (1/K) Σ_k Q(z_L|u_k)). Holds the `TopDownEncoder`, owns nothing."""

    def __init__(self, encoder: TopDownEncoder):
        super().__init__()
        self._encoder = (encoder,)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Distribution:
        encoder = self._encoder[0]
        return encoder._path[0].top_posterior(encoder.features(x)[-1])


class TopDownPrior(nn.Module):
    """p(z) = Π_l p(z_l|z_>l) of the top-down path, which it owns; with `top` (a registered prior part over the top
    group, which it owns too) p(z_L) = top() instead of the path's Gaussian head at the learned top state."""

    conditional = False

    def __init__(self, path: TopDownPath, top: nn.Module | None = None):
        super().__init__()
        self.path, self.top = path, top
        self.layer_sizes = path.layer_sizes
        self.latent_dim = sum(path.layer_sizes)

    def forward(self, context: Tensor | None = None) -> TopDown:
        return TopDown(self.path, top=None if self.top is None else self.top())


class LastState(nn.Module):
    """z → the decoder network's input: h₀, the top-down path's last state after taking in every group."""

    def __init__(self, path: TopDownPath, net: nn.Module):
        super().__init__()
        self._path, self.net = (path,), net

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self._path[0].walked(z).h)
