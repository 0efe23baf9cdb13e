"""A run directory and its data, as the commands on a run open them: `--data-dir`, `$VAEKIT_DATA` and
`--dataset` point a run at its data where it lies now (another folder, another machine;
`experiment.point_data`)."""

from __future__ import annotations

import argparse

from ..data import Dataset
from ..errors import VaekitError
from ..evaluation.estimates import MAX_IMPORTANCE_SAMPLES
from ..runs.checkpoint import load_config, load_run
from ..runs.experiment import labels_for, load_data, point_data

DATA_DIR_HELP = ("root of the named datasets for this run (default: $VAEKIT_DATA if set, else the run's own "
                 "data_dir, else ~/.cache/vaekit)")
DATASET_HELP = ("the run's data where it lies now: a named dataset or a path, with the model's example shape "
                "(default: the run's own)")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--dataset", "--data", dest="dataset", help=DATASET_HELP)


def own_rows(args: argparse.Namespace):
    """The first 512 training rows of the run's own data (where its config.json points, not --dataset) and, for a
    conditional VAE, their labels: where the model overflows on them too, the weights are at fault, not the data
    given (`evaluation.overflow.blaming_rows`)."""
    mine = point_data(load_config(args.run), data_dir=getattr(args, "data_dir", None))
    data = load_data(mine, args.run)
    y = labels_for(mine, data, "train")
    return data.eval_split("train")[:512], (y[:512] if y is not None else None)


def row_named(source: str, x, where: str):
    """How a refusal names row i of x: its place in `where` (a split, as vaekit keeps it) and its largest value,
    which finds it in the file whatever order the split keeps."""
    def named(i: int) -> str:
        row = x[i].flatten()
        j = int(row.abs().argmax())
        return f"{source}: example {i} of {where} (its value {float(row[j]):g} at position {j})"
    return named


def own_rows_of(args: argparse.Namespace):
    """`own_rows` where the command was given data of the user's (--dataset): what tells the weights' fault from the
    data's (`blaming_rows`); None where the data are the run's own, which only damaged weights overflow on."""
    return (lambda: own_rows(args)) if getattr(args, "dataset", None) else None


def run_with_data(args: argparse.Namespace):
    """(config, model, dataset) of `args.run`, its data found where `--dataset`, `--data-dir` or $VAEKIT_DATA
    point (`experiment.point_data`), else where the run says."""
    cfg, model = load_run(args.run)
    cfg = point_data(cfg, getattr(args, "dataset", None), getattr(args, "data_dir", None))
    dataset: Dataset = load_data(cfg, args.run)
    return cfg, model, dataset


def check_k(k: int | None) -> None:
    """--k given: a number of importance samples vaekit will finish (`estimates.MAX_IMPORTANCE_SAMPLES`)."""
    if k is not None and not 1 <= k <= MAX_IMPORTANCE_SAMPLES:
        raise VaekitError(f"--k {k} is out of range: importance samples per example from 1 to {MAX_IMPORTANCE_SAMPLES:,}")
