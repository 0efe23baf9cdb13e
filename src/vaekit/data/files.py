"""User data: arrays ([N, ...], one example a row) read from .npy, .npz, .csv or a folder of PNG/JPEG
images (images.py), made into a Dataset's split tensors.

Scale (what stored values are divided by to get the data's units): 8-bit data, uint8 arrays and 8-bit
images, are divided by 255, 16-bit images by 65535; everything else is used as given (scale 1): floats,
other integer types, bool (0/1), and CSV files, whose numbers carry no bit depth (a CSV of digits'
grey levels 0..16 is 0..16, not 0..16/255). `load_dataset(..., scale=s)` states another scale. The
splits of one file must agree: a uint8 split beside one of another dtype is refused (one scale could
not fit both), not divided by two scales.

Without a given test split, a seeded 10% (at least 2 examples) is held out (the last 10% for a
memory-mapped .npy). A memory-mapped array stays in its stored dtype (float64 included) and is
converted batch by batch in `Dataset.prepare`, so no copy of it is made in memory.
"""

from __future__ import annotations

import ast
import io
import logging
import math
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import VaekitError
from ..files import check_zip_members, physical_memory
from .dataset import Dataset, seeded_split
from .images import SIXTEEN_BIT

log = logging.getLogger(__name__)
WHOLE = re.compile(r"[+-]?\d+")  # a whole number as a CSV writes one
SPLIT_LABELS = {"y_train", "y_test", "y_val", "y_valid"}  # the labels of splits given as train and test (and val)
SPLIT_FACTORS = {f"factors_{k}" for k in ("train", "test", "val", "valid")}  # and their factors
KNOWN_KEYS = {"x", "y", "factors", "factor_names", "train", "test", "val", "valid"} | SPLIT_LABELS | SPLIT_FACTORS  # an .npz
MAX_CLASSES = 100_000  # labels are class indices: a one-hot of more classes is no label a VAE conditions on
MAX_CONDITION_CLASSES = 1000  # ImageNet's: a conditional VAE's every example and draw carries a one-hot this wide, and
# a picture draws every class (labels up to MAX_CLASSES serve the other uses: encode's output, the disentanglement)
MIN_TEST = 2  # the test split's smallest size: a standard error, active units, interpolations need two
# dtypes a memory map keeps as stored (torch computes with them); others are converted to float32
_MAPPABLE = {np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64)}


def user_dataset(path: Path, arrays: dict[str, np.ndarray], seed: int, mmap: bool = False, source: str = "numpy",
                 scale: float | None = None) -> tuple[Dataset, str]:
    """The arrays read from `path` as a Dataset, and what its scale is based on (for the log):
    "train", "test" (and "val" or "valid") as given, else the array "x" (or the first) split into train
    and a held-out test, with labels from "y". source: "numpy", "csv" or "images" (where uint16 is
    16-bit, scale 65535); scale: the user's stated scale, else the source and dtype decide (module doc)."""
    ignored = sorted(set(arrays) - KNOWN_KEYS) if len(arrays) > 1 else []
    if "x" in arrays and "train" in arrays and "test" in arrays:  # the splits as given win
        log.warning("%s: ignoring the array x (the arrays train and test are the splits)", path)
    if ignored:
        log.warning("%s: ignoring the arrays %s (vaekit reads %s)", path, ", ".join(ignored), ", ".join(sorted(KNOWN_KEYS)))
    splits_given = sorted(({"train", "test", "val", "valid"} | SPLIT_LABELS | SPLIT_FACTORS) & set(arrays))
    if splits_given and not {"train", "test"} <= set(arrays) and ("x" in arrays or len(arrays) == 1):  # the rest refused
        what = f"ignoring the array{'s' * (len(splits_given) > 1)} {', '.join(splits_given)}" if "x" in arrays else \
            f"the array {splits_given[0]} alone is read as all the data"
        log.warning("%s: %s: every split is drawn from %s; to give the splits, name the arrays train and test (and val)",
                    path, what, "x" if "x" in arrays else "it")
    if "train" in arrays and "test" in arrays:
        named = {"train": arrays["train"], "test": arrays["test"]}
        if "val" in arrays or "valid" in arrays:
            named["val"] = arrays.get("val", arrays.get("valid"))
        labels: dict[str, Tensor] = _split_labels(path, arrays, named)
        factors: dict[str, Tensor] = _split_factors(path, arrays, named)
    else:
        named, labels, factors = _hold_out_test(path, arrays, seed, mmap)
    splits, shape = {}, None
    for k, a in named.items():
        flat, shape_k = as_examples(a, f"{path} [{k}]")
        if shape is not None and shape_k != shape:
            raise VaekitError(f"{path} [{k}]: example shape {shape_k} differs from {shape}")
        splits[k], shape = to_tensor(flat, keep=mmap), shape_k
    if 0 < len(splits["test"]) < MIN_TEST:
        raise VaekitError(f"{path} [test]: 1 example; a test split needs at least {MIN_TEST} (its standard error, "
                          "active units and the report's pictures compare examples)")
    if scale is None:
        scale, note = _stored_scale(path, {k: a.dtype for k, a in named.items()}, source)
    else:
        scale, note = float(scale), "the scale given"
    names = _factor_names(path, arrays.get("factor_names"), factors["train"].shape[1]) if factors else ()
    return Dataset(path.name, shape, splits, scale=scale, labels=labels, factors=factors, factor_names=names), note


