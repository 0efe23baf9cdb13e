"""A run directory and its data, as the commands on a run open them: `--data-dir`, `$VAEKIT_DATA` and
`--dataset` point a run at its data where it lies now (another folder, another machine;
`opening.point_data`)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from ..data import Dataset
from ..errors import VaekitError
from ..evaluation.estimates import MAX_IMPORTANCE_SAMPLES
from ..evaluation.overflow import split_chunks
from ..runs.checkpoint import STANDARDIZATION, load_config, load_run
from ..runs.experiment import load_data
from ..runs.opening import absolute_paths, changed_line, data_changed, point_data, same_source

log = logging.getLogger(__name__)

DATA_DIR_HELP = ("root of the named datasets for this run (default: $VAEKIT_DATA if set, else the run's own "
                 "data_dir, else ~/.cache/vaekit)")
DATASET_HELP = ("the run's data where it lies now: a named dataset or a path, with the model's example shape "
                "(default: the run's own)")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--dataset", "--data", dest="dataset", help=DATASET_HELP)


def own_rows(args: argparse.Namespace, given: str | None = None):
    """The rows the run was trained on (where its config.json points, not --dataset: its training and validation
    splits; every split where `given`, the data the command was given, is that same source) and, for a conditional
    VAE, their labels, in chunks (`overflow.split_chunks`). Where the model overflows on them too, the weights are at
    fault, not the data given (`evaluation.overflow.blaming_rows`). A data file that changed since training is
    refused: it tells nothing."""
    mine = point_data(load_config(args.run), data_dir=getattr(args, "data_dir", None), warn=False, flag=None)
    changed = data_changed(mine)
    if changed:
        raise VaekitError(f"{mine.data.dataset}: changed since the run was trained ({changed})")
    data = load_data(mine, args.run)
    there = given and absolute_paths(replace(mine.data, dataset=given)).get("dataset", given)  # not point_data:
    same = bool(there) and same_source(mine.data, there)  # it asks same_source too, hashing the file once more
    return split_chunks(data, [s for s in data.present_splits() if s != "test" or same], mine.model.conditional)


def run_data_changed(args: argparse.Namespace) -> str | None:
    """Where the command's run trained on a data file whose bytes changed since (its config.json's sha256), or its
    standardization.safetensors is not the statistics of its training split (damaged): a line saying so, which any
    verdict on the weights must come after; else None."""
    if getattr(args, "run", None) is None:
        return None
    try:
        cfg = load_config(args.run)
        mine = point_data(cfg, data_dir=getattr(args, "data_dir", None), warn=False)
        changed = changed_line(cfg, mine.data.dataset)
        if changed or not cfg.data.standardize or load_data(mine, args.run).standardized_as_trained():
            return changed
        return f"{Path(args.run) / STANDARDIZATION} is not the statistics of the run's training split (damaged, or " \
            "of other data)"
    except VaekitError:
        return None


def own_rows_of(args: argparse.Namespace):
    """`own_rows` where the command was given data of the user's (--dataset): what tells the weights' fault from the
    data's (`blaming_rows`); None where the data are the run's own, which only damaged weights overflow on."""
    given = getattr(args, "dataset", None)
    return (lambda: own_rows(args, given)) if given else None


def run_with_data(args: argparse.Namespace):
    """(config, model, dataset) of `args.run`, its data found where `--dataset`, `--data-dir` or $VAEKIT_DATA
    point (`opening.point_data`, which warns where they are the run's file changed since), else where the run says."""
    cfg, model = load_run(args.run)
    cfg = point_data(cfg, getattr(args, "dataset", None), getattr(args, "data_dir", None))
    dataset: Dataset = load_data(cfg, args.run)
    return cfg, model, dataset


def check_k(k: int | None, least: int = 1) -> None:
    """--k given: a number of importance samples vaekit will finish (`estimates.MAX_IMPORTANCE_SAMPLES`), at least
    `least` (score's Monte Carlo error needs two)."""
    if k is not None and not least <= k <= MAX_IMPORTANCE_SAMPLES:
        raise VaekitError(f"--k {k} is out of range: importance samples per example from {least} to "
                          f"{MAX_IMPORTANCE_SAMPLES:,}" + (" (the Monte Carlo error needs two weights)" if least == 2 else ""))
