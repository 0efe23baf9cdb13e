"""What a model of a table with holes answers: the missing cells (imputation) and how unlikely a row is
(anomaly scores), both by importance sampling from Q(z|x_obs) (Mattei & Frellsen 2019, MIWAE §4).

With z_i ~ Q(z|x_obs) and normalized weights w_i ∝ p(x_obs, z_i)/Q(z_i|x_obs), i = 1…k:
- single imputation: E[x_mis|x_obs] ≈ Σ_i w_i E[x_mis|z_i] for real, positive and count columns; for a
  leveled column the probabilities P(x_j = level|x_obs) ≈ Σ_i w_i P(x_j = level|z_i) and their mode;
- multiple imputation (`draws` M): sampling-importance-resampling, z drawn among the z_i by the w_i, then
  x_mis ~ p(x_mis|z): M completed tables from (approximately) p(x_mis|x_obs);
- the score of a row: −log p(x_obs) ≈ −log (1/k) Σ_i p(x_obs, z_i)/Q(z_i|x_obs) with its Monte Carlo error
  (the delta method), and each column's part of −E[log p(x_obs|z)|x_obs] ≈ −Σ_i w_i log p(x_j|z_i).
Observed cells are never changed: the result keeps them bit for bit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.table_files import MAX_TABLE_CELLS, Table
from ..errors import VaekitError
from ..objectives.estimators import check_data, log_weights
from ..rng import batch_seed, forked_rng
from .estimates import MAX_IMPORTANCE_SAMPLES, delta_method_variance, eval_mode, whole_number
from .overflow import overflowing_rows, overflows


@dataclass
class Imputation:
    """filled [N, C]: x with each missing cell imputed; probs: {column index: [N, K]} the imputed levels'
    probabilities of each leveled column (rows with the cell observed too); draws [M, N, C] (M ≥ 0)."""

    filled: Tensor
    probs: dict[int, Tensor]
    draws: Tensor


@dataclass
class Scores:
    """Per row: score = −log p(x_obs) in nats, its Monte Carlo standard error, the ESS of the k weights, and
    columns [N, C]: each column's −E[log p(x_j|z)|x_obs] (0 where the cell is missing)."""

    score: Tensor
    mc_stderr: Tensor
    ess: Tensor
    columns: Tensor


def _table_head(model):
    head = getattr(model.decoder, "head", None)
    if getattr(head, "support", None) != "table":
        raise VaekitError("imputation and anomaly scores take a model of a table (--likelihood mixed); this one's "
                          f"likelihood is {type(head).__name__}")
    return head


def _codes(model, x: Any, k: Any, seed: Any, batch_size: Any, draws: Any = 0) -> tuple[Tensor, Tensor]:
    """(x as the table's codes [N, C] in the model's float dtype, x as given where it is floating point: what the
    observed cells are kept as) — a `Table` gives its codes, as `read_table` made them — that the schema admits,
    the counts whole numbers; or one line naming what is wrong (a path, no rows, an infinite cell)."""
    if isinstance(x, Table):
        x = x.codes
    if isinstance(x, (str, os.PathLike)):
        raise VaekitError(f"x must be a table's codes [N, C] (vaekit.read_table(path, schema).codes), got the path {x!r:.80}")
    for name, value, low in (("k", k, 1), ("seed", seed, 0), ("batch_size", batch_size, 1), ("draws", draws, 0)):
        if not whole_number(value, low):
            raise VaekitError(f"{name} must be a whole number ≥ {low}, got {value!r:.40}")
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise VaekitError(f"x must be a table's codes [N, C], got {type(x).__name__} ({e})") from None
    if x.dim() != 2 or x.shape[0] == 0 or x.is_complex() or x.dtype == torch.bool:
        raise VaekitError(f"x must be a table's codes [N, C] with at least one row, got {x.dtype} {tuple(x.shape)}")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    given = x if x.is_floating_point() else x.to(dtype)
    x = x.to(dtype)
    _table_head(model).check(given)  # before the encoder sees an infinite cell: one line naming the column and row
    return x, given


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    """x with the cells `mask` marks unobserved (False) made NaN; x itself without a mask."""
    if mask is None:
        return x
    try:
        mask = torch.as_tensor(mask) if not isinstance(mask, (str, bytes)) else None
    except (TypeError, ValueError, RuntimeError):  # a ragged list, an object array
        mask = None
    if mask is None or mask.is_meta or mask.shape != x.shape or mask.dtype != torch.bool:
        raise VaekitError(f"mask must be bool of x's shape {tuple(x.shape)}, got "
                          + (f"{mask.dtype} {tuple(mask.shape)}" if mask is not None else "no tensor"))
    return torch.where(mask.to(x.device), x, torch.nan)


