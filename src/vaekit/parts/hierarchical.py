"""Hierarchical VAEs: L stochastic layers z = (z₁, …, z_L), held as one latent vector.

Burda et al. (2016, §5 and App. C) stack them both ways:
    p(z_L) p(z_{L−1}|z_L) … p(z₁|z₂) p(x|z₁)        (generative, top-down)
    Q(z₁|x) Q(z₂|z₁) … Q(z_L|z_{L−1})               (inference, bottom-up)
with each conditional a diagonal Gaussian from a small network. Both chains here are one torch
`Distribution` over the concatenation [z₁, …, z_L] (event shape [Σ d_l]) with `rsample`/`sample` and an
exact `log_prob` (the sum of the conditionals' log-densities), so the ELBO, the IWAE bound and its
DReG gradients, the importance-sampled log-likelihood and every diagnostic take a hierarchical model
exactly as they take a one-layer one: the objectives never learn that z has layers (Pyro's lesson).
There is no closed-form KL between two chains, so the ELBO takes the Monte Carlo KL.

A ladder VAE (Sønderby et al. 2016, `LadderEncoder`) draws Q top-down instead, as p does:
    Q(z_L|x) Q(z_{L−1}|z_L, x) … Q(z₁|z₂, x),  Q(z_l|z_{l+1}, x) ∝ p(z_l|z_{l+1}) N(z_l; μ̂_l(x), σ̂_l(x)²)
sharing the prior's top-down networks; it is the same kind of `Chain`, so nothing else changes.

`layer_sizes` and `layer_log_probs` say where the layers are, for per-layer statistics (`evaluation.estimates`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints
from torch.func import functional_call

from ..errors import VaekitError
from .distributions import detached, diagonal_normal, is_diagonal_normal, tempered
from .topdown import TopDownEncoder


class Chain(Distribution):
    """p(z) = p(b₀) Π_i p(b_{i+1} | b_i) over blocks b₀, b₁, … drawn in that order, stored in z as the
    layers z₁ … z_L: the blocks in order (inference, `top_down=False`) or reversed (generative, b₀ = z_L).

    first: the distribution of b₀ (batch shape [B], event [d]); steps: modules b_i → p(b_{i+1}|b_i), any
    batch shape in. params: the steps' parameters to use instead of their own (`detach`), per step.
    `rsample` remembers its last draw, so `log_prob` of that same tensor scores b₀ with the tensor
    `first` returned (a flow's memo then spares its sequential inverse).
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, first: Distribution, steps: Sequence[nn.Module], sizes: Sequence[int], top_down: bool = False,
                 params: Sequence[dict[str, Tensor]] | None = None):
        self.first, self.steps, self.top_down, self.params = first, tuple(steps), top_down, params
        self.layer_sizes = tuple(int(s) for s in sizes)  # z₁ … z_L, as stored
        self._memo: tuple[Tensor, Tensor] | None = None
        super().__init__(first.batch_shape, torch.Size([sum(self.layer_sizes)]), validate_args=False)

    def _step(self, i: int, block: Tensor) -> Distribution:
        if self.params is None or self.params[i] is None:
            return self.steps[i](block)
        return functional_call(self.steps[i], self.params[i], (block,))

    def _store(self, blocks: list[Tensor]) -> Tensor:
        return torch.cat(blocks[::-1] if self.top_down else blocks, -1)

    def _blocks(self, z: Tensor) -> list[Tensor]:
        blocks = list(z.split(self.layer_sizes, -1))
        return blocks[::-1] if self.top_down else blocks

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        blocks = [self.first.rsample(torch.Size(sample_shape))]
        for i in range(len(self.steps)):
            blocks.append(self._step(i, blocks[-1]).rsample())
        z = self._store(blocks)
        self._memo = (z, blocks[0])
        return z

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            blocks = [self.first.sample(torch.Size(sample_shape))]
            for i in range(len(self.steps)):
                blocks.append(self._step(i, blocks[-1]).sample())
            return self._store(blocks)

    def conditionals(self, z: Tensor) -> list[tuple[Distribution, Tensor]]:
        """(distribution, block) pairs in drawing order: (p(b₀), b₀), (p(b₁|b₀), b₁), …"""
        blocks = self._blocks(z)
        memo = self._memo
        if memo is not None and z is memo[0]:
            blocks[0] = memo[1]
        return [(self.first, blocks[0])] + [(self._step(i, b), nxt) for i, (b, nxt) in enumerate(itertools.pairwise(blocks))]

    def log_prob(self, z: Tensor) -> Tensor:
        return sum(d.log_prob(b) for d, b in self.conditionals(z))

    def layer_log_probs(self, z: Tensor, per_dimension: bool = False) -> list[Tensor | None]:
        """log p of each layer given the one it is drawn from, in storage order (z₁ first): [...] each, or
        with `per_dimension` [..., d_l] where that conditional is a diagonal Gaussian (else None)."""
        terms = []
        for d, b in self.conditionals(z):
            if not per_dimension:
                terms.append(d.log_prob(b))
            else:
                terms.append(d.base_dist.log_prob(b) if is_diagonal_normal(d) else None)
        return terms[::-1] if self.top_down else terms

    def tempered(self, temperature: float) -> Chain:
        """The chain drawn with every conditional's Gaussian scale times `temperature` (`distributions.tempered`)."""
        steps = [Tempered(step, temperature) for step in self.steps]
        return Chain(tempered(self.first, temperature), steps, self.layer_sizes, self.top_down, self.params)

    def expand(self, batch_shape: torch.Size, _instance=None) -> Chain:
        return Chain(self.first.expand(torch.Size(batch_shape)), self.steps, self.layer_sizes, self.top_down, self.params)

    def detach(self) -> Chain:
        """The same density with every parameter cut from the graph (b₀'s distribution detached, the
        steps run with detached weights by `functional_call`), gradients still flowing through z:
        what DReG evaluates log Q with (Tucker et al. 2018 hold for any reparameterized Q)."""
        steps, params = [], []
        for step in self.steps:
            if hasattr(step, "detached"):  # a step that holds tensors of its own (a ladder's bottom-up Gaussian)
                steps.append(step.detached())
                params.append(None)
            else:
                steps.append(step)
                params.append({name: p.detach() for name, p in step.named_parameters()})
        return Chain(detached(self.first), steps, self.layer_sizes, self.top_down, params)


