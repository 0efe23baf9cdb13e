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
import zipfile
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

    def prepare(self, raw: Tensor, generator: torch.Generator | None = None, u: Tensor | None = None) -> Tensor:
        """A raw batch [B, D] → float32 in [0, 1], binarized by a fresh draw when binarize='dynamic'.

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
        return x

    def eval_split(self, name: str) -> Tensor:
        """A split ready for evaluation: float, and for dynamic binarization one fixed seeded draw."""
        g = torch.Generator().manual_seed(EVAL_BINARIZATION_SEED)
        return self.prepare(self.split(name), generator=g)


def load_dataset(
    name: str,
    binarize: str = "dynamic",
    likelihood: str = "bernoulli",
    split_seed: int = 0,
    val_size: int | None = None,
    data_dir: str | None = None,
    mmap: bool = False,
) -> Dataset:
    """The dataset a `DataConfig` names, split into train/val/test and checked against the likelihood.

    name: "digits" (embedded), "mnist", "fashion-mnist", "binarized-mnist" (files under `data_dir`,
    verified by MD5), or a path: .npy, .npz, .csv, or a folder of PNG/JPEG images.
    val_size: validation examples drawn (seeded by `split_seed`) from the training split;
    None takes the dataset's default (200 for digits, 10000 for MNIST-like, 10% for user data).
    """
    if name == "digits":
        x, y = _digits_arrays()
        test_idx, rest = _seeded_split(len(x), 297, split_seed)
        splits = {"test": torch.from_numpy(x[test_idx]), "train": torch.from_numpy(x[rest])}
        labels = {"test": torch.from_numpy(y[test_idx]), "train": torch.from_numpy(y[rest])}
        ds = Dataset("digits", (1, 8, 8), splits, scale=16.0, labels=labels)
    elif name in MNIST_FAMILY:
        from .mnist import load_mnist_family

        d = load_mnist_family(name, data_dir)
        ds = Dataset(name, tuple(d["shape"]), d["splits"], scale=d["scale"], labels=d["labels"])
        if "val" in ds.splits and val_size is not None:
            raise VaekitError(f"{name} comes with its own validation split; leave val_size unset")
    else:
        ds = _load_user_data(Path(name), split_seed, mmap)
    if "val" not in ds.splits:
        n_train = ds.splits["train"].shape[0]
        default = {"digits": 200}.get(name, 10_000 if name in MNIST_FAMILY else max(1, n_train // 10))
        _carve_validation(ds, default if val_size is None else val_size, split_seed, contiguous=mmap)
    return finalize(ds, binarize, likelihood, split_seed)


MNIST_FAMILY = ("mnist", "fashion-mnist", "binarized-mnist")


def _seeded_split(n: int, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded random subset of size n_out and of the rest, each in increasing order."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(perm[:n_out]), np.sort(perm[n_out:])


def _carve_validation(ds: Dataset, n_val: int, seed: int, contiguous: bool = False) -> None:
    """Move n_val training examples to a "val" split: a seeded random subset, or the last n_val rows
    of a memory-mapped array (a random subset would copy it into memory)."""
    train = ds.splits["train"]
    n = train.shape[0]
    if not 0 <= n_val < n:
        raise VaekitError(f"{ds.name}: val_size {n_val} must be smaller than the {n} training examples")
    if contiguous:
        ds.splits["val"], ds.splits["train"] = train[n - n_val :], train[: n - n_val]
        return
    val_idx, train_idx = (torch.from_numpy(i) for i in _seeded_split(n, n_val, seed))
    ds.splits["val"], ds.splits["train"] = train[val_idx], train[train_idx]
    if "train" in ds.labels:
        y = ds.labels["train"]
        ds.labels["val"], ds.labels["train"] = y[val_idx], y[train_idx]


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


def check_values(x: Tensor, scale: float, where: str, block: int = 65536) -> None:
    """Non-empty, finite, and in [0, 1] after scaling; checked in blocks so a memory map is streamed."""
    if x.shape[0] == 0:
        raise VaekitError(f"{where}: the dataset is empty")
    lo, hi = math.inf, -math.inf
    for start in range(0, x.shape[0], block):
        xb = x[start : start + block]
        if xb.is_floating_point():
            bad = ~torch.isfinite(xb)
            if bool(bad.any()):
                i = start + int(bad.nonzero()[0, 0])
                raise VaekitError(f"{where}: example {i} contains NaN or Inf")
        lo, hi = min(lo, float(xb.min()) / scale), max(hi, float(xb.max()) / scale)
    if lo < 0 or hi > 1:
        raise VaekitError(f"{where}: values must lie in [0, 1] after scaling, found range [{lo:g}, {hi:g}]")


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's copy of the UCI optical digits: 1797 images 8×8, grey levels 0..16 (embedded)."""
    with resources.files("vaekit.resources").joinpath("digits.csv.gz").open("rb") as f, gzip.open(f) as g:
        table = np.loadtxt(g, delimiter=",", dtype=np.uint8)
    return table[:, :64], table[:, 64].astype(np.int64)


