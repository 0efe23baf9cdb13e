"""User data: arrays ([N, ...], one example a row) read from .npy, .npz, .csv or a folder of PNG/JPEG
images, made into a Dataset's split tensors.

uint8 data are kept as uint8, scaled by 1/255; bool data become uint8 0/1 (scale 1). Without a given
test split, a seeded 10% is held out (the last 10% for a memory-mapped .npy). Pillow, needed for image
folders only, is an optional dependency (`pip install pillow`): imported when a folder is read.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import VaekitError
from .dataset import Dataset, seeded_split

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def user_dataset(path: Path, arrays: dict[str, np.ndarray], seed: int, mmap: bool = False) -> Dataset:
    """The arrays read from `path` as a Dataset: "train", "test" (and "val" or "valid") as given, else
    the array "x" (or the first) split into train and a held-out test, with labels from "y"."""
    if "train" in arrays and "test" in arrays:
        named = {"train": arrays["train"], "test": arrays["test"]}
        if "val" in arrays or "valid" in arrays:
            named["val"] = arrays.get("val", arrays.get("valid"))
        labels: dict[str, Tensor] = {}
    else:
        named, labels = _hold_out_test(path, arrays, seed, mmap)
    splits, shape = {}, None
    for k, a in named.items():
        flat, shape_k = as_examples(a, f"{path} [{k}]")
        if shape is not None and shape_k != shape:
            raise VaekitError(f"{path} [{k}]: example shape {shape_k} differs from {shape}")
        splits[k], shape = to_tensor(flat), shape_k
    bits = named["train"].dtype == np.bool_
    scale = 255.0 if splits["train"].dtype == torch.uint8 and not bits else 1.0
    return Dataset(path.name, shape, splits, scale=scale, labels=labels)


def _hold_out_test(path: Path, arrays: dict[str, np.ndarray], seed: int,
                   mmap: bool) -> tuple[dict[str, np.ndarray], dict[str, Tensor]]:
    """({"train", "test"} arrays, their labels) from one array: a seeded 10% test, or the last 10% of a
    memory map (a random subset would copy it into memory, so a memory map keeps no labels)."""
    key = "x" if "x" in arrays else next(iter(arrays), None)
    if key is None:
        raise VaekitError(f"{path}: the archive holds no arrays")
    x = arrays[key]
    as_examples(x, f"{path} [{key}]")  # dtype and rank first: len() of a 0-d array would fail
    n = len(x)
    if n == 0:
        raise VaekitError(f"{path}: the dataset is empty")
    if n < 3:
        raise VaekitError(f"{path}: need at least 3 examples to split, got {n}")
    n_test = max(1, n // 10)
    if mmap:
        return {"train": x[: n - n_test], "test": x[n - n_test :]}, {}
    test_idx, rest = seeded_split(n, n_test, seed)
    y = arrays.get("y")
    labels = {} if y is None else {"train": torch.from_numpy(y[rest]), "test": torch.from_numpy(y[test_idx])}
    return {"train": x[rest], "test": x[test_idx]}, labels


def as_examples(arr: np.ndarray, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
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


def to_tensor(a: np.ndarray) -> Tensor:
    """Share memory where possible (a memory-mapped array stays on disk); uint8 stays uint8."""
    if a.dtype != np.uint8 and a.dtype != np.float32:
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become ±inf: check_values names them
            a = a.astype(np.float32)
    return torch.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))


def read_numpy(path: Path, mmap: bool) -> dict[str, np.ndarray]:
    """A .npy as {"x": array} (memory-mapped if `mmap`) or a .npz's arrays by name; no pickles."""
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


def read_csv(path: Path) -> np.ndarray:
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


def read_image_folder(folder: Path) -> np.ndarray:
    """All images under `folder` (sorted by path) → [N, H, W] (grey) or [N, 3, H, W] (colour), uint8.

    Every file must be an image of the same size and colour mode; the first that is not names itself.
    """
    try:  # imported here: Pillow is an optional dependency that only image folders need
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise VaekitError("reading an image folder needs Pillow: pip install pillow") from None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise VaekitError(f"{folder}: the folder holds no files")
    images, first = [], None
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise VaekitError(f"{path}: not a PNG or JPEG image (only images may be in {folder})")
        try:
            with Image.open(path) as im:
                im = im.convert("L" if im.mode in ("1", "L", "I;16", "I", "LA", "P") and _is_grey(im) else "RGB")
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise VaekitError(f"{path}: cannot read image ({e})") from None
        signature = arr.shape
        if first is None:
            first = (path, signature)
        elif signature != first[1]:
            raise VaekitError(f"{path}: image shape {signature} differs from {first[1]} of {first[0].name}; "
                              "all images must have one size and colour mode")
        images.append(arr)
    stacked = np.stack(images)
    return stacked if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)


def _is_grey(im) -> bool:
    if im.mode != "P":
        return True
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
