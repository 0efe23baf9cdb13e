"""The Dataset: splits as tensors, what a likelihood's support admits, binarization and standardization.

A `Dataset` keeps each split as one flattened tensor [N, D] in its stored dtype (uint8 stays uint8;
a memory map keeps float64 and integer types too, never copied whole) and converts per batch with
`prepare`: divide by `scale` (to the data's units: [0, 1] for grey levels), binarize if the config
says so, standardize if asked.

The likelihood's support decides what data are acceptable (SUPPORTS): "binary" (Bernoulli: 0/1, or
grey levels in [0, 1] that are binarized), "unit" (values in [0, 1], e.g. continuous Bernoulli),
"real" (any finite value, e.g. Gaussian), "table" (a table's codes, NaN where a cell is missing: the
mixed likelihood; `tables.py`), "count" (whole numbers ≥ 0, kept unscaled), "discrete256" (the
8-bit grey levels k/255, k = 0…255, after scaling: discretized logistic, categorical). Binarization is
stated, never implied, and only for a binary support: "dynamic" draws x ~ Bernoulli(pixel) afresh every
time an image is used (Burda et al. 2016), "static" draws once with a fixed seed, "none" keeps the
values (then a binary support requires 0/1 data), "auto" is dynamic for binary and none otherwise.
Standardization (real support only) maps each dimension to mean 0 and standard deviation 1 over the
training split; `restore` and `log_det_jacobian` take samples and densities back to the data's units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from ..errors import VaekitError
from .tables import Schema

IN_MEMORY = "tensors"  # the name of data given to vaekit.fit as tensors ([data] dataset): no file holds them

SPLITS = ("train", "val", "test")
SUPPORTS = ("binary", "unit", "real", "count", "discrete256", "table")  # "table": mixed columns, NaN where missing
BINARIZE = ("auto", "dynamic", "static", "none")
EVAL_BINARIZATION_SEED = 1234  # evaluation binarizes each split once with this seed, so numbers repeat
MIN_SPREAD = 1e-30  # a dimension whose training std is below this (0: float32 data of one value) is constant: not
# rescaled, spread 1. Any other is divided by its own sd, however small or however large its mean (data in small
# units, sd 1e-20, or near 1e10 with sd 1e3): its training values then have unit variance, never a blow-up


@dataclass
class Dataset:
    """name; shape: one example's shape (C, H, W) or (D,); splits: {"train"|"val"|"test": [N, D]}."""

    name: str
    shape: tuple[int, ...]
    splits: dict[str, Tensor]
    scale: float = 1.0  # stored value / scale: the data in its units (∈ [0, 1] for binary and unit supports)
    binarize: str = "none"  # "dynamic" or "none" once loaded (a static draw is stored, then "none")
    labels: dict[str, Tensor] = field(default_factory=dict)
    factors: dict[str, Tensor] = field(default_factory=dict)  # split → [N, F] ground-truth factors (shapes2d,
    # an .npz with `factors`): integer indices or real values, one column per factor
    factor_names: tuple[str, ...] = ()
    shift: Tensor | None = None  # float32 [D]: training mean per dimension when standardizing (set it with
    # with_standardization: prepare caches device copies), else None
    spread: Tensor | None = None  # float32 [D]: the training std per dimension (1 if constant), else None
    schema: Schema | None = None  # a table's columns (support "table"), fitted on the training split
    _on_device: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # device → (shift, spread)

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def split(self, name: str) -> Tensor:
        if name not in self.splits:
            raise VaekitError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(self.splits)}")
        return self.splits[name]

    def prepare(self, raw: Tensor, generator: torch.Generator | None = None, u: Tensor | None = None) -> Tensor:
        """A raw batch [B, D] → float32 raw/scale, binarized by a fresh draw when binarize='dynamic',
        standardized, (raw/scale − shift)/spread, when `shift` is set.

        u: optional uniform noise [B, D] for the draw (else drawn here from `generator`).
        """
        x = raw.to(torch.float32)
        if self.scale != 1.0:
            x = x / self.scale
        if self.binarize == "dynamic":
            # u < p with u ~ U(0, 1) is a Bernoulli(p) draw; 4× faster than torch.bernoulli on CPU
            if u is None:
                u = torch.rand(x.shape, generator=generator, device=x.device)
            x = (u < x).to(torch.float32)
        if self.shift is not None:
            shift, spread = self._affine(x)
            x = (x - shift) / spread
        return x

    def restore(self, x: Tensor) -> Tensor:
        """Undo the standardization of prepared values (samples, reconstructions, decoder means):
        x·spread + shift, in the data's units (raw/scale). x: [..., D] or [..., *shape]; identity when
        not standardizing."""
        if self.shift is None:
            return x
        shift, spread = self._affine(x)
        return x * spread + shift

    @property
    def log_det_jacobian(self) -> float:
        """−Σ_d log spread_d: the nats to add to a log-density of standardized data to get the log-density
        in the data's units (raw/scale; the scale's own −D log scale is not included). 0.0 when not
        standardizing."""
        return 0.0 if self.spread is None else -float(self.spread.double().log().sum())

    def with_standardization(self, shift: Tensor | np.ndarray | Sequence[float],
                             spread: Tensor | np.ndarray | Sequence[float]) -> Dataset:
        """This dataset (its split tensors shared, not copied) with `prepare` standardizing by the given
        statistics: [D] each, e.g. those saved with a run at training time; spread > 0."""
        stats = dict(zip(("shift", "spread"), checked_statistics(shift, spread, self.dim, self.name)))
        return replace(self, **stats)

    def standardized_as_trained(self) -> bool:
        """Whether the statistics it standardizes by are its training split's (`standardization`, the same numbers):
        a run's saved ones, damaged or of other data, are not."""
        shift, spread = standardization(self.split("train"), self.scale)
        return self.shift is None or torch.equal(self.shift, shift) and torch.equal(self.spread, spread)

    def present_splits(self) -> tuple[str, ...]:
        """The splits that hold examples, in order ("all" of a run trained with val_size 0 is train and test)."""
        return tuple(name for name in SPLITS if name in self.splits and self.splits[name].shape[0] > 0)

    def eval_split(self, name: str) -> Tensor:
        """A split ready for evaluation: float, and for dynamic binarization one fixed seeded draw."""
        if name == "val" and self.split(name).shape[0] == 0:
            raise VaekitError(f"{self.name}: no validation examples (the run was trained with val_size 0); "
                              "use another --split, or retrain with a validation split")
        g = torch.Generator().manual_seed(EVAL_BINARIZATION_SEED)
        return self.prepare(self.split(name), generator=g)

    def labels_of(self, name: str) -> Tensor:
        """The labels of a split, int64 [N]; refused in one line where the data have none."""
        if name not in self.labels:
            raise VaekitError(f"dataset {self.name!r} has no labels for its {name} split; a conditional VAE "
                              "(--condition label) needs them: mnist, fashion-mnist, digits, or an .npz with 'y' beside "
                              "'x' (y_train and y_test beside train and test)")
        return self.labels[name]

    @property
    def classes(self) -> int:
        """The number of label classes: 1 + the largest label of any split."""
        return 1 + max(int(y.max()) for y in self.labels.values() if y.numel()) if self.labels else 0

    def _affine(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(shift, spread) on x's device, copied there once (a copy per batch would stall a CUDA graph),
        shaped [D] for flat x and `shape` for unflattened x."""
        if x.device not in self._on_device:
            self._on_device[x.device] = (self.shift.to(x.device), self.spread.to(x.device))
        shift, spread = self._on_device[x.device]
        if x.shape[-1] != self.dim:
            shift, spread = shift.view(self.shape), spread.view(self.shape)
        return shift, spread


def checked_statistics(shift: Tensor | np.ndarray | Sequence[float], spread: Tensor | np.ndarray | Sequence[float],
                       dim: int, where: str) -> tuple[Tensor, Tensor]:
    """Standardization statistics as float32 [dim] each, finite, spread > 0 (what `prepare` and a run's samples
    divide and multiply by), or one line naming `where`."""
    stats = []
    for what, v in (("shift", shift), ("spread", spread)):
        try:
            t = torch.as_tensor(v).detach()
        except (TypeError, ValueError, RuntimeError):  # a string, a ragged list
            raise VaekitError(f"{where}: {what} must be numbers, one per dimension, got {v!r:.40}") from None
        if t.is_complex() or t.dtype == torch.bool:  # complex lost its imaginary part, booleans became 0 and 1
            raise VaekitError(f"{where}: {what} is {str(t.dtype).removeprefix('torch.')}; statistics are real numbers")
        t = t.to("cpu", torch.float32).clone()
        if tuple(t.shape) != (dim,):
            raise VaekitError(f"{where}: {what} has shape {list(t.shape)}; the data need [{dim}]")
        if not bool(torch.isfinite(t).all()):
            raise VaekitError(f"{where}: {what} holds NaN or Inf")
        stats.append(t)
    if not bool((stats[1] >= torch.tensor(MIN_SPREAD, dtype=torch.float32)).all()):  # what standardization gives
        raise VaekitError(f"{where}: spread must be at least {MIN_SPREAD:g} (a constant dimension's is 1), found "
                          f"minimum {float(stats[1].min()):g}")
    return stats[0], stats[1]


def seeded_split(n: int, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded random subset of size n_out and of the rest, each in increasing order."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(perm[:n_out]), np.sort(perm[n_out:])


def resolve_binarize(binarize: str, support: str) -> str:
    """The binarization a choice means for a support: "auto" → "dynamic" (binary) or "none" (others);
    dynamic or static with a support other than binary is refused."""
    if support not in SUPPORTS:
        raise VaekitError(f"unknown support {support!r}: choose {', '.join(SUPPORTS)}")
    if binarize not in BINARIZE:
        raise VaekitError(f"unknown binarize {binarize!r}: choose {', '.join(BINARIZE)}")
    if binarize == "auto":
        return "dynamic" if support == "binary" else "none"
    if binarize != "none" and support != "binary":
        raise VaekitError(f"binarize={binarize!r} applies to a Bernoulli (binary) likelihood only; this "
                          f"likelihood's support is {support!r}: use binarize none or auto")
    return binarize


def finalize(ds: Dataset, binarize: str = "auto", support: str = "binary", seed: int = 0) -> Dataset:
    """Check values against the support and apply the binarization choice (`resolve_binarize`).

    A count support keeps stored values unscaled (scale 1). Afterwards ds.binarize is "dynamic" or
    "none": a static draw (seeded by `seed`) is stored as 0/1 uint8."""
    binarize = resolve_binarize(binarize, support)
    if support == "count":
        ds.scale = 1.0
    for name, x in ds.splits.items():
        if name != "val" or x.shape[0] > 0:  # an empty validation split is asked for (val_size 0)
            check_values(x, ds.scale, f"{ds.name} [{name}]", support)
    if binarize == "static":
        g = torch.Generator().manual_seed(seed)
        ds.splits = {k: _static_draw(v, ds.scale, g) for k, v in ds.splits.items()}
        ds.scale = 1.0
    elif binarize == "none" and support == "binary":
        for name, x in ds.splits.items():
            if not all(bool(((xb == 0) | (xb == ds.scale)).all()) for xb in _blocks(x)):
                draw = "binarize=\"dynamic\" (or \"static\")" if ds.name == IN_MEMORY else "--binarize auto|dynamic|static"
                raise VaekitError(f"{ds.name} [{name}]: a Bernoulli likelihood needs 0/1 data but these are grey levels; "
                                  f"use {draw} or a likelihood with unit or real support")
    ds.binarize = binarize if binarize == "dynamic" else "none"
    return ds


def _rows_per_block(x: Tensor, values: int = 1 << 22) -> int:
    """Rows of x [N, D] in a block of about `values` values (16 MB as float32): what a streamed pass holds."""
    return max(1, values // max(1, math.prod(x.shape[1:])))


def _blocks(x: Tensor, block: int | None = None):
    """x [N, D] in consecutive row blocks (views: a memory map is read a block at a time)."""
    block = block or _rows_per_block(x)
    return (x[start : start + block] for start in range(0, x.shape[0], block))


def _static_draw(x: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """One seeded Bernoulli draw of x/scale [N, D] as uint8 0/1, drawn block by block (the same draws as
    one call over the whole split, since the generator runs on in order) so a float64 memory map is never
    converted whole: the result, 1 byte a value, is the only copy."""
    out = torch.empty(x.shape, dtype=torch.uint8)
    block = _rows_per_block(x)
    for start, xb in zip(range(0, x.shape[0], block), _blocks(x, block)):
        out[start : start + block] = torch.bernoulli(xb.to(torch.float32) / scale, generator=generator)
    return out


def check_values(x: Tensor, scale: float, where: str, support: str = "unit", block: int | None = None,
                 mixed: str = "--likelihood mixed") -> None:
    """Non-empty, finite, and what `support` admits: "real" any finite value, "unit" and "binary" [0, 1]
    after scaling, "discrete256" the values k/255 (k = 0…255) after scaling, "count" whole numbers ≥ 0.
    Checked in blocks of `block` rows (default: about 4M values) so a memory map is streamed."""
    if x.shape[0] == 0:
        raise VaekitError(f"{where}: the dataset is empty")
    lo, hi = math.inf, -math.inf
    block = block or _rows_per_block(x)
    for start, xb in zip(range(0, x.shape[0], block), _blocks(x, block)):
        if xb.is_floating_point() and support == "table":
            _refuse_first(xb.isinf(), start, f"{where}: example {{}} contains Inf")
        elif xb.is_floating_point():
            _refuse_first(~torch.isfinite(xb), start, f"{where}: example {{}} contains NaN or Inf"
                          f"{'; missing cells need ' + mixed if support == 'real' else ''}")
            if support == "count":
                _refuse_first(xb != xb.round(), start, f"{where}: count data must be whole numbers; example {{}} is not")
        if support == "discrete256" and not (xb.dtype == torch.uint8 and scale == 255):
            levels = xb.to(torch.float64) * (255 / scale)
            _refuse_first((levels - levels.round()).abs() > 1e-3, start,
                          f"{where}: support 'discrete256' takes 8-bit grey levels k/255 (k = 0…255) after scaling; "
                          "example {} is not (other grey levels need a likelihood with unit or real support)")
        if support != "table":
            lo, hi = min(lo, float(xb.min()) / scale), max(hi, float(xb.max()) / scale)
    if support in ("unit", "binary", "discrete256") and (lo < 0 or hi > 1):
        pixels = "; 8-bit pixels are divided by 255 when stored as uint8 or as images" if (
            scale == 1 and 0 <= lo and hi <= 255) else ""
        raise VaekitError(f"{where}: values must lie in [0, 1] after scaling for support {support!r}, found range "
                          f"[{lo:g}, {hi:g}]; real-valued data need a likelihood with real support (e.g. Gaussian)"
                          f"{pixels}")
    if support == "count" and lo < 0:
        raise VaekitError(f"{where}: count data must be non-negative, found range [{lo:g}, {hi:g}]")


def _refuse_first(bad: Tensor, start: int, message: str) -> None:
    """Raise `message` naming the first example (row start + i) of a block with a True in `bad` [B, D]."""
    if bool(bad.any()):
        raise VaekitError(message.format(start + int(bad.nonzero()[0, 0])))


def standardization(x: Tensor, scale: float = 1.0, block: int | None = None) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and standard deviation (divisor N) of x/scale, x: [N, D], as float32 [D] each.

    Accumulated in float64 block by block (so a memory map is streamed) with Chan et al.'s pairwise
    update (1979), which does not cancel when a mean is large against its spread. A dimension whose
    std is below MIN_SPREAD (constant) gets spread 1: it is shifted to 0, not blown up; any other std is the
    data's own (a threshold of 1e-12 made data in small units "constant", their samples 10¹⁹ sds off)."""
    n, mean, m2 = 0, torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
    for xb in _blocks(x, block):
        xb = xb.to(torch.float64) / scale
        nb, mean_b = xb.shape[0], xb.mean(0)
        delta, total = mean_b - mean, n + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + ((xb - mean_b) ** 2).sum(0) + delta**2 * (n * nb / total)
        n = total
    std = (m2 / n).sqrt()
    return mean.float(), torch.where(std < MIN_SPREAD, torch.ones_like(std), std).float()