def _as_examples(arr: np.ndarray, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
    if arr.dtype.kind not in "uif" or arr.dtype == np.bool_:
        raise VaekitError(f"{where}: expected numeric data, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise VaekitError(f"{where}: expected shape [N, ...] with one example per row, got {tuple(arr.shape)}")
    shape = tuple(arr.shape[1:])
    if math.prod(shape) == 0:
        raise VaekitError(f"{where}: each example must hold at least one value, got shape {tuple(arr.shape)}")
    if len(shape) == 2:  # [N, H, W] greyscale images
        shape = (1, *shape)
    return arr.reshape(len(arr), math.prod(shape)), shape


def _load_user_data(path: Path, seed: int, mmap: bool = False) -> Dataset:
    """User data: .npy ([N, ...]), .npz (train/test[/val] arrays, or x [+ y]), .csv (one example a
    row, optional header), or a folder of PNG/JPEG images. Without a given test split, a seeded 10%
    is held out (the last 10% for a memory-mapped .npy). uint8 data are kept as uint8, scaled by 1/255."""
    if not path.exists():
        raise VaekitError(f"{path}: no such file or directory")
    if path.is_dir():
        from .images import read_image_folder

        arrays = {"x": read_image_folder(path)}
    elif path.suffix in (".npy", ".npz"):
        arrays = _read_numpy(path, mmap)
    elif path.suffix == ".csv":
        arrays = {"x": _read_csv(path)}
    else:
        raise VaekitError(f"{path}: unknown dataset; use digits, mnist, fashion-mnist, binarized-mnist, "
                          "or a .npy, .npz or .csv file or an image folder")
    if "train" in arrays and "test" in arrays:
        named = {"train": arrays["train"], "test": arrays["test"]}
        if "val" in arrays or "valid" in arrays:
            named["val"] = arrays.get("val", arrays.get("valid"))
        labels: dict[str, Tensor] = {}
    else:
        key = "x" if "x" in arrays else next(iter(arrays), None)
        if key is None:
            raise VaekitError(f"{path}: the archive holds no arrays")
        x = arrays[key]
        _as_examples(x, f"{path} [{key}]")  # dtype and rank first: len() of a 0-d array would fail
        n = len(x)
        if n == 0:
            raise VaekitError(f"{path}: the dataset is empty")
        if n < 3:
            raise VaekitError(f"{path}: need at least 3 examples to split, got {n}")
        n_test = max(1, n // 10)
        if mmap:
            named = {"train": x[: n - n_test], "test": x[n - n_test :]}
        else:
            test_idx, rest = _seeded_split(n, n_test, seed)
            named = {"train": x[rest], "test": x[test_idx]}
        y = arrays.get("y")
        labels = {} if y is None or mmap else {"train": torch.from_numpy(y[rest]), "test": torch.from_numpy(y[test_idx])}
    splits, shape = {}, None
    for k, a in named.items():
        flat, shape_k = _as_examples(a, f"{path} [{k}]")
        if shape is not None and shape_k != shape:
            raise VaekitError(f"{path} [{k}]: example shape {shape_k} differs from {shape}")
        splits[k], shape = _to_tensor(flat), shape_k
    scale = 255.0 if splits["train"].dtype == torch.uint8 else 1.0
    return Dataset(path.name, shape, splits, scale=scale, labels=labels)


def _to_tensor(a: np.ndarray) -> Tensor:
    """Share memory where possible (a memory-mapped array stays on disk); uint8 stays uint8."""
    if a.dtype != np.uint8 and a.dtype != np.float32:
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become ±inf: check_values names them
            a = a.astype(np.float32)
    return torch.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))


def _read_numpy(path: Path, mmap: bool) -> dict[str, np.ndarray]:
    if mmap and path.suffix != ".npy":
        raise VaekitError(f"{path}: memory mapping needs a .npy file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        # mode "c" (copy-on-write) maps the file lazily and gives torch a writable buffer
        return {"x": np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise VaekitError(f"{path}: cannot read as {path.suffix} ({e})") from None


def _read_csv(path: Path) -> np.ndarray:
    """Numbers separated by commas, one example a row; a first row that is not numeric is a header."""
    with open(path) as f:
        first = f.readline()
    try:
        [float(v) for v in first.split(",")]
        skip = 0
    except ValueError:
        skip = 1
    try:
        arr = np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise VaekitError(f"{path}: not a numeric CSV ({e})") from None
    return _pixels_or_floats(arr)


def _pixels_or_floats(arr: np.ndarray) -> np.ndarray:
    """Whole numbers in 0..255 with some above 1 are pixel values: keep them as uint8 (scaled by 1/255)."""
    if arr.size and arr.min() >= 0 and 1 < arr.max() <= 255 and bool((arr == np.round(arr)).all()):
        return arr.astype(np.uint8)
    return arr.astype(np.float32)
