"""Inverse autoregressive flow (Kingma et al. 2016) on a diagonal Gaussian, with MADE networks
(Germain et al. 2015): the pieces of the `iaf` posterior (`posteriors` registers it).

Q(z|x): z₀ = μ(x) + σ(x) ⊙ ε, ε ~ N(0, I), then T steps, each (m, s) = MADE_t(z_{t−1}, c(x)) and the
numerically stable update of the paper (its eq. 14 and Algorithm 1):
    σ_t = sigmoid(s + FORGET_BIAS),  z_t = σ_t ⊙ z_{t−1} + (1 − σ_t) ⊙ m,  log|det ∂z_t/∂z_{t−1}| = Σ_i log σ_t,i
with the order of the variables reversed between steps. Output i of a MADE depends on z_<i only, so
each step's Jacobian is triangular with diagonal σ_t, and
    log Q(z_T|x) = log N(z₀; μ, diag σ²) − Σ_t Σ_i log σ_t,i.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints
from torch.distributions.utils import _standard_normal

FORGET_BIAS = 2.0  # s + 2 starts σ_t near sigmoid(2) ≈ 0.88: each step close to the identity (the paper's "+1 or +2")
LOG_2PI = math.log(2.0 * math.pi)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (a buffer, rebuilt, not saved)."""

    def __init__(self, n_in: int, n_out: int, mask: Tensor):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """(z: [..., k], c: [..., C]) → (m, s), each [..., k], output i a function of z_<i and c only.

    Germain et al. 2015: input i has degree i, hidden units degrees in 1..k−1, and a connection
    exists only from a lower-or-equal degree (hidden) or a strictly lower one (to the outputs). The
    context enters the first hidden layer unmasked. Two hidden layers of `hidden` ELU units.
    """

    def __init__(self, latent_dim: int, context: int, hidden: int):
        super().__init__()
        d_in = torch.arange(1, latent_dim + 1)
        d_hid = torch.arange(hidden) % max(1, latent_dim - 1) + 1
        self.first = MaskedLinear(latent_dim, hidden, d_hid[:, None] >= d_in[None, :])
        self.context = nn.Linear(context, hidden, bias=False)
        self.middle = MaskedLinear(hidden, hidden, d_hid[:, None] >= d_hid[None, :])
        self.last = MaskedLinear(hidden, 2 * latent_dim, torch.cat([d_in, d_in])[:, None] > d_hid[None, :])

    def forward(self, z: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        h = F.elu(self.first(z) + self.context(c))  # c: [B, C] broadcasts over the sample dimensions of z
        m, s = self.last(F.elu(self.middle(h))).chunk(2, dim=-1)
        return m.to(z.dtype), s.to(z.dtype)  # under bf16 autocast: the log-determinant is summed in z's dtype


class IAF(nn.Module):
    """T IAF steps: `forward(z₀, c)` → (z_T, Σ log σ) and `forward(z_T, c, inverse=True)` → (z₀, Σ log σ).

    The inverse is exact for any z_T: a step is inverted by k fixed-point passes
    z_{t−1} ← (z_t − (1 − σ_t) ⊙ m)/σ_t with (m, σ_t) at the current guess; pass n fixes coordinate
    n (the MADE's order), since m_n and σ_n depend only on coordinates < n, and after k passes every
    (m, σ_t) is the one the forward step used. Cost: k MADE passes per step instead of one.
    """

    def __init__(self, latent_dim: int, steps: int, context: int, hidden: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.steps = nn.ModuleList(MADE(latent_dim, context, hidden) for _ in range(steps))

    def forward(self, z: Tensor, c: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        return self._inverse(z, c) if inverse else self._forward(z, c)

    def _forward(self, z: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        log_det = z.new_zeros(z.shape[:-1])
        for t, made in enumerate(self.steps):
            if t:
                z = z.flip(-1)  # reverse the order between steps
            m, s = made(z, c)
            gate = torch.sigmoid(s + FORGET_BIAS)
            z = gate * z + (1 - gate) * m
            log_det = log_det + F.logsigmoid(s + FORGET_BIAS).sum(-1)
        return z, log_det

    def _inverse(self, z: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        log_det = z.new_zeros(z.shape[:-1])
        for t in reversed(range(len(self.steps))):
            x = z
            for _ in range(self.latent_dim):
                m, s = self.steps[t](x, c)
                gate = torch.sigmoid(s + FORGET_BIAS)
                x = (z - (1 - gate) * m) / gate
            log_det = log_det + F.logsigmoid(s + FORGET_BIAS).sum(-1)  # (m, s) of the last pass are exact
            z = x.flip(-1) if t else x
        return z, log_det


class IAFDistribution(Distribution):
    """Q(z|x) of `IAF` on the base N(loc, diag scale²), with context c: batch shape loc.shape[:-1], event [k].

    `rsample` is reparameterized and remembers log Q of the draw it returned (the forward pass gives
    it for free: log N(z₀) − Σ log σ); `log_prob(z)` of that same tensor returns it, so the ELBO and
    IWAE with Q's own draws cost one flow pass. Any other z (a detached or sliced copy, a chunk of
    the draws, a draw of an `expand`ed Q under torchrun, the DReG copy) goes through the exact
    sequential inverse (`IAF`): `log_prob` is exact for every z, the memo only saves time. `sample`
    remembers nothing (its value has no graph, and the score function needs log Q's gradient).

    E_Q[z] has no closed form: `mean` is not defined, so `vaekit.parts.distributions.mean_of` (`encode`,
    `reconstruct`, active units) takes the Monte Carlo mean of 256 draws.
    """

    arg_constraints: ClassVar[dict] = {"loc": constraints.real, "scale": constraints.positive,
                                       "context": constraints.real}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, context: Tensor, flow: IAF,
                 params: dict[str, Tensor] | None = None, validate_args: bool | None = None):
        self.loc, self.scale, self.context, self.flow, self.params = loc, scale, context, flow, params
        self._memo: tuple[Tensor, Tensor, bool] | None = None
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    def _flow(self, z: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        if self.params is None:
            return self.flow(z, self.context, inverse)
        return torch.func.functional_call(self.flow, self.params, (z, self.context), {"inverse": inverse})

    def _base_log_prob(self, eps: Tensor) -> Tensor:
        return (-0.5 * eps.pow(2) - self.scale.log() - 0.5 * LOG_2PI).sum(-1)

    def _draw(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
        eps = _standard_normal(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)
        z, log_det = self._flow(self.loc + self.scale * eps, inverse=False)
        return z, self._base_log_prob(eps) - log_det

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        z, log_q = self._draw(torch.Size(sample_shape))
        self._memo = (z, log_q, torch.is_grad_enabled())
        return z

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            return self._draw(torch.Size(sample_shape))[0]

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        memo = self._memo
        if memo is not None and value is memo[0] and (memo[2] or not torch.is_grad_enabled()):
            return memo[1]
        z0, log_det = self._flow(value, inverse=True)
        return self._base_log_prob((z0 - self.loc) / self.scale) - log_det

    def expand(self, batch_shape: torch.Size, _instance=None) -> IAFDistribution:
        shape = torch.Size(batch_shape)
        return IAFDistribution(self.loc.expand(shape + self.event_shape), self.scale.expand(shape + self.event_shape),
                               self.context.expand(shape + self.context.shape[-1:]), self.flow, self.params,
                               validate_args=False)

    def detach(self) -> IAFDistribution:
        """The same density with no gradient to φ: base, context and the MADEs' weights detached (the
        MADEs run by `torch.func.functional_call`), gradients still flowing through z. What DReG
        (`objectives.iwae(dreg=True)`) evaluates log Q with: its log_prob(z) takes the exact inverse."""
        params = {name: p.detach() for name, p in self.flow.named_parameters()}
        return IAFDistribution(self.loc.detach(), self.scale.detach(), self.context.detach(), self.flow, params,
                               validate_args=False)