class Tempered(nn.Module):
    """A chain's step whose distributions are drawn at a temperature."""

    def __init__(self, step: nn.Module, temperature: float):
        super().__init__()
        self.step, self.temperature = step, temperature

    def forward(self, block: Tensor) -> Distribution:
        return tempered(self.step(block), self.temperature)


class HierarchicalEncoder(nn.Module):
    """x → Q(z|x) = Q(z₁|x) Π_l Q(z_l|z_{l−1}): `first` maps x to Q(z₁|x) (any posterior family);
    `upper[l]` maps z_l to Q(z_{l+1}|z_l) (diagonal Gaussians in `model.compose`)."""

    def __init__(self, first: nn.Module, upper: Sequence[nn.Module], sizes: Sequence[int]):
        super().__init__()
        self.first, self.upper, self.layer_sizes = first, nn.ModuleList(upper), tuple(sizes)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Chain:
        """Q(z|x), or for a conditional VAE Q(z|x, y) = Q(z₁|x, y) Π_l Q(z_l|z_{l−1}): y enters at the bottom."""
        return Chain(self.first(x) if context is None else self.first(x, context), self.upper, self.layer_sizes)

    def top(self, x: Tensor) -> Distribution:
        """Q(z_L | x) along the path of means: Q(z_L | z_{L−1} = E[z_{L−1}| … z₁ = E_Q[z₁|x]]), which a
        VampPrior over the top layer mixes (Tomczak & Welling's pseudo-inputs seen through the stack)."""
        q = self.first(x)
        for step in self.upper:
            try:
                mean = q.mean
            except NotImplementedError:
                raise VaekitError(f"a prior over the top layer that sees the encoder (VampPrior) needs Q(z₁|x) with a "
                                  f"closed-form mean; {type(q).__name__} has none: use --posterior diagonal or full") from None
            q = step(mean)
        return q