def _draws(model, xb: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """z [k, B, d] ~ Q(z|x_obs), the log-weights [k, B] and the normalized weights [k, B]."""
    q_z = model.posterior(xb)
    z = q_z.sample((k,))
    lw = log_weights(model, xb, k, q_z, z).double()
    return z, lw, torch.softmax(lw, 0)


@torch.no_grad()
def impute(model, x: Tensor, mask: Tensor | None = None, k: int = 1000, draws: int = 0, seed: int = 0,
           batch_size: int = 256) -> Imputation:
    """The missing cells of the table x [N, C] (NaN, or False in `mask` [N, C] where given) filled from a trained
    model (module doc), `draws` completed tables by sampling-importance-resampling besides. Seeded: the same
    seed, the same numbers."""
    head = _table_head(model)
    x, given = _codes(model, x, k, seed, batch_size, draws)
    check_data(model, x)
    x, given = _masked(x, mask), _masked(given, mask)  # the observed cells are kept as given (float64 stays)
    if k > MAX_IMPORTANCE_SAMPLES or draws * x.numel() > MAX_TABLE_CELLS:  # the draws are held whole, then written
        raise VaekitError(f"impute: k must be ≤ {MAX_IMPORTANCE_SAMPLES:,} and draws × cells ≤ {MAX_TABLE_CELLS:,} "
                          f"(the most cells vaekit reads from a table), got k = {k:,}, draws = {draws:,} of "
                          f"{x.numel():,} cells")
    cols = head.schema.columns
    leveled = [j for j, c in enumerate(cols) if c.kind in ("binary", "categorical", "ordinal")]
    filled, probs, many = given.clone(), {j: [] for j in leveled}, []
    with forked_rng(x.device), eval_mode(model):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            z, _, w = _draws(model, xb, k)
            p = model.p_x_given_z(z)  # batch [k, B]
            guess = (w[..., None] * p.mean.double()).sum(0)  # [B, C]: right for the numeric columns
            for j in leveled:
                pj = (w[..., None] * p.probs(j).double()).sum(0)  # [B, K]
                probs[j].append(pj.float())
                guess[:, j] = pj.argmax(-1).double()
            missing = xb.isnan()
            kept = given[start : start + len(xb)]
            filled[start : start + len(xb)] = torch.where(missing, guess.to(kept.dtype), kept)
            if draws:
                pick = torch.multinomial(w.T.float(), draws, replacement=True)  # [B, M]: which z_i, per row
                zm = z[pick.T, torch.arange(len(xb))]  # [M, B, d]
                xm = model.p_x_given_z(zm).sample()
                many.append(torch.where(missing, xm.to(kept.dtype), kept))
    return Imputation(filled, {j: torch.cat(v) for j, v in probs.items()},
                      torch.cat(many, 1) if many else given.new_zeros((0, *x.shape)))


@torch.no_grad()
def score(model, x: Tensor, mask: Tensor | None = None, k: int = 1000, seed: int = 0, batch_size: int = 256) -> Scores:
    """Anomaly scores of the rows of x [N, C] (module doc): −log p(x_obs) with its Monte Carlo error and each
    column's part; x_obs: the cells not NaN (and True in `mask` where given). Seeded. A row on which the model's
    distributions overflow (`overflow`: values far outside the training data), or whose log-density is NaN (inf − inf
    on such values), scores +inf, its parts NaN."""
    _table_head(model)
    x, _ = _codes(model, x, k, seed, batch_size)
    check_data(model, x)
    x = _masked(x, mask)
    if k < 2:
        raise VaekitError(f"score: k must be ≥ 2 (the Monte Carlo error needs two weights), got {k}")
    out = []
    with forked_rng(x.device), eval_mode(model):
        for b, start in enumerate(range(0, len(x), batch_size)):
            xb = x[start : start + batch_size]
            torch.manual_seed(batch_seed(seed, b))  # each batch its own draws: a retried one draws them again
            try:
                out.append(_scores(model, xb, k))
            except ValueError as e:  # a row far outside the training data: scored +inf, the others as usual
                far = overflowing_rows(model, xb) if overflows(e) else []
                if not far:
                    raise
                blank = xb.clone()
                blank[far] = torch.nan  # no cell seen: the batch keeps its shape, so the other rows their draws
                torch.manual_seed(batch_seed(seed, b))
                got = _scores(model, blank, k)
                for t, lost in zip(got, (torch.inf, torch.nan, 0.0, torch.nan)):
                    t[far] = lost
                out.append(got)
    return Scores(*(torch.cat(t) for t in zip(*out)))


def _scores(model, xb: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """score, its Monte Carlo error, ESS [B] and each column's part [B, C] of the rows xb."""
    z, lw, w = _draws(model, xb, k)
    log_p = torch.logsumexp(lw, 0) - math.log(k)
    ess = torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0))
    parts = -(w[..., None] * model.p_x_given_z(z).column_log_prob(xb).double()).sum(0)
    mc = delta_method_variance(ess, k).sqrt()
    unseen = torch.isnan(xb).all(1)  # no cell observed: log p(x_obs) = log ∫ p(z) dz = 0 exactly, no noise
    log_p, mc, parts = log_p.masked_fill(unseen, 0.0), mc.masked_fill(unseen, 0.0), parts.masked_fill(
        unseen[:, None], 0.0)
    lost = log_p.isnan()  # valid distributions, but inf − inf on the row's values: as far out as an overflow
    return -log_p.masked_fill(lost, -torch.inf), mc.masked_fill(lost, torch.nan), ess, parts.masked_fill(
        lost[:, None], torch.nan)


