"""Datasets as tensors: the embedded digits, and user arrays (.npy/.npz).

A `Dataset` keeps each split as one flattened tensor [N, D] in its stored dtype (uint8 stays uint8)
and converts per batch with `prepare`: scale to [0, 1], then binarize if the config says so.
Binarization is stated, never implied: "dynamic" draws x ~ Bernoulli(pixel) afresh every time an
image is used (Burda et al. 2016), "static" draws once with a fixed seed, "none" keeps grey levels
(then a Bernoulli likelihood requires the data to be 0/1 already).
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import VaekitError

SPLITS = ("train", "val", "test")
EVAL_BINARIZATION_SEED = 1234  # evaluation binarizes each split once with this seed, so numbers repeat


@dataclass
class Dataset:
    """name; shape: one example's shape (C, H, W) or (D,); splits: {"train"|"val"|"test": [N, D]}."""

    name: str
    shape: tuple[int, ...]
    splits: dict[str, Tensor]
    scale: float = 1.0  # stored value / scale ∈ [0, 1]
    binarize: str = "none"
    labels: dict[str, Tensor] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def split(self, name: str) -> Tensor:
        if name not in self.splits:
            raise VaekitError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(self.splits)}")
        return self.splits[name]

    def prepare(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A raw batch [B, D] → float32 in [0, 1], binarized by a fresh draw when binarize='dynamic'."""
        x = raw.to(torch.float32)
        if self.scale != 1.0:
            x = x / self.scale
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        return x

    def eval_split(self, name: str) -> Tensor:
        """A split ready for evaluation: float, and for dynamic binarization one fixed seeded draw."""
        g = torch.Generator().manual_seed(EVAL_BINARIZATION_SEED)
        return self.prepare(self.split(name), generator=g)


def load_dataset(name: str, binarize: str = "dynamic", likelihood: str = "bernoulli", split_seed: int = 0) -> Dataset:
    """The dataset a `DataConfig` names: "digits" or a path to .npy/.npz."""
    if name == "digits":
        x, y = _digits_arrays()
        splits, labels = _random_split(x, y, split_seed, val=200, test=297)
        ds = Dataset("digits", (1, 8, 8), splits, scale=16.0, labels=labels)
    elif name.endswith((".npy", ".npz")):
        ds = _load_array_file(Path(name), split_seed)
    else:
        raise VaekitError(f"unknown dataset {name!r}: use 'digits' or a path ending in .npy or .npz")
    return finalize(ds, binarize, likelihood, split_seed)


def finalize(ds: Dataset, binarize: str, likelihood: str, seed: int = 0) -> Dataset:
    """Check values against the likelihood and apply the binarization choice."""
    for name, x in ds.splits.items():
        check_values(x, ds.scale, f"{ds.name} [{name}]")
    if binarize == "static":
        g = torch.Generator().manual_seed(seed)
        ds.splits = {k: torch.bernoulli(v.to(torch.float32) / ds.scale, generator=g).to(torch.uint8) for k, v in ds.splits.items()}
        ds.scale = 1.0
    elif binarize == "none" and likelihood == "bernoulli":
        for name, x in ds.splits.items():
            if not bool(((x == 0) | (x == ds.scale)).all()):
                raise VaekitError(
                    f"{ds.name} [{name}]: a Bernoulli likelihood needs 0/1 data but these are grey levels; "
                    "use --binarize dynamic|static or a Gaussian likelihood"
                )
    elif binarize not in ("dynamic", "none"):
        raise VaekitError(f"unknown binarize {binarize!r}: choose dynamic, static or none")
    ds.binarize = "dynamic" if binarize == "dynamic" else "none"
    return ds


def check_values(x: Tensor, scale: float, where: str) -> None:
    if x.shape[0] == 0:
        raise VaekitError(f"{where}: the dataset is empty")
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise VaekitError(f"{where}: example {i} contains NaN or Inf")
    lo, hi = float(x.min()) / scale, float(x.max()) / scale
    if lo < 0 or hi > 1:
        raise VaekitError(f"{where}: values must lie in [0, 1] after scaling, found range [{lo:g}, {hi:g}]")


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's copy of the UCI optical digits: 1797 images 8×8, grey levels 0..16 (embedded)."""
    with resources.files("vaekit.resources").joinpath("digits.csv.gz").open("rb") as f, gzip.open(f) as g:
        table = np.loadtxt(g, delimiter=",", dtype=np.uint8)
    return table[:, :64], table[:, 64].astype(np.int64)


def _random_split(x: np.ndarray, y: np.ndarray | None, seed: int, val: int, test: int):
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).numpy()
    parts = {"test": perm[:test], "val": perm[test : test + val], "train": perm[test + val :]}
    splits = {k: torch.from_numpy(np.ascontiguousarray(x[idx])) for k, idx in parts.items()}
    labels = {} if y is None else {k: torch.from_numpy(y[idx]) for k, idx in parts.items()}
    return splits, labels


def _as_examples(arr: np.ndarray, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
    if arr.dtype.kind not in "uif" or arr.dtype == np.bool_:
        raise VaekitError(f"{where}: expected numeric data, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise VaekitError(f"{where}: expected shape [N, ...] with one example per row, got {tuple(arr.shape)}")
    shape = tuple(arr.shape[1:])
    if len(shape) == 2:  # [N, H, W] greyscale images
        shape = (1, *shape)
    return arr.reshape(len(arr), -1), shape


def _load_array_file(path: Path, seed: int) -> Dataset:
    """A .npy ([N, ...], split 80/10/10 with `seed`) or .npz (arrays train/val/test, or x [+ y])."""
    if not path.exists():
        raise VaekitError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = {k: loaded[k] for k in loaded.files} if path.suffix == ".npz" else {"x": loaded}
    except (ValueError, OSError, EOFError) as e:
        raise VaekitError(f"{path}: cannot read as {path.suffix} ({e})") from None
    if all(k in arrays for k in ("train", "test")):
        named = {"train": arrays["train"], "val": arrays.get("val", arrays.get("valid")), "test": arrays["test"]}
        splits, shape = {}, None
        for k, a in named.items():
            if a is not None:
                flat, shape_k = _as_examples(a, f"{path} [{k}]")
                if shape is not None and shape_k != shape:
                    raise VaekitError(f"{path} [{k}]: example shape {shape_k} differs from {shape}")
                splits[k], shape = torch.from_numpy(np.ascontiguousarray(flat)), shape_k
        if "val" not in splits:
            splits["val"] = splits["test"]
        labels = {}
    else:
        key = "x" if "x" in arrays else next(iter(arrays), None)
        if key is None:
            raise VaekitError(f"{path}: the archive holds no arrays")
        flat, shape = _as_examples(arrays[key], f"{path} [{key}]")
        n = len(flat)
        if n < 3:
            raise VaekitError(f"{path}: need at least 3 examples to split, got {n}")
        n_test = n_val = max(1, n // 10)
        splits, labels = _random_split(flat, arrays.get("y"), seed, val=n_val, test=n_test)
    sample = next(iter(splits.values()))
    scale = 255.0 if sample.dtype == torch.uint8 else 1.0
    splits = {k: v if v.dtype == torch.uint8 else v.to(torch.float32) for k, v in splits.items()}
    return Dataset(path.name, shape, splits, scale=scale, labels=labels)
