"""A run directory and its data, as the commands on a run open them: `--data-dir`, `$VAEKIT_DATA` and
`--dataset` point a run at its data where it lies now (another folder, another machine)."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from ..checkpoint import load_run
from ..config import Config
from ..data import Dataset
from ..experiment import absolute_paths, load_data

DATA_DIR_HELP = ("root of the named datasets for this run (default: $VAEKIT_DATA if set, else the run's own "
                 "data_dir, else ~/.cache/vaekit)")
DATASET_HELP = ("the run's data where it lies now: a named dataset or a path, with the model's example shape "
                "(default: the run's own)")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--dataset", "--data", dest="dataset", help=DATASET_HELP)


def with_data(cfg: Config, args: argparse.Namespace) -> Config:
    """The run's [data] section pointed where the flags and the environment say: --data-dir, else
    $VAEKIT_DATA, else the run's own; --dataset replaces the dataset (checked against the model's shape)."""
    data_dir = getattr(args, "data_dir", None) or os.environ.get("VAEKIT_DATA") or cfg.data.data_dir
    dataset = getattr(args, "dataset", None) or cfg.data.dataset
    data = replace(cfg.data, data_dir=data_dir, dataset=dataset)
    return replace(cfg, data=replace(data, **absolute_paths(data)))


def run_with_data(args: argparse.Namespace):
    """(config, model, dataset) of `args.run`, its data found as `with_data` says."""
    cfg, model = load_run(args.run)
    cfg = with_data(cfg, args)
    dataset: Dataset = load_data(cfg, args.run)
    return cfg, model, dataset