def _per_split(path: Path, arrays: dict[str, np.ndarray], named: dict[str, np.ndarray], prefix: str,
               what: str) -> dict[str, str]:
    """split → the name of its array `prefix`_split (y_train, factors_val or factors_valid, …): one for each split
    given, or none ({}); some only are refused."""
    keys = {k: f"{prefix}_{k}" if k != "val" or f"{prefix}_val" in arrays else f"{prefix}_valid" for k in named}
    have = [k for k, key in keys.items() if key in arrays]
    if have and len(have) < len(named):
        raise VaekitError(f"{path}: {what} {', '.join(keys[k] for k in have)} given but not "
                          f"{', '.join(keys[k] for k in named if k not in have)}; give one {what[:-1]} array per split, "
                          "or none")
    return keys if have else {}


def _split_labels(path: Path, arrays: dict[str, np.ndarray], named: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """The labels of splits given as arrays (y_train, y_test, y_val or y_valid), one array for each split or none;
    labels and factors that go with x are said unused."""
    unused = sorted({"y", "factors"} & set(arrays))
    if unused:
        log.warning("%s: ignoring the array%s %s: with the splits given as train and test, their labels are y_train "
                    "and y_test (and y_val), their factors factors_train and factors_test (and factors_val)", path,
                    "s" * (len(unused) > 1), ", ".join(unused))
    keys = _per_split(path, arrays, named, "y", "labels")
    return {k: torch.from_numpy(whole_labels(arrays[keys[k]], len(a), f"{path} [{keys[k]}]", f"[{k}]"))
            for k, a in named.items() if keys}


def _split_factors(path: Path, arrays: dict[str, np.ndarray], named: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """The factors of splits given as arrays (factors_train, factors_test, factors_val or factors_valid), one for
    each split or none, with one number of factors; float64 in every split where any holds values, not indices."""
    keys = _per_split(path, arrays, named, "factors", "factors")
    f = {k: _factors(path, arrays[keys[k]], len(a), k, keys[k]) for k, a in named.items() if keys}
    widths = {k: v.shape[1] for k, v in f.items()}
    if len(set(widths.values())) > 1:
        raise VaekitError(f"{path}: the splits' factors differ in number: "
                          + ", ".join(f"{keys[k]} {w}" for k, w in widths.items()))
    real = any(v.dtype == np.float64 for v in f.values())
    return {k: torch.from_numpy(v.astype(np.float64) if real else v) for k, v in f.items()}


def _stored_scale(path: Path, dtypes: dict[str, np.dtype], source: str) -> tuple[float, str]:
    """(scale, what it is based on) from the source and the splits' stored dtypes; splits that would
    need different scales (uint8 beside others) are refused."""
    eight = [k for k, d in dtypes.items() if d == np.uint8]
    if eight and len(eight) < len(dtypes):
        listed = ", ".join(f"{k} {d}" for k, d in dtypes.items())
        raise VaekitError(f"{path}: the splits mix uint8 with other dtypes ({listed}); uint8 is divided by 255 and "
                          "other dtypes are used as given, so save every split with one dtype")
    dtype = dtypes["train"]
    if source == "csv":
        return 1.0, "a CSV's numbers"
    if source == "images":
        return (SIXTEEN_BIT, "16-bit images") if dtype == np.uint16 else (255.0, "8-bit images")
    return (255.0, "uint8 arrays: 8-bit data") if eight else (1.0, f"{dtype} arrays")


def _hold_out_test(path: Path, arrays: dict[str, np.ndarray], seed: int,
                   mmap: bool) -> tuple[dict[str, np.ndarray], dict[str, Tensor], dict[str, Tensor]]:
    """({"train", "test"} arrays, their labels, their factors) from one array: a seeded 10% test, or the
    last 10% of a memory map (a random subset would copy it into memory, so a memory map keeps neither)."""
    key = "x" if "x" in arrays else next(iter(arrays), None)
    if key is None:
        raise VaekitError(f"{path}: the archive holds no arrays")
    if key != "x" and len(arrays) > 1:  # which one is the data? never guess
        raise VaekitError(f"{path}: holds the arrays {', '.join(sorted(arrays))}; expected 'x' (optionally with "
                          "labels 'y'), or 'train' and 'test' (optionally 'val')")
    x = arrays[key]
    as_examples(x, f"{path} [{key}]")  # dtype and rank first: len() of a 0-d array would fail
    n = len(x)
    if n == 0:
        raise VaekitError(f"{path}: the dataset is empty")
    if n < MIN_TEST + 2:
        raise VaekitError(f"{path}: need at least {MIN_TEST + 2} examples to split into train, val and test, got {n}")
    n_test = max(MIN_TEST, n // 10)
    if mmap:
        return {"train": x[: n - n_test], "test": x[n - n_test :]}, {}, {}
    test_idx, rest = seeded_split(n, n_test, seed)
    y = None if key == "y" else _labels(path, arrays.get("y"), n, key)
    labels = {} if y is None else {"train": torch.from_numpy(y[rest]), "test": torch.from_numpy(y[test_idx])}
    f = _factors(path, arrays.get("factors"), n, key)
    factors = {} if f is None else {"train": torch.from_numpy(f[rest]), "test": torch.from_numpy(f[test_idx])}
    return {"train": x[rest], "test": x[test_idx]}, labels, factors


def _factor_names(path: Path, names: np.ndarray | None, n_factors: int) -> tuple[str, ...]:
    """The array "factor_names" (strings, one per factor column), or factor1, factor2, …"""
    if names is None:
        return tuple(f"factor{j + 1}" for j in range(n_factors))
    if names.dtype.kind != "U" or names.shape != (n_factors,):
        raise VaekitError(f"{path} [factor_names]: expected {n_factors} strings, one per column of [factors]; got "
                          f"{names.dtype} of shape {tuple(names.shape)}")
    return tuple(str(n) for n in names)


def _factors(path: Path, f: np.ndarray | None, n: int, key: str, name: str = "factors") -> np.ndarray | None:
    """The array "factors" [n, F] (whole numbers: int64 indices; else float64 values), finite, one row per
    example of `key`: the ground truth the disentanglement metrics score codes against."""
    if f is None:
        return None
    if f.dtype.kind not in "buif" or f.ndim != 2 or len(f) != n or f.shape[1] < 1:
        raise VaekitError(f"{path} [{name}]: expected numbers of shape ({n}, F), one row per example of [{key}]; "
                          f"got {f.dtype} of shape {tuple(f.shape)}")
    if f.dtype.kind == "f" and not np.isfinite(f).all():
        raise VaekitError(f"{path} [{name}]: holds NaN or Inf")
    return f.astype(np.int64) if f.dtype.kind in "bui" else f.astype(np.float64)


def _labels(path: Path, y: np.ndarray | None, n: int, key: str) -> np.ndarray | None:
    """The array "y" as int64 [n] labels of the n examples of `key`; refused unless one whole number each."""
    return None if y is None else whole_labels(y, n, f"{path} [y]", f"[{key}]")


def whole_labels(y: np.ndarray, n: int, where: str, examples: str) -> np.ndarray:
    """y as int64 [n] labels, one whole number ≥ 0 for each of the n `examples`; refused in one line naming `where`."""
    if y.dtype.kind not in "buif":
        raise VaekitError(f"{where}: labels must be whole numbers, one per example; got dtype {y.dtype}")
    if y.ndim != 1 or len(y) != n:
        raise VaekitError(f"{where}: {tuple(y.shape)} labels for the {n} examples of {examples}; "
                          f"give one label per example, shape ({n},)")
    if y.dtype.kind == "f" and not bool((np.isfinite(y) & (y == np.round(y))).all()):
        first = int(np.flatnonzero(~(np.isfinite(y) & (y == np.round(y))))[0])
        raise VaekitError(f"{where}: labels must be whole numbers; the label of example {first} is {y[first]}")
    out_of_range = (y < 0) | (y >= MAX_CLASSES) if len(y) else np.zeros(0, bool)
    if out_of_range.any():  # checked before the cast: 1e20 would wrap to −2⁶³, 10¹² would ask for 10¹² classes
        first = int(np.flatnonzero(out_of_range)[0])
        raise VaekitError(f"{where}: labels are class indices 0…{MAX_CLASSES - 1} (0…{MAX_CONDITION_CLASSES - 1} for a "
                          f"conditional VAE); the label of example {first} is {y[first]:g}")
    return y.astype(np.int64)


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


def to_tensor(a: np.ndarray, keep: bool = False) -> Tensor:
    """Share memory where possible; uint8 stays uint8, other dtypes become float32, unless `keep` (a
    memory map): then any dtype torch computes with stays as stored (on disk, not copied)."""
    if a.dtype != np.uint8 and a.dtype != np.float32 and not (keep and a.dtype in _MAPPABLE):
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become ±inf: check_values names them
            a = a.astype(np.float32)
    return torch.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))


def read_numpy(path: Path, mmap: bool) -> dict[str, np.ndarray]:
    """A .npy as {"x": array} (memory-mapped if `mmap`) or a .npz's arrays by name; no pickles."""
    if mmap and path.suffix != ".npy":
        raise VaekitError(f"{path}: memory mapping needs a .npy file")
    if path.suffix == ".npz":
        check_zip_members(path, path)
    claimed = npy_holds_its_header(path)
    try:
        if not mmap and claimed > physical_memory():  # the kernel would kill the process, said by no line
            raise MemoryError
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        # mode "c" (copy-on-write) maps the file lazily and gives torch a writable buffer
        return {"x": np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise VaekitError(f"{path}: cannot read as {path.suffix} ({e})") from None
    except MemoryError:  # the data alone: no smaller batch or network helps
        mapped = "; a .npy is read as it is used with --mmap" if path.suffix == ".npy" else \
            "; saved as a .npy it is read as it is used with --mmap"
        raise VaekitError(f"{path}: its arrays' {claimed:,} bytes do not fit in this process's memory{mapped}") \
            from None


def npy_holds_its_header(path: Path, data: bytes | None = None) -> int:
    """A .npy's header states its shape: one claiming more values than the file holds (a 100-byte file claiming 35
    PiB) is refused before numpy asks for that memory (which ended in "out of memory … a smaller --batch-size");
    likewise each array of a .npz against its member's size. `data`: the file's bytes, where they were read whole.
    Returns the bytes its arrays claim (0 where a header is not read: np.load says why)."""
    if path.suffix.lower() == ".npz":
        try:
            with zipfile.ZipFile(io.BytesIO(data) if data is not None else path) as z:
                claimed = 0
                for info in z.infolist():
                    with z.open(info) as f:
                        claimed += _header_fits(f, info.file_size, f"{path} [{info.filename.removesuffix('.npy')}]",
                                                "the member")
                return claimed
        except (OSError, zipfile.BadZipFile, EOFError):
            return 0  # np.load says what is wrong in its own words
    if data is not None:
        return _header_fits(io.BytesIO(data), len(data), str(path), "the file")
    with open(path, "rb") as f:
        return _header_fits(f, path.stat().st_size, str(path), "the file")


def _header_fits(f: Any, size: int, name: str, holder: str) -> int:
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version == (3, 0):  # 2.0's layout with a UTF-8 header; numpy has no public reader of it
            length = int.from_bytes(f.read(4), "little")
            header = ast.literal_eval(f.read(min(length, 10_000)).decode("utf-8")) if length <= 10_000 else None
            shape, dtype = tuple(header["shape"]), np.lib.format.descr_to_dtype(header["descr"])
        elif version in read:
            shape, _, dtype = read[version](f, max_header_size=10_000)
        else:
            return 0  # np.load refuses other versions before it allocates anything
        start = f.tell()
    except (ValueError, OSError, EOFError, AttributeError, TypeError, SyntaxError, KeyError, UnicodeDecodeError,
            MemoryError, RecursionError):
        return 0  # np.load says what is wrong with the header in its own words
    if dtype.hasobject:
        return 0  # np.load refuses pickled objects in its own words
    claimed, held = math.prod(shape) * dtype.itemsize, size - start
    if claimed > held:
        raise VaekitError(f"{name}: its header claims an array of shape {tuple(shape)} ({claimed:,} bytes), but "
                          f"{holder} holds {held:,} bytes after it; the file is cut short or damaged")
    return claimed


LABEL_COLUMNS = ("label", "y")  # a CSV header's names for the column of labels (case and quotes aside)


def number(text: str) -> float:
    """A CSV cell as a number, as a CSV reader reads one: Python's float, less its underscores ("1_0" is not 10)."""
    if "_" in text:
        raise ValueError(f"could not convert string to float: {text!r}")
    return float(text)


def is_header(cells: list[str], path: Path | None = None, following: list[str] | None = None) -> bool:
    """Whether a CSV's first row names its columns: a cell that is not a number, or pandas' default names 0, 1, …,
    D − 1 (what `DataFrame.to_csv(index=False)` writes for unnamed columns) above a row of numbers that are not all
    whole (binary data may well start with a row 0, 1: read as data then, with a warning)."""
    cells = [c.strip().strip("\"'") for c in cells]
    if cells == [str(i) for i in range(len(cells))]:
        shown = ",".join(cells[:4]) + (",…" if len(cells) > 4 else "")
        if following is not None and not all(WHOLE.fullmatch(c.strip().strip("\"'")) for c in following):
            log.warning("%s: the first row %s is read as column names (pandas' defaults), not as data; if it is data, "
                        "write a header row of names", path or "the CSV", shown)
            return True
        log.warning("%s: the first row %s is read as data; if it is pandas' column names, write the file with "
                    "header=False or name the columns", path or "the CSV", shown)
        return False
    try:
        [number(c) for c in cells]
    except ValueError:
        return True
    return False


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Numbers separated by commas, one example a row: {"x": float32 [N, D]} (the numbers as written),
    with {"y": labels [N]} where a header names a column `label` or `y` (it leaves x). A first row that
    is not numeric, or is pandas' default names 0, 1, …, is a header (`is_header`). UTF-8 text; a byte-order mark (BOM) is skipped, not read as data."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            first, second = f.readline(), f.readline()
        header = is_header(first.split(","), path, second.split(",") if second.strip() else None)
        skip, names = (1, [v.strip().strip("\"'").lower() for v in first.split(",")]) if header else (0, [])
        with warnings.catch_warnings():  # a header and no rows: numpy warns, the empty dataset is refused below
            warnings.simplefilter("ignore", UserWarning)
            arr = np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2, encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise VaekitError(_not_utf8(path, e)) from None
    except ValueError as e:
        raise VaekitError(f"{path}: not a numeric CSV ({e}); a table with text or missing cells takes --likelihood mixed"
                          ) from None
    if not np.isfinite(arr).all():  # named by its line here: after the seeded split only its shuffled index is known
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise VaekitError(f"{path}: line {_data_lines(path, skip)[row]} holds NaN or Inf; a table with missing cells "
                          "takes --likelihood mixed")
    label = [i for i, name in enumerate(names) if name in LABEL_COLUMNS]
    if len(label) > 1:
        raise VaekitError(f"{path}: the header names {len(label)} label columns ({', '.join(names[i] for i in label)}); "
                          "keep one")
    if label and arr.shape[1] != len(names):
        raise VaekitError(f"{path}: the header has {len(names)} columns, the rows {arr.shape[1]}")
    with np.errstate(over="ignore"):  # beyond float32: ±inf, named by check_values
        if not label:
            return {"x": arr.astype(np.float32)}
        return {"x": np.delete(arr, label[0], axis=1).astype(np.float32), "y": arr[:, label[0]]}


def _data_lines(path: Path, skip: int) -> list[int]:
    """The file's line numbers (from 1) of the rows np.loadtxt read: those after the header that are not blank."""
    with open(path, encoding="utf-8-sig") as f:
        return [i for i, line in enumerate(f, 1) if i > skip and line.strip()]


def _not_utf8(path: Path, e: UnicodeDecodeError) -> str:
    """Where the first byte that is not UTF-8 is: its line and value (e.start counts from a chunk, not the file)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        return f"{path}: not UTF-8 text ({e.reason}); save it as UTF-8"
    except UnicodeDecodeError as whole:
        line = raw.count(b"\n", 0, whole.start) + 1
        return f"{path}: line {line} is not UTF-8 text (byte 0x{raw[whole.start]:02x}); save the CSV as UTF-8"