@dataclass
class ColumnQuality:
    """Per column of a table: its name and kind, how many cells were observed, how well the model gives them
    back from the row (reconstruction: E[x|z] at z = Q's mean, with every cell seen) and fills them when hidden
    (imputation: a seeded share of the observed cells removed and imputed), against the column's mean or mode;
    RMSE in units of the column's training sd (numeric columns) or accuracy (leveled ones), and the pairs
    (true, imputed) of the hidden cells for a picture."""

    name: str
    kind: str
    observed: int
    measure: str  # "rmse/sd" or "accuracy"
    reconstruction: float
    imputation: float
    baseline: float  # the same measure for the training mean (numeric) or mode (leveled) in each hidden cell
    pairs: tuple[Tensor, Tensor]


@torch.no_grad()
def column_quality(model, x: Tensor, reference: Tensor, hide: float = 0.2, k: int = 200, seed: int = 0) -> list[ColumnQuality]:
    """`ColumnQuality` of every column on the rows x [N, C]; `reference` (the training split) gives the mean or
    mode a column falls back on, and the spread its RMSE is measured in."""
    head = _table_head(model)
    seen = ~x.isnan()
    g = torch.Generator().manual_seed(seed)
    hidden = seen & (torch.rand(x.shape, generator=g) < hide)
    recon = model.reconstruct(x)
    filled = impute(model, x, ~hidden, k=k, seed=seed).filled
    out = []
    for j, c in enumerate(head.schema.columns):
        ref = reference[:, j][~reference[:, j].isnan()].double()
        t, s, h = x[seen[:, j], j].double(), recon[seen[:, j], j].double(), hidden[:, j]
        truth, guess = x[h, j].double(), filled[h, j].double()
        if c.kind in ("binary", "categorical", "ordinal"):
            mode = float(torch.mode(ref).values)
            measure, rec, imp, base = "accuracy", _acc(s, t), _acc(guess, truth), _acc(torch.full_like(truth, mode), truth)
        else:
            sd = float(ref.std()) or 1.0
            measure = "rmse/sd"
            rec, imp = _rmse(s, t) / sd, _rmse(guess, truth) / sd
            base = _rmse(torch.full_like(truth, float(ref.mean())), truth) / sd
        out.append(ColumnQuality(c.name, c.kind, int(seen[:, j].sum()), measure, rec, imp, base, (truth, guess)))
    return out


def _acc(a: Tensor, b: Tensor) -> float:
    return float((a == b).double().mean()) if len(a) else math.nan


def _rmse(a: Tensor, b: Tensor) -> float:
    return float(((a - b) ** 2).mean().sqrt()) if len(a) else math.nan