class PrecisionWeighted(nn.Module):
    """A ladder VAE's inference step (Sønderby et al. 2016, eqs. 17-19): z_{l+1} → Q(z_l|z_{l+1}, x) ∝
    p(z_l|z_{l+1}) N(z_l; μ̂, σ̂²), a top-down conditional (the prior's own network or Q's, held, not owned)
    times the bottom-up Gaussian of x, renormalized: precisions add and the means weigh by them, written
    as σ² = σ_p² σ̂² / (σ_p² + σ̂²) so that no precision is formed (nothing overflows as a σ → 0)."""

    def __init__(self, generative: nn.Module, loc: Tensor, scale: Tensor, params: dict[str, Tensor] | None = None):
        super().__init__()
        self._generative = (generative,)
        self.loc, self.scale, self.params = loc, scale, params

    def forward(self, upper: Tensor) -> Distribution:
        step = self._generative[0]
        p = step(upper) if self.params is None else functional_call(step, self.params, (upper,))
        if not is_diagonal_normal(p):
            raise VaekitError(f"a ladder VAE needs diagonal Gaussian conditionals p(z_l|z_l+1); got {type(p).__name__}")
        p_loc, p_scale = p.base_dist.loc, p.base_dist.scale
        norm = torch.hypot(p_scale, self.scale)
        a, b = (p_scale / norm).pow(2), (self.scale / norm).pow(2)  # the weights σ_p²/(σ_p²+σ̂²), σ̂²/(σ_p²+σ̂²)
        return diagonal_normal(b * p_loc + a * self.loc, p_scale * self.scale / norm, validate_args=False)

    def detached(self) -> PrecisionWeighted:
        """The same step with the bottom-up Gaussian and the generative weights cut from the graph (DReG)."""
        params = {name: p.detach() for name, p in self._generative[0].named_parameters()}
        return PrecisionWeighted(self._generative[0], self.loc.detach(), self.scale.detach(), params)


class LadderEncoder(HierarchicalEncoder):
    """x → Q(z|x) drawn top-down (a ladder VAE, Sønderby et al. 2016). A deterministic bottom-up pass gives
    a Gaussian N(μ̂_l, σ̂_l²) per layer from the same networks as the bottom-up Q (`first` on x, then each of
    `upper` on the layer below's mean μ̂: `top`'s path); Q(z_L|x) is the top one, and each lower layer is
    drawn given the one above by `PrecisionWeighted` with a top-down step: the prior's p(z_l|z_{l+1}) (the
    paper's equations; `attach` gives it the prior, held, not owned: the parameters are the bottom-up
    model's, only the way Q is drawn differs), or with `down` (the steps listed from the top, z_{l+1} → a
    diagonal Gaussian over z_l) networks of Q's own, as the authors' code trains it (`ladder_share_params
    False`): then p(z_l|z_{l+1}) is the generative model's alone and cannot pull Q with it."""

    def __init__(self, first: nn.Module, upper: Sequence[nn.Module], sizes: Sequence[int],
                 down: Sequence[nn.Module] | None = None):
        super().__init__(first, upper, sizes)
        self.down = None if down is None else nn.ModuleList(down)

    def attach(self, prior: HierarchicalPrior) -> None:
        self._prior = (prior,)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Chain:
        gaussians = [_bottom_up(self.first(x) if context is None else self.first(x, context))]
        for step in self.upper:
            gaussians.append(_bottom_up(step(gaussians[-1].mean)))
        # top-down: lower[i] maps z_{L−i} to a Gaussian over z_{L−i−1}, met by layer L−i−1's bottom-up Gaussian
        lower = self._prior[0].lower if self.down is None else self.down
        steps = [PrecisionWeighted(p, g.base_dist.loc, g.base_dist.scale)
                 for p, g in zip(lower, reversed(gaussians[:-1]), strict=True)]
        return Chain(gaussians[-1], steps, self.layer_sizes, top_down=True)


def _bottom_up(q: Distribution) -> Distribution:
    """q, refused unless a diagonal Gaussian: a ladder step needs its mean and scale."""
    if not is_diagonal_normal(q):
        raise VaekitError("a ladder VAE (--inference ladder) needs diagonal Gaussians bottom-up: use "
                          f"--posterior diagonal, not {type(q).__name__}")
    return q


