"""Tables: columns of mixed kinds with missing cells, as people keep data (CSV or Parquet), and their schema.

A table becomes one float32 tensor [N, C], a value per column: the number itself for real, positive and
count columns, the level's index for categorical, ordinal and binary ones, and NaN for a missing cell
(empty, NA, NaN, N/A, null, None or ? in a CSV; null in Parquet). The `Schema` says what each column is:

| kind        | values                                  | p(x_j|z) (`parts.likelihoods.table`)            |
|-------------|-----------------------------------------|-------------------------------------------------|
| real        | any number                              | Gaussian, on the standardized value, σ learned  |
| positive    | numbers > 0                             | log-normal (a Gaussian of the standardized log) |
| count       | whole numbers ≥ 0                       | negative binomial, dispersion learned           |
| poisson     | whole numbers ≥ 0                       | Poisson                                         |
| categorical | any labels, `levels` in sorted order    | categorical                                     |
| ordinal     | ordered labels, `levels` in their order | cumulative logit (McCullagh 1980)               |
| binary      | two labels                              | Bernoulli                                       |

Each column's kind is inferred (`infer`): text with two labels is binary and with more categorical; the
numbers 0/1 are binary; whole numbers ≥ 0 within a span of `ORDINAL_SPAN` values are ordinal (a year of
2007–2009, a rating of 1–5), more spread out are counts if the largest is 10 times the smallest or more
(visits 0–40; not a flipper length of 172–231 mm, which is real); numbers > 0 spanning a factor of 10 or
more are positive; other numbers are real. `--column-type NAME=KIND` or a `--schema FILE` (JSON: {name: kind} or
{name: {"kind": …, "levels": [...]}}) overrides it. The schema, with the training split's statistics of
its real and positive columns (`fitted`), is saved in the run's config.json (`[model] schema`), so a run
rebuilds its model and reads new tables the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import VaekitError

KINDS = ("real", "positive", "count", "poisson", "categorical", "ordinal", "binary")
LEVELED = ("categorical", "ordinal", "binary")  # kinds whose cells are level indices
log = logging.getLogger(__name__)
MISSING = frozenset({"", "na", "nan", "n/a", "null", "none", "?", "#n/a", "#n/a n/a", "#na", "<na>", "-nan",
                     "1.#ind", "-1.#ind", "1.#qnan", "-1.#qnan"})  # a missing cell, case and spaces aside (pandas' list)
ORDINAL_SPAN = 12  # whole numbers ≥ 0 spanning fewer values than this are inferred ordinal
MIN_SPREAD, MAX_SHIFT = 1e-12, 1e18  # a column's standardization as float32 data give it (a spread of 0 is 1)
MAX_LEVELS = 1000  # a column of more distinct labels is an identifier, not a category
MAX_COUNT = 2**24  # the largest count float32 codes hold with every whole number below it exact
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Column:
    """One column: its name, kind (KINDS), levels (leveled kinds: the labels, index = code), for real and
    positive columns the training mean and standard deviation of the value (of its log if positive), for counts
    the log of the training mean (`shift`: where the rate starts and what the encoder's log(1 + x) is centred on)."""

    name: str
    kind: str
    levels: tuple[str, ...] = ()
    shift: float = 0.0
    spread: float = 1.0

    def as_plain(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind in LEVELED:
            d["levels"] = list(self.levels)
        if self.kind in ("real", "positive"):
            d.update(shift=self.shift, spread=self.spread)
        if self.kind in ("count", "poisson"):
            d["shift"] = self.shift
        return d


@dataclass(frozen=True)
class Schema:
    """The columns of a table, in order (`[model] schema` of a run: written by `as_plain`, read by `from_plain`)."""

    columns: tuple[Column, ...]

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def as_plain(self) -> list[dict[str, Any]]:
        return [c.as_plain() for c in self.columns]

    @classmethod
    def real(cls, data_dim: int) -> Schema:
        """The schema of a numeric array: D real columns x1…xD (standardized once `fitted`)."""
        return cls(tuple(Column(f"x{j + 1}", "real") for j in range(data_dim)))

    @classmethod
    def from_plain(cls, value: Any, where: str = "schema") -> Schema:
        """A schema from its JSON form (a list of {"name", "kind", "levels"?, "shift"?, "spread"?}), checked."""
        if isinstance(value, Schema):
            return value
        if not isinstance(value, (list, tuple)) or not value:
            raise VaekitError(f"{where}: expected a list of columns ({{'name': …, 'kind': …}}), got {value!r:.80}")
        columns = []
        for i, c in enumerate(value):
            at = f"{where} column {i + 1}"
            if not isinstance(c, Mapping) or not isinstance(c.get("name"), str) or c.get("kind") not in KINDS:
                raise VaekitError(f"{at}: expected {{'name': a string, 'kind': one of {', '.join(KINDS)}}}, got {c!r:.80}")
            unknown = set(c) - {"name", "kind", "levels", "shift", "spread"}
            if unknown:
                raise VaekitError(f"{at} ({c['name']}): unknown key {min(unknown)!r}")
            levels = c.get("levels", [])
            if c["kind"] in LEVELED:
                if not isinstance(levels, (list, tuple)) or not all(isinstance(v, str) for v in levels) or \
                        len(set(levels)) != len(levels) or not 2 <= len(levels) <= MAX_LEVELS or \
                        (c["kind"] == "binary" and len(levels) != 2):
                    raise VaekitError(f"{at} ({c['name']}): a {c['kind']} column needs "
                                      f"{'2' if c['kind'] == 'binary' else f'2 to {MAX_LEVELS}'} distinct string levels, "
                                      f"got {levels!r:.80}")
            elif levels:
                raise VaekitError(f"{at} ({c['name']}): a {c['kind']} column has no levels")
            stats = [c.get("shift", 0.0), c.get("spread", 1.0)]
            if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in stats) or \
                    not (abs(stats[0]) <= MAX_SHIFT and MIN_SPREAD <= stats[1] <= MAX_SHIFT):
                raise VaekitError(f"{at} ({c['name']}): shift must be a number in ±{MAX_SHIFT:g} and spread one in "
                                  f"[{MIN_SPREAD:g}, {MAX_SHIFT:g}] (what float32 data give), got {stats[0]!r} and "
                                  f"{stats[1]!r}")
            columns.append(Column(c["name"], c["kind"], tuple(levels), float(stats[0]), float(stats[1])))
        if len({c.name for c in columns}) != len(columns):
            raise VaekitError(f"{where}: two columns share a name")
        return cls(tuple(columns))

    def fitted(self, codes: Tensor) -> Schema:
        """This schema with each real and positive column's shift and spread, and each count column's log mean,
        measured on `codes` [N, C] (the training split: observed cells only, in float64; spread 1 for a constant
        column)."""
        columns = []
        for j, c in enumerate(self.columns):
            if c.kind in ("real", "positive"):
                v = codes[:, j].double()
                v = v[~v.isnan()]
                if c.kind == "positive":
                    v = v.log()
                if len(v) == 0:
                    raise VaekitError(f"column {c.name!r}: every cell of the training split is missing")
                std, mean = float(v.std(correction=0)), float(v.mean())
                if not (abs(mean) <= MAX_SHIFT and std <= MAX_SHIFT):  # what from_plain would refuse on every load
                    raise VaekitError(f"column {c.name!r}: {'log ' if c.kind == 'positive' else ''}values reach "
                                      f"{float(v.abs().max()):.3g}, beyond what vaekit standardizes (±{MAX_SHIFT:g}); "
                                      "rescale the column (divide it by a power of ten)")
                if 0 < std < MIN_SPREAD:  # what from_plain would refuse on every load
                    raise VaekitError(f"column {c.name!r}: {'log ' if c.kind == 'positive' else ''}values spread by "
                                      f"{std:.3g}, below what vaekit standardizes ({MIN_SPREAD:g}); multiply the column "
                                      "by a power of ten")
                c = replace(c, shift=mean, spread=std if std > 0 else 1.0)  # 0: one value (float32 may have merged)
            elif c.kind in ("count", "poisson"):  # counts in the hundreds: the rate starts at their mean, not at 1
                v = codes[:, j].double()
                v = v[~v.isnan()]
                c = replace(c, shift=math.log(max(float(v.mean()) if len(v) else 1.0, 1e-3)))
            columns.append(c)
        return Schema(tuple(columns))

    def describe(self) -> str:
        """One short table, a line per column: name, kind, levels or statistics (what a run prints first)."""
        width = max(len(c.name) for c in self.columns)
        lines = []
        for c in self.columns:
            if c.kind in LEVELED:
                shown = ", ".join(c.levels[:6]) + (f", … ({len(c.levels)} levels)" if len(c.levels) > 6 else "")
            elif c.kind in ("real", "positive"):
                shown = f"{'log: ' if c.kind == 'positive' else ''}mean {c.shift:.4g}, sd {c.spread:.4g}"
            else:
                shown = "whole numbers ≥ 0"
            lines.append(f"  {c.name:<{width}}  {c.kind:<11}  {shown}")
        return "\n".join(lines)


def is_missing(cell: Any) -> bool:
    return cell is None or (isinstance(cell, float) and math.isnan(cell)) or \
        (isinstance(cell, str) and cell.strip().lower() in MISSING)


def _number(cell: Any) -> float | None:
    if isinstance(cell, bool):
        return float(cell)
    if isinstance(cell, (int, float)):
        return float(cell)
    if isinstance(cell, str) and "_" in cell:  # Python's float reads "1_000" as 1000; a CSV reader does not
        return None
    try:
        return float(cell)
    except (TypeError, ValueError):
        return None


def _label(cell: Any) -> str:
    """A cell as a level's label: numbers written without a trailing .0 (1.0 and 1 are one level)."""
    if isinstance(cell, str):
        return cell.strip()
    v = float(cell)
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def infer(name: str, cells: Sequence[Any]) -> Column:
    """The kind of a column from its observed cells (the module's rules); levels in sorted order
    (numerically for numbers)."""
    seen = [c for c in cells if not is_missing(c)]
    if not seen:
        raise VaekitError(f"column {name!r}: every cell is missing; drop the column")
    numbers = [_number(c) for c in seen]
    infinite = next((c for c, v in zip(seen, numbers) if v is not None and not math.isfinite(v)), None)
    if infinite is not None and all(v is not None for v in numbers):  # it read as levels, one a value, silently
        raise VaekitError(f"column {name!r}: {str(infinite).strip()!r:.80} is not a finite number; leave the cell empty "
                          "if the value is missing")
    if any(v is None for v in numbers) or not all(math.isfinite(v) for v in numbers):
        odd = [str(c).strip() for c, v in zip(seen, numbers) if v is None or not math.isfinite(v)]
        labels = sorted({_label(c) for c in seen})
        if 2 * len(odd) <= len(seen) and len({v for v in numbers if v is not None}) > 2:  # numbers, a few cells not
            words = sorted(set(odd))
            log.warning("column %r: numbers except for %s (%d cells), so it is read as %d levels; leave a missing "
                        "value's cell empty and write a number as digits (or give --column-type %s=categorical)", name,
                        ", ".join(map(repr, words[:3])) + (f" and {len(words) - 3} more" if len(words) > 3 else ""),
                        len(odd), len(labels), name)
        return _leveled(name, "binary" if len(labels) == 2 else "categorical", labels)
    distinct = sorted(set(numbers))
    whole = all(v.is_integer() for v in distinct)
    if distinct in ([0.0, 1.0],):
        return Column(name, "binary", ("0", "1"))
    if whole and distinct[0] >= 0 and distinct[-1] - distinct[0] < ORDINAL_SPAN and len(distinct) >= 2:
        return Column(name, "ordinal", tuple(_label(v) for v in distinct))
    if whole and distinct[0] >= 0 and 10 * distinct[0] <= distinct[-1]:
        return Column(name, "count")
    if distinct[0] > 0 and distinct[-1] >= 10 * distinct[0]:
        return Column(name, "positive")
    return Column(name, "real")


def _leveled(name: str, kind: str, labels: Sequence[str]) -> Column:
    if len(labels) < 2:
        raise VaekitError(f"column {name!r}: one level only ({labels[0]!r:.80}); a constant column says nothing, drop it")
    if len(labels) > MAX_LEVELS:
        raise VaekitError(f"column {name!r}: {len(labels)} distinct labels (at most {MAX_LEVELS}); an identifier "
                          "is not a category: drop the column")
    return Column(name, kind, tuple(labels))


def override(column: Column, spec: Any, cells: Sequence[Any], where: str) -> Column:
    """`column` with the kind (and levels) a user gave: "ordinal" or {"kind": "ordinal", "levels": [...]}."""
    spec = {"kind": spec} if isinstance(spec, str) else spec
    if not isinstance(spec, Mapping) or spec.get("kind") not in KINDS or set(spec) - {"kind", "levels"}:
        raise VaekitError(f"{where}: column {column.name!r}: expected a kind ({', '.join(KINDS)}) or "
                          f"{{'kind': …, 'levels': [...]}}, got {spec!r:.80}")
    kind = spec["kind"]
    if kind not in LEVELED:
        if "levels" in spec:
            raise VaekitError(f"{where}: column {column.name!r}: a {kind} column has no levels")
        return Column(column.name, kind)
    if "levels" in spec:
        levels = spec["levels"]
        if not isinstance(levels, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in levels):
            raise VaekitError(f"{where}: column {column.name!r}: levels must be a list of labels, got {levels!r:.80}")
        return Schema.from_plain([{"name": column.name, "kind": kind, "levels": [_label(v) for v in levels]}],
                                 where).columns[0]
    labels = sorted({_label(c) for c in cells if not is_missing(c)},
                    key=lambda s: (0, float(s), s) if _number(s) is not None else (1, 0.0, s))
    return _leveled(column.name, kind, labels) if kind != "binary" or len(labels) == 2 else \
        _refuse_binary(column.name, labels)


def _refuse_binary(name: str, labels: Sequence[str]) -> Column:
    raise VaekitError(f"column {name!r}: binary needs two labels, found {len(labels)} "
                      f"({', '.join(label[:40] for label in labels[:5])}{', …' if len(labels) > 5 else ''})")


def encode(rows: Sequence[Sequence[Any]], lines: Sequence[int], schema: Schema, path: str) -> Tensor:
    """The cells of `rows` as codes [N, C] under `schema` (NaN where missing); a cell the schema does not
    admit is refused naming its line and column."""
    codes = np.full((len(rows), len(schema)), np.nan, dtype=np.float64)
    for j, col in enumerate(schema.columns):
        index = {level: i for i, level in enumerate(col.levels)}
        for i, row in enumerate(rows):
            cell = row[j]
            if is_missing(cell):
                continue
            where = f"{path}: line {lines[i]}, column {col.name!r}"
            if col.kind in LEVELED:
                label = _label(cell)
                number = _number(cell) if label not in index else None
                if number is not None and math.isfinite(number):  # "1.0", "-0": the number a numeric level names
                    label = _label(number)
                if label not in index:  # the cell as written (99999999999999999999999, not 1e+23)
                    label = cell.strip() if isinstance(cell, str) else label
                    raise VaekitError(f"{where}: {label!r:.40} is not one of its levels ({', '.join(col.levels[:8])}"
                                      f"{', …' if len(col.levels) > 8 else ''})")
                codes[i, j] = index[label]
                continue
            v = _number(cell)
            if v is None or math.isnan(v):
                raise VaekitError(f"{where}: {str(cell)!r:.40} is not a number (a {col.kind} column)")
            if not math.isfinite(v):  # "1e400", "inf": a number no float holds
                raise VaekitError(f"{where}: {str(cell)!r:.40} is beyond float32 (a {col.kind} column)")
            if col.kind == "positive" and not v > 0:
                raise VaekitError(f"{where}: {v:g} is not > 0 (a positive column: log-normal)")
            if col.kind == "positive" and v < FLOAT32_TINY:  # float32 would make it 0, whose log is −inf
                raise VaekitError(f"{where}: {v:g} is below float32's smallest normal number ({FLOAT32_TINY:.3g}); "
                                  "multiply the column by a power of ten")
            if col.kind in ("count", "poisson") and not (v >= 0 and v.is_integer()):
                raise VaekitError(f"{where}: {v:g} is not a whole number ≥ 0 (a {col.kind} column)")
            if abs(v) > 3e38:
                raise VaekitError(f"{where}: {v:g} is beyond float32")
            if col.kind in ("count", "poisson") and v > MAX_COUNT:  # float32 codes: whole numbers exact up to 2**24
                raise VaekitError(f"{where}: {v:g} is beyond the counts float32 holds exactly ({MAX_COUNT:,}); give "
                                  f"the column another kind (--column-type {col.name}=positive)")
            codes[i, j] = v
    stored = codes.astype(np.float32)
    for j, col in enumerate(schema.columns):  # distinct values that float32 makes one (1e17 + k, ±1e-300)
        if col.kind not in LEVELED:
            seen = ~np.isnan(codes[:, j])
            kept, distinct = len(np.unique(stored[seen, j])), len(np.unique(codes[seen, j]))
            if kept < distinct:
                log.warning("%s: column %r: float32 merges some of its distinct values (%d of %d kept); subtract an "
                            "offset or rescale it to keep them", path, col.name, kept, distinct)
    return torch.from_numpy(stored)
