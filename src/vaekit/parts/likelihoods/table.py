"""Tables of mixed columns with missing cells (support "table"): p(x|z) = Π_j p(x_j|z) over the observed
cells only (Nazábal et al. 2020, HI-VAE; Mattei & Frellsen 2019, MIWAE), each column's family from the
schema (`vaekit.data.tables`), and the encoder's view of a row with holes (`TableInput`).

Per column j of kind:
- real: x_j = shift + spread·v, v ~ N(μ, σ²) on the standardized value, σ learned per column; its density
  in the data's units is N(v; μ, σ²)/spread.
- positive: log x_j = shift + spread·v, v as for real: log-normal, density N(v; μ, σ²)/(spread·x_j).
- count: negative binomial, mean e^(η + shift), total count r learned per column; poisson: Poisson(e^(η + shift));
  shift the log of the training mean, so the rate starts at the data's scale (counts in the hundreds).
- binary: Bernoulli(sigmoid(η)); categorical: softmax over the column's K levels.
- ordinal: cumulative logit, P(x_j ≤ k) = sigmoid(θ_k − η), thresholds θ₀ < … < θ_{K−2} learned per column
  (McCullagh 1980); P(x_j = k) = sigmoid(θ_k − η) − sigmoid(θ_{k−1} − η), in logs without cancellation.

A missing cell (NaN) contributes nothing to log p(x|z), and its value never reaches a gradient (it is
replaced before any density is taken). `log_prob` sums the observed columns; `column_log_prob` gives each.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from ...data.tables import LEVELED, Column, Schema
from ...errors import VaekitError
from .base import LIKELIHOODS, Likelihood
from .counts import NegativeBinomialLogMean, PoissonLogRate

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
OUTPUTS = {"real": 1, "positive": 1, "count": 1, "poisson": 1, "binary": 1, "ordinal": 1}  # categorical: K


def outputs(c: Column) -> int:
    """Decoder outputs column c takes: K logits for a categorical, else one."""
    return len(c.levels) if c.kind == "categorical" else OUTPUTS[c.kind]


def log_interval(a: Tensor, b: Tensor) -> Tensor:
    """log(sigmoid(b) − sigmoid(a)) for a < b (±inf allowed): log σ(b) + log σ(−a) + log(1 − e^{a−b})."""
    return F.logsigmoid(b) + F.logsigmoid(-a) + torch.log1p(-torch.exp(a - b))


class MixedTable(Distribution):
    """p(x|z) of one row per batch element: event shape [C], parameters h [..., H] split by the schema."""

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real  # codes: values, level indices or NaN

    def __init__(self, head: TableObservation, h: Tensor):
        self.head, self.h = head, h
        super().__init__(h.shape[:-1], torch.Size([len(head.schema)]), validate_args=False)

    def _part(self, j: int) -> Tensor:
        lo, hi = self.head.slices[j]
        return self.h[..., lo:hi]

    def column_log_prob(self, x: Tensor) -> Tensor:
        """log p(x_j|z) for every column [..., C], 0 where x_j is missing (NaN)."""
        mask = ~x.isnan()
        x0 = torch.where(mask, x, torch.zeros_like(x))
        out = []
        for j, c in enumerate(self.head.schema.columns):
            out.append(self.head.column_log_prob(j, c, self._part(j), x0[..., j]))
        lp = torch.stack(torch.broadcast_tensors(*out), -1)
        return torch.where(mask, lp, torch.zeros_like(lp))

    def log_prob(self, value: Tensor) -> Tensor:
        if self.head.validate_args is not False:
            self.head.check(value)
        return self.column_log_prob(value).sum(-1)

    def probs(self, j: int) -> Tensor:
        """The probabilities of a leveled column's levels [..., K]."""
        c = self.head.schema.columns[j]
        return self.head.level_log_probs(j, c, self._part(j)).exp()

    @property
    def mean(self) -> Tensor:
        """Each column's point value in the data's units [..., C]: E[x_j|z] for real, positive and count
        columns, the most probable level's index for binary, categorical and ordinal ones."""
        cols = []
        for j, c in enumerate(self.head.schema.columns):
            h = self._part(j)
            if c.kind in ("binary", "categorical", "ordinal"):
                cols.append(self.head.level_log_probs(j, c, h).argmax(-1).to(h.dtype))
            elif c.kind in ("count", "poisson"):
                cols.append((h[..., 0] + c.shift).exp())
            else:
                mu, sigma = h[..., 0], self.head.sigma(j)
                if c.kind == "real":
                    cols.append(c.shift + c.spread * mu)
                else:
                    cols.append(torch.exp(c.shift + c.spread * mu + 0.5 * (c.spread * sigma) ** 2))
        return torch.stack(cols, -1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            cols = []
            for j, c in enumerate(self.head.schema.columns):
                h = self._part(j).expand(*sample_shape, *self.h.shape[:-1], self._part(j).shape[-1])
                if c.kind in ("binary", "categorical", "ordinal"):
                    logp = self.head.level_log_probs(j, c, h)
                    cols.append(torch.distributions.Categorical(logits=logp).sample().to(h.dtype))
                elif c.kind == "poisson":
                    cols.append(torch.poisson((h[..., 0] + c.shift).exp()))
                elif c.kind == "count":
                    eta = h[..., 0] + c.shift
                    cols.append(NegativeBinomialLogMean(eta, self.head.log_r(j).expand_as(eta)).sample())
                else:
                    v = h[..., 0] + self.head.sigma(j) * torch.randn_like(h[..., 0])
                    v = c.shift + c.spread * v
                    cols.append(v if c.kind == "real" else v.exp())
            return torch.stack(cols, -1)


class TableObservation(Likelihood):
    """The mixed likelihood's head: slices of the decoder output per column, and the parameters learned per
    column (log σ of real and positive columns, log r of counts, the ordinal thresholds)."""

    support = "table"

    def refuse_composition(self, inference: str, conditional: bool, prior: str, data_dim: int) -> None:
        """The compositions a table's likelihood does not enter yet, refused in one line each."""
        if len(self.schema) != data_dim:
            raise VaekitError(f"likelihood mixed: the schema has {len(self.schema)} columns, the data {data_dim}")
        if inference in ("top-down", "hvae") or conditional:
            raise VaekitError("likelihood mixed (a table) takes --inference bottom-up or ladder, without --condition")
        if prior == "vampprior":
            raise VaekitError("--prior vampprior learns pseudo-inputs in the data's space, which a table of levels and "
                              "holes is not: use --prior standard or mog")

    def __init__(self, schema: Schema):
        super().__init__()
        self.schema = schema
        self.slices, start = [], 0
        for c in schema.columns:
            self.slices.append((start, start + outputs(c)))
            start += outputs(c)
        self.width = start
        self.log_sigma = nn.ParameterDict({str(j): nn.Parameter(torch.zeros(())) for j, c in enumerate(schema.columns)
                                           if c.kind in ("real", "positive")})
        self.log_total_count = nn.ParameterDict({str(j): nn.Parameter(torch.zeros(()))
                                                 for j, c in enumerate(schema.columns) if c.kind == "count"})
        # ordinal thresholds θ₀ < θ₁ < …: the first free, then positive steps (softplus), spread around 0
        self.cuts = nn.ParameterDict({str(j): nn.Parameter(self._initial_cuts(len(c.levels)))
                                      for j, c in enumerate(schema.columns) if c.kind == "ordinal"})
        kinds = [c.kind for c in schema.columns]  # what `check` admits, per column, as masks: one pass, one sync
        for name, which in (("_leveled", LEVELED), ("_whole", (*LEVELED, "count", "poisson")), ("_positive", ("positive",))):
            self.register_buffer(name, torch.tensor([k in which for k in kinds]), persistent=False)
        self.register_buffer("_levels", torch.tensor([len(c.levels) if c.levels else math.inf for c in schema.columns]),
                             persistent=False)

    @staticmethod
    def _initial_cuts(levels: int) -> Tensor:
        steps = torch.full((levels - 1,), math.log(math.expm1(1.0)))  # softplus⁻¹(1): thresholds 1 apart
        steps[0] = -(levels - 2) / 2
        return steps

    def out_features(self, data_dim: int) -> int:
        return self.width

    def encoder_input(self) -> nn.Module:
        return TableInput(self.schema)

    def check(self, x: Tensor) -> None:
        """Codes the schema admits (NaN anywhere): level indices 0…K−1, counts whole and ≥ 0, positives > 0;
        else one line naming the column and the first bad row."""
        if x.shape[-1] != len(self.schema):
            raise VaekitError(f"a table of {len(self.schema)} columns, got codes of shape {tuple(x.shape)}")
        rows = x.reshape(-1, x.shape[-1])
        seen = ~rows.isnan()
        bad = rows.isinf() | seen & ((self._whole & ((rows != rows.round()) | (rows < 0)))
                                     | (self._leveled & (rows >= self._levels)) | (self._positive & ~(rows > 0)))
        if not bool(bad.any()):  # the only host synchronization of a valid batch
            return
        row, j = (int(i) for i in bad.nonzero()[0])
        c = self.schema.columns[j]
        what = {"count": "whole numbers ≥ 0", "poisson": "whole numbers ≥ 0", "positive": "numbers > 0",
                "real": "finite numbers"}.get(c.kind, f"level indices 0…{len(c.levels) - 1}")
        raise VaekitError(f"column {c.name!r} ({c.kind}) takes {what} (NaN where missing); row {row} holds "
                          f"{float(rows[row, j]):g}")

    def sigma(self, j: int) -> Tensor:
        return self.log_sigma[str(j)].exp()

    def log_r(self, j: int) -> Tensor:
        return self.log_total_count[str(j)]

    def thresholds(self, j: int) -> Tensor:
        raw = self.cuts[str(j)]
        return torch.cat([raw[:1], raw[:1] + F.softplus(raw[1:]).cumsum(0)])

    def level_log_probs(self, j: int, c: Column, h: Tensor) -> Tensor:
        """log P(x_j = k|z) for each level k of a leveled column, [..., K]."""
        if c.kind == "categorical":
            return F.log_softmax(h, -1)
        if c.kind == "binary":
            return torch.cat([F.logsigmoid(-h), F.logsigmoid(h)], -1)
        theta = self.thresholds(j).to(h.dtype) - h  # [..., K−1]: θ_k − η
        inf = torch.full_like(theta[..., :1], math.inf)
        return log_interval(torch.cat([-inf, theta], -1), torch.cat([theta, inf], -1))

    def column_log_prob(self, j: int, c: Column, h: Tensor, x: Tensor) -> Tensor:
        """log p(x_j|z) of the filled cells x [...] (any value where missing: masked by the caller)."""
        if c.kind in ("real", "positive"):
            log_sigma = self.log_sigma[str(j)].to(h.dtype)
            v = torch.where(x > 0, x, torch.ones_like(x)).log() if c.kind == "positive" else x
            z = ((v - c.shift) / c.spread - h[..., 0]) / log_sigma.exp()
            lp = -0.5 * z * z - log_sigma - HALF_LOG_2PI - math.log(c.spread)
            return lp - v if c.kind == "positive" else lp
        if c.kind == "poisson":
            return PoissonLogRate(h[..., 0] + c.shift).log_prob(x)
        if c.kind == "count":
            eta = h[..., 0] + c.shift
            return NegativeBinomialLogMean(eta, self.log_r(j).to(h.dtype).expand_as(eta)).log_prob(x)
        logp = self.level_log_probs(j, c, h)
        k = x.long().expand(logp.shape[:-1]).unsqueeze(-1)
        return logp.gather(-1, k).squeeze(-1)

    def forward(self, h: Tensor) -> Distribution:
        return MixedTable(self, h)


class TableInput(nn.Module):
    """A row with holes as the encoder sees it (MIWAE: the data zero-filled, and the mask): per column its
    standardized value (real: (x − shift)/spread; positive: of log x; counts: log(1 + x) − shift), binary 0/1, a
    one-hot of the level for categorical and ordinal columns, 0 where missing; then the mask [C]."""

    def __init__(self, schema: Schema):
        super().__init__()
        cols = schema.columns
        self.numeric = [j for j, c in enumerate(cols) if c.kind not in ("categorical", "ordinal")]
        self.onehot = [(j, len(c.levels)) for j, c in enumerate(cols) if c.kind in ("categorical", "ordinal")]
        kinds = [cols[j].kind for j in self.numeric]
        self.register_buffer("shift", torch.tensor([cols[j].shift for j in self.numeric]), persistent=False)
        self.register_buffer("spread", torch.tensor([cols[j].spread for j in self.numeric]), persistent=False)
        flags = {"is_log": [k == "positive" for k in kinds], "is_count": [k in ("count", "poisson") for k in kinds]}
        for name, values in flags.items():  # bool even when no column is numeric (an empty list is float)
            self.register_buffer(name, torch.tensor(values, dtype=torch.bool), persistent=False)
        self.features = len(self.numeric) + sum(k for _, k in self.onehot) + len(cols)

    def forward(self, x: Tensor) -> Tensor:
        mask = ~x.isnan()
        x0 = torch.where(mask, x, torch.ones_like(x))  # 1: a safe value for log; zeroed below
        v = x0[..., self.numeric]
        v = torch.where(self.is_log, v.clamp_min(1e-30).log(), v)
        v = torch.where(self.is_count, torch.log1p(v.clamp_min(0)), v)
        v = (v - self.shift) / self.spread
        parts = [v * mask[..., self.numeric]]
        for j, k in self.onehot:
            parts.append(F.one_hot(x0[..., j].long().clamp(0, k - 1), k).to(x.dtype) * mask[..., j : j + 1])
        parts.append(mask.to(x.dtype))
        return torch.cat(parts, -1)


@LIKELIHOODS.register("mixed")
def mixed(data_dim: int, schema: Schema | None = None) -> Likelihood:
    """a product over a table's columns, each its kind's family (Gaussian, log-normal, negative binomial, Poisson, Bernoulli, categorical, cumulative-logit ordinal), over the observed cells only (HI-VAE, MIWAE)"""
    return TableObservation(schema if schema is not None else Schema.real(data_dim))