class GivenData(nn.Module):
    """An inference step that sees the data too: z_{l+1} → Q(z_l | x, z_{l+1}) = `encoder([x, z_{l+1}])`, x bound
    (held, not owned: the `HVAEEncoder` owns the networks). `params`: the encoder's, detached (DReG)."""

    def __init__(self, encoder: nn.Module, x: Tensor, params: dict[str, Tensor] | None = None):
        super().__init__()
        self._encoder, self.x, self.params = (encoder,), x, params

    def forward(self, upper: Tensor) -> Distribution:
        joint = torch.cat([self.x.expand(*upper.shape[:-1], self.x.shape[-1]), upper], -1)
        encoder = self._encoder[0]
        return encoder(joint) if self.params is None else functional_call(encoder, self.params, (joint,))

    def detached(self) -> GivenData:
        return GivenData(self._encoder[0], self.x.detach(),
                         {name: p.detach() for name, p in self._encoder[0].named_parameters()})


class HVAEEncoder(nn.Module):
    """x → Q(z|x) = Q(z_L|x) Π_l Q(z_l | x, z_{l+1}), drawn top-down with x at every layer: Tomczak & Welling's
    (2018) HVAE, whose prior is p(z_L) p(z_{L−1}|z_L) … and whose decoder sees every layer, p(x|z₁, …, z_L).
    `first` maps x to Q(z_L|x) (a VampPrior over z_L mixes it at its pseudo-inputs); `lower[i]`, listed from
    the top down, maps [x, z_{L−i}] to Q(z_{L−i−1}|x, z_{L−i})."""

    def __init__(self, first: nn.Module, lower: Sequence[nn.Module], sizes: Sequence[int]):
        super().__init__()
        self.first, self.lower, self.layer_sizes = first, nn.ModuleList(lower), tuple(sizes)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Chain:
        if context is not None:
            raise VaekitError("the HVAE (--inference hvae) is not conditioned on labels yet: use --inference "
                              "bottom-up with --condition label")
        return Chain(self.first(x), [GivenData(q, x) for q in self.lower], self.layer_sizes, top_down=True)


class TopPath(nn.Module):
    """An encoder's `top` as a module's forward, held in a tuple so the prior that uses it does not own it."""

    def __init__(self, encoder: HierarchicalEncoder):
        super().__init__()
        self._encoder = (encoder,)

    def forward(self, x: Tensor) -> Distribution:
        return self._encoder[0].top(x)


class HierarchicalPrior(nn.Module):
    """p(z) = p(z_L) Π_l p(z_l | z_{l+1}): `top` any registered prior module over z_L (its `forward()`
    gives the distribution), `lower[l]` maps z_{l+2} to p(z_{l+1}|z_{l+2}), listed from the top down."""

    def __init__(self, top: nn.Module, lower: Sequence[nn.Module], sizes: Sequence[int]):
        super().__init__()
        self.top, self.lower, self.layer_sizes = top, nn.ModuleList(lower), tuple(sizes)
        self.conditional = getattr(top, "conditional", False)  # p(z_L|y): a conditional VAE's labels reach the top
        self.latent_dim = sum(self.layer_sizes)

    def forward(self, context: Tensor | None = None) -> Chain:
        return Chain(self.top() if context is None else self.top(context), self.lower, self.layer_sizes, top_down=True)

    def pictures(self) -> dict:
        return self.top.pictures() if hasattr(self.top, "pictures") else {}


INFERENCE = {"bottom-up": HierarchicalEncoder, "ladder": LadderEncoder,  # how Q runs through the layers
             "ladder-unshared": LadderEncoder,  # its top-down steps its own (`model.stack` builds them)
             "top-down": TopDownEncoder,  # a deep VAE whose groups hang on one shared path (`parts.topdown`)
             "hvae": HVAEEncoder}  # Tomczak & Welling 2018: Q(z_L|x) Q(z_l|x, z_l+1), p(x|z₁, …, z_L)
