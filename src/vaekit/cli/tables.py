"""`vaekit impute` and `vaekit score`: a run trained on a table (--likelihood mixed) fills the missing cells
of a CSV or Parquet table, or ranks its rows by −log p(x_obs) (`evaluation.tables`)."""

from __future__ import annotations

import argparse
import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.table_files import MAX_TABLE_CELLS, read_table
from ..data.tables import LEVELED, is_missing
from ..errors import VaekitError
from ..evaluation.overflow import any_overflowing, blaming_rows
from ..evaluation.tables import impute, score
from ..files import atomic_write
from ..runs.checkpoint import load_run
from ..runs.experiment import load_data
from ..runs.opening import data_changed, point_data
from .runs import check_k, own_rows

K_HELP = "importance samples per row (default: 1000)"
SPLIT_NAMES = {"val": "validation split", "train": "training split (the run has no validation split)"}

log = logging.getLogger(__name__)


def add_table_commands(sub) -> None:
    im = sub.add_parser("impute", help="fill the missing cells of a table with a run trained on it (--likelihood mixed)")
    im.add_argument("run", help="a run directory written by vaekit train --likelihood mixed")
    im.add_argument("--data", required=True, help="a CSV or Parquet table with the run's columns (required)")
    im.add_argument("--out", required=True, help="the completed table, a CSV (required)")
    im.add_argument("--k", type=int, default=1000, help=K_HELP)
    im.add_argument("--draws", type=int, default=0, metavar="M", help="multiple imputation: M completed tables by "
                    "sampling-importance-resampling, stacked with a first column `draw` (`draw_1` if the table has one; "
                    "default: 0: one table, the conditional mean or most probable level)")
    im.add_argument("--seed", type=int, default=0, help="seeds the draws (default: 0)")
    im.set_defaults(func=cmd_impute)

    sc = sub.add_parser("score", help="anomaly scores −log p(x_obs) of a table's rows, with each column's part")
    sc.add_argument("run", help="a run directory written by vaekit train --likelihood mixed")
    sc.add_argument("--data", required=True, help="a CSV or Parquet table with the run's columns (required)")
    sc.add_argument("--out", required=True, help="scores.csv: a row per input row, ranked (required)")
    sc.add_argument("--k", type=int, default=1000, help=K_HELP)
    sc.add_argument("--quantile", type=float, default=0.99, help="flag rows scoring above this quantile of the "
                    "run's validation split (default: 0.99)")
    sc.add_argument("--data-dir", help="where the run's own data lie now, for its validation split (default: the run's)")
    sc.add_argument("--seed", type=int, default=0, help="seeds the importance samples (default: 0)")
    sc.set_defaults(func=cmd_score)
    for p in (im, sc):
        p.add_argument("--plugin", action="append", help="the plugin the run's parts come from (default: none)")
    return im, sc


def _open(args: argparse.Namespace):
    cfg, model = load_run(args.run)
    schema = cfg.model.columns
    if schema is None:
        raise VaekitError(f"{args.run}: not a run of a table (train with --likelihood mixed on a CSV or Parquet table)")
    return cfg, model, schema, read_table(Path(args.data), schema)


def _cell(value: float, kind: str, levels: tuple[str, ...]) -> str:
    if kind in LEVELED:
        return levels[int(value)]
    if kind in ("count", "poisson"):
        return str(int(value))
    return f"{value:.6g}"


def _write_csv(path: Path, header: list[str], rows) -> None:
    if path.suffix.lower() != ".csv":
        raise VaekitError(f"--out {path}: name a .csv file")

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    atomic_write(path, write)


def cmd_impute(args: argparse.Namespace) -> Path:
    """The table of --data with every missing cell filled; observed cells written exactly as they were read."""
    if args.draws < 0:
        raise VaekitError(f"--draws must be a whole number ≥ 0 (completed tables drawn), got {args.draws}")
    check_k(args.k)
    _, model, schema, table = _open(args)
    if args.draws * table.codes.numel() > MAX_TABLE_CELLS:  # the draws are held whole, then written
        raise VaekitError(f"--draws {args.draws:,}: {args.draws:,} completed tables of {table.codes.numel():,} cells "
                          f"exceed {MAX_TABLE_CELLS:,} cells, the most vaekit reads or writes in a table")
    with blaming_rows(model, table.codes, lambda i: f"{args.data}: line {table.lines[i]}", lambda: own_rows(args, args.data)):
        result = impute(model, table.codes, k=args.k, draws=args.draws, seed=args.seed)
    names, cells = table.names, table.cells  # as read: observed cells go back untouched
    order = [names.index(n) for n in schema.names]

    def completed(codes: torch.Tensor) -> list[list[str]]:
        out = []
        for i, raw in enumerate(cells):
            row = list(map(_text, raw))
            for j, c in enumerate(schema.columns):
                if is_missing(raw[order[j]]):
                    row[order[j]] = _cell(float(codes[i, j]), c.kind, c.levels)
            out.append(row)
        return out

    if args.draws:
        rows = [[str(m + 1), *r] for m in range(args.draws) for r in completed(result.draws[m])]
        first = next(n for n in ("draw", *(f"draw_{i}" for i in range(1, len(names) + 2))) if n not in names)
        _write_csv(Path(args.out), [first, *names], rows)  # `draw`, unless the table has a column of that name
    else:
        _write_csv(Path(args.out), names, completed(result.filled))
    n_missing = int(table.codes.isnan().sum())
    what = f"{args.draws} completed tables" if args.draws else "the completed table"
    print(f"wrote {args.out}: {what}, {n_missing} missing cells of {table.codes.numel()} filled (k = {args.k})")
    return Path(args.out)


