"""Datasets as tensors: the named datasets, user arrays, and what a likelihood's support admits.

A `Dataset` keeps each split as one flattened tensor [N, D] in its stored dtype (uint8 stays uint8)
and converts per batch with `prepare`: divide by `scale` (to the data's units: [0, 1] for grey
levels), binarize if the config says so, standardize if asked.

The likelihood's support decides what data are acceptable (SUPPORTS): "binary" (Bernoulli: 0/1, or
grey levels in [0, 1] that are binarized), "unit" (values in [0, 1], e.g. continuous Bernoulli),
"real" (any finite value, e.g. Gaussian), "count" (whole numbers ≥ 0, kept unscaled). Binarization is
stated, never implied, and only for a binary support: "dynamic" draws x ~ Bernoulli(pixel) afresh every
time an image is used (Burda et al. 2016), "static" draws once with a fixed seed, "none" keeps the
values (then a binary support requires 0/1 data), "auto" is dynamic for binary and none otherwise.
Standardization (real support only) maps each dimension to mean 0 and standard deviation 1 over the
training split; `restore` and `log_det_jacobian` take samples and densities back to the data's units.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .datasets_builtin import BUILTIN, read_builtin
from .errors import VaekitError
from .mnist import load_mnist_family

SPLITS = ("train", "val", "test")
SUPPORTS = ("binary", "unit", "real", "count")
BINARIZE = ("auto", "dynamic", "static", "none")
MNIST_FAMILY = ("mnist", "fashion-mnist", "binarized-mnist")
DATASETS = (*BUILTIN, *MNIST_FAMILY)  # the named datasets; any other name is a path
EVAL_BINARIZATION_SEED = 1234  # evaluation binarizes each split once with this seed, so numbers repeat
MIN_SPREAD = 1e-12  # a dimension whose training std is below this (constant) is not rescaled: spread 1


@dataclass
class Dataset:
    """name; shape: one example's shape (C, H, W) or (D,); splits: {"train"|"val"|"test": [N, D]}."""

    name: str
    shape: tuple[int, ...]
    splits: dict[str, Tensor]
    scale: float = 1.0  # stored value / scale: the data in its units (∈ [0, 1] for binary and unit supports)
    binarize: str = "none"  # "dynamic" or "none" once loaded (a static draw is stored, then "none")
    labels: dict[str, Tensor] = field(default_factory=dict)
    shift: Tensor | None = None  # float32 [D]: training mean per dimension when standardizing (set it with
    # with_standardization: prepare caches device copies), else None
    spread: Tensor | None = None  # float32 [D]: the training std per dimension (1 if constant), else None
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
        stats = {}
        for what, v in (("shift", shift), ("spread", spread)):
            t = torch.as_tensor(v).detach().to("cpu", torch.float32).clone()
            if tuple(t.shape) != (self.dim,):
                raise VaekitError(f"{self.name}: {what} has shape {list(t.shape)}; the data need [{self.dim}]")
            if not bool(torch.isfinite(t).all()):
                raise VaekitError(f"{self.name}: {what} holds NaN or Inf")
            stats[what] = t
        if not bool((stats["spread"] > 0).all()):
            raise VaekitError(f"{self.name}: spread must be positive, found minimum {float(stats['spread'].min()):g}")
        return replace(self, **stats)

    def eval_split(self, name: str) -> Tensor:
        """A split ready for evaluation: float, and for dynamic binarization one fixed seeded draw."""
        g = torch.Generator().manual_seed(EVAL_BINARIZATION_SEED)
        return self.prepare(self.split(name), generator=g)

    def _affine(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(shift, spread) on x's device, copied there once (a copy per batch would stall a CUDA graph),
        shaped [D] for flat x and `shape` for unflattened x."""
        if x.device not in self._on_device:
            self._on_device[x.device] = (self.shift.to(x.device), self.spread.to(x.device))
        shift, spread = self._on_device[x.device]
        if x.shape[-1] != self.dim:
            shift, spread = shift.view(self.shape), spread.view(self.shape)
        return shift, spread


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
) -> Dataset:
    """The dataset a `DataConfig` names, split into train/val/test and checked against the likelihood's
    support (one of SUPPORTS).

    name: "digits", "wine" (embedded), "frey-faces", "mnist", "fashion-mnist", "binarized-mnist" (files
    under `data_dir`, verified by MD5), or a path: .npy, .npz, .csv, or a folder of PNG/JPEG images.
    binarize: auto | dynamic | static | none (see the module docstring); the result's `binarize` is the
    resolved "dynamic" or "none". val_size: validation examples drawn (seeded by `split_seed`) from the
    training split; None takes the dataset's default (see datasets_builtin; 10000 for MNIST-like, 10%
    for user data). standardize (support "real" only): per-dimension mean and std of the training split,
    or the given `shift` and `spread` (statistics saved at training time) instead of recomputing them.
    """
    resolve_binarize(binarize, support)  # argument errors before any file is read
    _check_standardize(support, standardize, shift, spread)
    ds, default_val = _load_source(name, split_seed, data_dir, mmap)
    if "val" in ds.splits and val_size is not None and name in DATASETS:
        raise VaekitError(f"{name} comes with its own validation split; leave val_size unset")
    if "val" not in ds.splits:
        _carve_validation(ds, default_val if val_size is None else val_size, split_seed, contiguous=mmap)
    ds = finalize(ds, binarize, support, split_seed)
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
) -> Dataset:
    """In-memory data as a Dataset (what `vaekit.fit` trains on): x_train [N, ...] and optionally
    x_val; without x_val a seeded 10% of x_train is held out for validation. Values are checked
    against `support` like a file's; bool arrays are 0/1 data; no test split."""
    arrays = {"train": x_train} if x_val is None else {"train": x_train, "val": x_val}
    splits, shape = {}, None
    for name, a in arrays.items():
        a = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
        flat, shape_k = _as_examples(a, f"x_{name}")
        if shape is not None and shape_k != shape:
            raise VaekitError(f"x_val: example shape {shape_k} differs from x_train's {shape}")
        splits[name], shape = _to_tensor(flat), shape_k
    ds = Dataset("tensors", shape, splits, scale=255.0 if splits["train"].dtype == torch.uint8 and support != "count"
                 and bool((splits["train"] > 1).any()) else 1.0)
    if x_val is None:
        _carve_validation(ds, max(1, len(splits["train"]) // 10), seed)
    return finalize(ds, binarize, support, seed)


def _load_source(name: str, split_seed: int, data_dir: str | None, mmap: bool) -> tuple[Dataset, int]:
    """The named dataset or user data, with train and test splits (and val where published), and
    the default validation size."""
    if name in BUILTIN:
        spec = BUILTIN[name]
        x, y = read_builtin(name, data_dir)
        test_idx, rest = _seeded_split(len(x), spec.test, split_seed)
        splits = {"test": torch.from_numpy(x[test_idx]), "train": torch.from_numpy(x[rest])}
        labels = {} if y is None else {"test": torch.from_numpy(y[test_idx]), "train": torch.from_numpy(y[rest])}
        return Dataset(name, spec.shape, splits, scale=spec.scale, labels=labels), spec.val
    if name in MNIST_FAMILY:
        d = load_mnist_family(name, data_dir)
        return Dataset(name, tuple(d["shape"]), d["splits"], scale=d["scale"], labels=d["labels"]), 10_000
    ds = _load_user_data(Path(name), split_seed, mmap)
    return ds, max(1, ds.splits["train"].shape[0] // 10)


def _check_standardize(support: str, standardize: bool, shift: object, spread: object) -> None:
    if standardize and support != "real":
        raise VaekitError(f"standardize applies to real-valued data (support 'real') only; this likelihood's "
                          f"support is {support!r}")
    if (shift is None) != (spread is None):
        raise VaekitError("give both shift and spread (saved standardization statistics) or neither")
    if shift is not None and not standardize:
        raise VaekitError("shift and spread re-apply a saved standardization: pass them with standardize=True")


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
        check_values(x, ds.scale, f"{ds.name} [{name}]", support)
    if binarize == "static":
        g = torch.Generator().manual_seed(seed)
        ds.splits = {k: torch.bernoulli(v.to(torch.float32) / ds.scale, generator=g).to(torch.uint8) for k, v in ds.splits.items()}
        ds.scale = 1.0
    elif binarize == "none" and support == "binary":
        for name, x in ds.splits.items():
            if not bool(((x == 0) | (x == ds.scale)).all()):
                raise VaekitError(
                    f"{ds.name} [{name}]: a Bernoulli likelihood needs 0/1 data but these are grey levels; "
                    "use --binarize auto|dynamic|static or a likelihood with unit or real support"
                )
    ds.binarize = binarize if binarize == "dynamic" else "none"
    return ds


def check_values(x: Tensor, scale: float, where: str, support: str = "unit", block: int = 65536) -> None:
    """Non-empty, finite, and what `support` admits: "real" any finite value, "unit" and "binary" [0, 1]
    after scaling, "count" whole numbers ≥ 0. Checked in blocks so a memory map is streamed."""
    if x.shape[0] == 0:
        raise VaekitError(f"{where}: the dataset is empty")
    lo, hi = math.inf, -math.inf
    for start in range(0, x.shape[0], block):
        xb = x[start : start + block]
        if xb.is_floating_point():
            _refuse_first(~torch.isfinite(xb), start, f"{where}: example {{}} contains NaN or Inf")
            if support == "count":
                _refuse_first(xb != xb.round(), start, f"{where}: count data must be whole numbers; example {{}} is not")
        lo, hi = min(lo, float(xb.min()) / scale), max(hi, float(xb.max()) / scale)
    if support in ("unit", "binary") and (lo < 0 or hi > 1):
        raise VaekitError(f"{where}: values must lie in [0, 1] after scaling for support {support!r}, found range "
                          f"[{lo:g}, {hi:g}]; real-valued data need a likelihood with real support (e.g. Gaussian)")
    if support == "count" and lo < 0:
        raise VaekitError(f"{where}: count data must be non-negative, found range [{lo:g}, {hi:g}]")


def _refuse_first(bad: Tensor, start: int, message: str) -> None:
    """Raise `message` naming the first example (row start + i) of a block with a True in `bad` [B, D]."""
    if bool(bad.any()):
        raise VaekitError(message.format(start + int(bad.nonzero()[0, 0])))


def standardization(x: Tensor, scale: float = 1.0, block: int = 65536) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and standard deviation (divisor N) of x/scale, x: [N, D], as float32 [D] each.

    Accumulated in float64 block by block (so a memory map is streamed) with Chan et al.'s pairwise
    update (1979), which does not cancel when a mean is large against its spread. A dimension whose
    std is below MIN_SPREAD (constant) gets spread 1: it is shifted to 0, not blown up."""
    n, mean, m2 = 0, torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, x.shape[0], block):
        xb = x[start : start + block].to(torch.float64) / scale
        nb, mean_b = xb.shape[0], xb.mean(0)
        delta, total = mean_b - mean, n + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + ((xb - mean_b) ** 2).sum(0) + delta**2 * (n * nb / total)
        n = total
    std = (m2 / n).sqrt()
    return mean.float(), torch.where(std < MIN_SPREAD, torch.ones_like(std), std).float()


def _as_examples(arr: np.ndarray, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """arr [N, ...] → (a view [N, D], one example's shape); a bool array is viewed as uint8 0/1."""
    if arr.dtype.kind not in "buif":
        raise VaekitError(f"{where}: expected numeric data, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise VaekitError(f"{where}: expected shape [N, ...] with one example per row, got {tuple(arr.shape)}")
    shape = tuple(arr.shape[1:])
    if math.prod(shape) == 0:
        raise VaekitError(f"{where}: each example must hold at least one value, got shape {tuple(arr.shape)}")
    if len(shape) == 2:  # [N, H, W] greyscale images
        shape = (1, *shape)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)  # same bytes, no copy: a memory map stays one
    return arr.reshape(len(arr), math.prod(shape)), shape


def _load_user_data(path: Path, seed: int, mmap: bool = False) -> Dataset:
    """User data: .npy ([N, ...]), .npz (train/test[/val] arrays, or x [+ y]), .csv (one example a
    row, optional header), or a folder of PNG/JPEG images. Without a given test split, a seeded 10%
    is held out (the last 10% for a memory-mapped .npy). uint8 data are kept as uint8, scaled by 1/255;
    bool data become uint8 0/1 (scale 1)."""
    if not path.exists():
        raise VaekitError(f"{path}: no such file or directory, and not a named dataset ({', '.join(DATASETS)})")
    if path.is_dir():
        from .images import read_image_folder

        arrays = {"x": read_image_folder(path)}
    elif path.suffix in (".npy", ".npz"):
        arrays = _read_numpy(path, mmap)
    elif path.suffix == ".csv":
        arrays = {"x": _read_csv(path)}
    else:
        raise VaekitError(f"{path}: unknown dataset; use {', '.join(DATASETS)}, "
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
    bits = named["train"].dtype == np.bool_
    scale = 255.0 if splits["train"].dtype == torch.uint8 and not bits else 1.0
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
