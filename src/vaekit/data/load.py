"""From a name to a Dataset: the named datasets (builtin.py, mnist.py) or a path (files.py), split into
train/val/test, checked against the likelihood's support, binarized and standardized as stated; and
in-memory arrays (`tensor_dataset`) the same way."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import VaekitError
from ..files import kind_of, missing
from .builtin import BUILTIN, read_builtin
from .dataset import IN_MEMORY, Dataset, finalize, resolve_binarize, seeded_split, standardization
from .files import MIN_TEST, as_examples, read_csv, read_numpy, to_tensor, user_dataset, whole_labels
from .images import read_image_folder
from .mnist import DATASETS as MNIST_FAMILY
from .mnist import load_mnist_family
from .table_files import penguins_csv, read_table
from .tables import Schema

log = logging.getLogger(__name__)

TABLES = ("penguins",)  # named tables of mixed columns (support "table" only)
DATASETS = (*BUILTIN, *TABLES, *MNIST_FAMILY)  # the named datasets; any other name is a path



def load_dataset(
    name: str,
    binarize: str = "auto",
    support: str = "binary",
    split_seed: int = 0,
    val_size: int | None = None,
    data_dir: str | None = None,
    mmap: bool = False,
    standardize: bool = False,
    shift: Tensor | np.ndarray | Sequence[float] | None = None,
    spread: Tensor | np.ndarray | Sequence[float] | None = None,
    scale: float | None = None,
    schema: Schema | None = None,
    overrides: dict | None = None,
) -> Dataset:
    """The dataset a `DataConfig` names, split into train/val/test and checked against the likelihood's
    support (one of SUPPORTS).

    name: "digits", "wine" (embedded), "frey-faces", "mnist", "fashion-mnist", "binarized-mnist" (files
    under `data_dir`, verified by MD5), or a path: .npy, .npz, .csv, or a folder of PNG/JPEG images.
    binarize: auto | dynamic | static | none (see vaekit.data.dataset); the result's `binarize` is the
    resolved "dynamic" or "none". val_size: validation examples drawn (seeded by `split_seed`) from the
    training split; None takes the dataset's default (see vaekit.data.builtin; 10000 for MNIST-like, 10%
    for user data). standardize (support "real" only): per-dimension mean and std of the training split,
    or the given `shift` and `spread` (statistics saved at training time) instead of recomputing them.
    scale (user files only): stored values are divided by it; default: 255 for uint8 arrays and 8-bit
    images, 65535 for 16-bit images, 1 (the values as given) otherwise, CSV included (vaekit.data.files).
    The scale applied is logged (one info line).
    support "table" (the mixed likelihood): a CSV or Parquet table, or `penguins`, read by `tables.read_table`
    with its `schema` (a run's) or one inferred with the user's `overrides` ({column: kind}); numeric data
    (an array, wine) become real columns, NaN where missing. The schema is fitted on the training split.
    """
    if not isinstance(name, (str, os.PathLike)) or not str(name) or "\0" in str(name):
        raise VaekitError(f"load_dataset: name a dataset ({', '.join(DATASETS)}) or a file, got {name!r:.80}")
    name = str(name) if isinstance(name, os.PathLike) else name
    resolve_binarize(binarize, support)  # argument errors before any file is read
    _check_arguments(split_seed, val_size, data_dir, mmap, overrides)
    _check_standardize(support, standardize, shift, spread)
    _check_scale(name, scale)
    if support != "table" and (name in TABLES or Path(name).suffix == ".parquet"):
        raise VaekitError(f"{name}: a table of mixed columns; it takes --likelihood mixed")
    ds, default_val, why = _load_source(name, split_seed, data_dir, mmap, scale, support, schema, overrides)
    if support == "count":
        log.info("%s: count data, values used as stored (scale 1)", ds.name)
    elif ds.scale == 1.0:
        log.info("%s: values used as given, scale 1 (%s)", ds.name, why)
    else:
        log.info("%s: values divided by %g (%s)", ds.name, ds.scale, why)
    if "val" in ds.splits and val_size is not None and name in DATASETS:
        raise VaekitError(f"{name} comes with its own validation split; leave val_size unset")
    if "val" not in ds.splits:
        _carve_validation(ds, default_val if val_size is None else val_size, split_seed, contiguous=mmap,
                          asked=val_size is not None)
    ds = finalize(ds, binarize, support, split_seed)
    if support == "table":
        try:
            ds.schema = schema if schema is not None else (ds.schema or Schema.real(ds.dim)).fitted(ds.split("train"))
        except VaekitError as e:
            raise VaekitError(f"{ds.name}: {e}") from None
    if standardize:
        if shift is None:
            shift, spread = standardization(ds.split("train"), ds.scale)
        ds = ds.with_standardization(shift, spread)
    return ds


def tensor_dataset(
    x_train: Tensor | np.ndarray,
    x_val: Tensor | np.ndarray | None = None,
    support: str = "real",
    binarize: str = "none",
    seed: int = 0,
    y_train: Tensor | np.ndarray | None = None,
    y_val: Tensor | np.ndarray | None = None,
) -> Dataset:
    """In-memory data as a Dataset (what `vaekit.fit` trains on): x_train [N, ...] and optionally
    x_val, with labels y_train [N] (and y_val) where given; without x_val a seeded 10% of x_train is
    held out for validation. Values are checked against `support` like a file's; bool arrays are 0/1
    data; no test split."""
    arrays = {"train": x_train} if x_val is None else {"train": x_train, "val": x_val}
    if (y_val is not None) != (y_train is not None and x_val is not None):
        raise VaekitError("labels: give y_train with x_train, and y_val exactly when x_val is given")
    splits, shape, labels = {}, None, {}
    for name, a in arrays.items():
        if isinstance(a, Tensor) and a.dtype == torch.bfloat16:  # NumPy has no bfloat16: its values are float32's
            a = a.float()
        a = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
        flat, shape_k = as_examples(a, f"x_{name}")
        if shape is not None and shape_k != shape:
            raise VaekitError(f"x_val: example shape {shape_k} differs from x_train's {shape}")
        splits[name], shape = to_tensor(flat), shape_k
        y = y_train if name == "train" else y_val
        if y is not None:
            y = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
            labels[name] = torch.from_numpy(whole_labels(y, len(flat), f"y_{name}", f"x_{name}"))
    ds = Dataset(IN_MEMORY, shape, splits, scale=255.0 if splits["train"].dtype == torch.uint8 and support != "count"
                 and bool((splits["train"] > 1).any()) else 1.0, labels=labels)
    if x_val is None:
        _carve_validation(ds, max(1, len(splits["train"]) // 10), seed)
    return finalize(ds, binarize, support, seed)


def _load_source(name: str, split_seed: int, data_dir: str | None, mmap: bool, scale: float | None,
                 support: str = "real", schema: Schema | None = None,
                 overrides: dict | None = None) -> tuple[Dataset, int, str]:
    """The named dataset or user data, with train and test splits (and val where published), the
    default validation size, and what the scale is based on."""
    if support == "table" and (name in TABLES or Path(name).suffix in (".csv", ".parquet")):
        path = penguins_csv() if name in TABLES else Path(name)
        table = read_table(path, schema, overrides)
        n = len(table.codes)
        if n < MIN_TEST + 2:
            raise VaekitError(f"{path}: need at least {MIN_TEST + 2} rows to split into train, val and test, got {n}")
        test_idx, rest = (torch.from_numpy(i) for i in seeded_split(n, max(MIN_TEST, n // 10), split_seed))
        ds = Dataset(name if name in TABLES else path.name, (len(table.schema),),
                     {"train": table.codes[rest], "test": table.codes[test_idx]}, schema=table.schema)
        return ds, max(1, len(rest) // 10), "a table's cells"
    if name in BUILTIN:
        spec = BUILTIN[name]
        x, y, factors = read_builtin(name, data_dir)
        test_idx, rest = seeded_split(len(x), spec.test, split_seed)

        def split(a):
            return {} if a is None else {"test": torch.from_numpy(a[test_idx]), "train": torch.from_numpy(a[rest])}

        ds = Dataset(name, spec.shape, split(x), scale=spec.scale, labels=split(y), factors=split(factors),
                     factor_names=spec.factor_names)
        return ds, spec.val, "the dataset's stated scale"
    if name in MNIST_FAMILY:
        d = load_mnist_family(name, data_dir)
        ds = Dataset(name, tuple(d["shape"]), d["splits"], scale=d["scale"], labels=d["labels"])
        return ds, 10_000, "8-bit images" if d["scale"] == 255.0 else "0/1 pixels"
    path = Path(name)
    arrays, source = _read_user_arrays(path, mmap)
    ds, why = user_dataset(path, arrays, split_seed, mmap, source, scale)
    return ds, max(1, ds.splits["train"].shape[0] // 10), why


def _read_user_arrays(path: Path, mmap: bool) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of a user's file or image folder, by name ("x" for a single array), and their source:
    "images", "numpy" or "csv"."""
    try:
        found = path.exists()
    except OSError as e:  # a name too long, a path through a file: exists() raises rather than says False
        raise VaekitError(f"{str(path)[:80]}{'…' if len(str(path)) > 80 else ''}: cannot be a dataset path "
                          f"({e.strerror}); not a named dataset either ({', '.join(DATASETS)})") from None
    if not found:
        what = missing(path) if path.is_symlink() else "no such file or directory"  # a link to nothing, or a loop
        raise VaekitError(f"{path}: {what}, and not a named dataset ({', '.join(DATASETS)})")
    if path.is_dir():
        return {"x": read_image_folder(path)}, "images"
    if not path.is_file():  # a FIFO would block the reader forever, a device never end
        raise VaekitError(f"{path}: not a regular file ({kind_of(path.stat().st_mode)}); name a data file")
    if path.suffix in (".npy", ".npz"):
        return read_numpy(path, mmap), "numpy"
    if path.suffix == ".csv":
        return read_csv(path), "csv"
    raise VaekitError(f"{path}: unknown dataset; use {', '.join(DATASETS)}, "
                      "or a .npy, .npz or .csv file or an image folder")


def _check_scale(name: str, scale: float | None) -> None:
    if scale is None:
        return
    if name in DATASETS:
        raise VaekitError(f"scale applies to user files; {name} is stored with its own scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise VaekitError(f"scale must be a positive number, got {scale!r}")


def _check_arguments(split_seed: object, val_size: object, data_dir: object, mmap: object = False,
                     overrides: object = None) -> None:
    from ..rng import MAX_SEED

    def whole(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not whole(split_seed) or not 0 <= split_seed <= MAX_SEED:  # type: ignore[operator]
        raise VaekitError(f"load_dataset: split_seed must be a whole number from 0 to {MAX_SEED}, got {split_seed!r:.40}")
    if val_size is not None and (not whole(val_size) or val_size < 0):  # type: ignore[operator]
        raise VaekitError(f"load_dataset: val_size must be a number of examples ≥ 0 (or None), got {val_size!r:.40}")
    if data_dir is not None and (not isinstance(data_dir, (str, os.PathLike)) or "\0" in str(data_dir)):
        raise VaekitError(f"load_dataset: data_dir must be a folder's path (or None), got {data_dir!r:.40}")
    if not isinstance(mmap, (bool, np.bool_)):  # 'no' would be true
        raise VaekitError(f"load_dataset: mmap must be True or False, got {mmap!r:.40}")
    if overrides is not None and not isinstance(overrides, dict):
        raise VaekitError(f"load_dataset: overrides must be a dict {{column: kind}} (or None), got {overrides!r:.40}")


def _check_standardize(support: str, standardize: bool, shift: object, spread: object) -> None:
    if standardize and support != "real":
        raise VaekitError(f"standardize applies to real-valued data (support 'real') only; this likelihood's "
                          f"support is {support!r}")
    if (shift is None) != (spread is None):
        raise VaekitError("give both shift and spread (saved standardization statistics) or neither")
    if shift is not None and not standardize:
        raise VaekitError("shift and spread re-apply a saved standardization: pass them with standardize=True")


def _carve_validation(ds: Dataset, n_val: int, seed: int, contiguous: bool = False, asked: bool = True) -> None:
    """Move n_val training examples to a "val" split: a seeded random subset, or the last n_val rows
    of a memory-mapped array (a random subset would copy it into memory)."""
    train = ds.splits["train"]
    n = train.shape[0]
    if not 0 <= n_val < n:
        raise VaekitError(f"{ds.name}: val_size {n_val} must be smaller than the {n} training examples" if asked else
                          f"{ds.name}: {n} training example{'s leave' if n != 1 else ' leaves'} none beside the default "
                          f"validation split of {n_val}; give more rows (or val_size 0: no validation)")
    if contiguous:
        ds.splits["val"], ds.splits["train"] = train[n - n_val :], train[: n - n_val]
        return
    val_idx, train_idx = (torch.from_numpy(i) for i in seeded_split(n, n_val, seed))
    ds.splits["val"], ds.splits["train"] = train[val_idx], train[train_idx]
    for side in (ds.labels, ds.factors):  # each example's label and factors go where it goes
        if "train" in side:
            y = side["train"]
            side["val"], side["train"] = y[val_idx], y[train_idx]