def _text(cell) -> str:
    """A cell as read, as text (a Parquet number as Python writes it; null as empty)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return ""
    return cell if isinstance(cell, str) else str(cell)


def cmd_score(args: argparse.Namespace) -> Path:
    """A CSV of the rows of --data ranked by −log p(x_obs), its Monte Carlo error, whether it is beyond the
    validation split's --quantile, and each column's part."""
    if not 0 < args.quantile < 1:
        raise VaekitError(f"--quantile must lie in (0, 1), got {args.quantile}")
    check_k(args.k, least=2)
    cfg, model, schema, table = _open(args)
    mine = point_data(cfg, data_dir=args.data_dir, warn=False, flag=None)  # --data is the table to score
    changed = data_changed(mine)
    if changed:  # the threshold is the validation split's: of the data the run was trained on, or none
        raise VaekitError(f"{cfg.data.dataset}, the run's data, changed since it was trained ({changed}); score's "
                          "threshold comes from its validation split: restore that file")
    data = load_data(mine, args.run)
    usual_split = "val" if "val" in data.present_splits() else "train"  # val_size 0: the training rows instead
    usual = score(model, data.eval_split(usual_split), k=args.k, seed=args.seed)
    if not bool(torch.isfinite(usual.score).all()):  # the run's own rows: the weights, not --data, are at fault
        raise VaekitError(f"the model's distributions overflow on {int((~torch.isfinite(usual.score)).sum())} rows of "
                          f"the {SPLIT_NAMES[usual_split]} of {cfg.data.dataset}, its own data: model.safetensors is "
                          "damaged or was trained into overflow")
    s = score(model, table.codes, k=args.k, seed=args.seed)
    far = [table.lines[i] for i in torch.isinf(s.score).nonzero()[:, 0].tolist()]
    if far and any_overflowing(model, own_rows(args, args.data)):  # rows it was trained on fail too: the weights
        raise VaekitError(f"{args.data}: line {far[0]}: the model's distributions overflow on it and on rows the run "
                          "was trained on: model.safetensors is damaged or was trained into overflow")
    if far:
        log.warning("%s: line%s %s: the model's distributions overflow on %s (values far outside the data the run "
                    "was trained on): scored inf, above every other row", args.data, "s" if len(far) > 1 else "",
                    ", ".join(map(str, far[:10])) + (f" and {len(far) - 10:,} more" if len(far) > 10 else ""),
                    "them" if len(far) > 1 else "it")
    threshold = float(torch.quantile(usual.score, args.quantile))
    median = usual.columns.median(0).values  # each column's usual part: "most from" is the excess over it
    ranked = torch.argsort(s.score, descending=True, stable=True)
    rows = []
    for rank, i in enumerate(ranked.tolist(), 1):
        rows.append([table.lines[i], rank, f"{float(s.score[i]):.4f}", f"{float(s.mc_stderr[i]):.4f}",
                     int(s.score[i] > threshold), *(f"{float(v):.4f}" for v in s.columns[i])])
    fixed = ["line", "rank", "score", "mc_stderr", "flagged"]
    _write_csv(Path(args.out), [*fixed, *parts_named(fixed, schema.names)], rows)
    flagged = int((s.score > threshold).sum())
    print(f"wrote {args.out}: {len(rows)} rows ranked by −log p(x_obs) (nats, k = {args.k}); threshold "
          f"{threshold:.3f} = the {args.quantile!r} quantile of the {SPLIT_NAMES[usual_split]}; {flagged} rows above "
          "it")
    for i in ranked[:5].tolist():
        if bool(torch.isnan(table.codes[i]).all()):
            print(f"  line {table.lines[i]}: 0 nats: no cell of it is observed")
            continue
        if math.isinf(float(s.score[i])):
            print(f"  line {table.lines[i]}: inf: the model's distributions overflow on it")
            continue
        excess = s.columns[i] - median
        top = int(excess.argmax())
        print(f"  line {table.lines[i]}: {float(s.score[i]):.3f} ± {float(s.mc_stderr[i]):.3f} nats, most from "
              f"{schema.names[top]} ({float(excess[top]):+.2f} nats over its median on the {SPLIT_NAMES[usual_split]})")
    return Path(args.out)



def parts_named(fixed: list[str], names: Sequence[str]) -> list[str]:
    """The header of each column's part of a score: the column's name, or `NAME_part` (`NAME_part_2`, …) where the
    name is one of the `fixed` columns before them (a column called `score` would otherwise be read as the score)."""
    taken, out = set(fixed) | set(names), []
    for name in names:
        if name in fixed:
            name = next(n for n in (f"{name}_part", *(f"{name}_part_{i}" for i in range(2, len(taken) + 2)))
                        if n not in taken)
            taken.add(name)
        out.append(name)
    return out
