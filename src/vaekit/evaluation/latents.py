"""Latents out and back in: Q(z|x)'s mean and standard deviation for every example, written as
.npy, .npz or .csv for downstream use (`vaekit encode`), and latents read back to decode (`vaekit decode`).

File layouts (the same columns in each):
- .npz: `mean` [N, k], `std` [N, k], and `labels` [N] where the data have them;
- .npy: one float32 array [N, 2k], the k means then the k standard deviations;
- .csv: a header `z1_mean, …, zk_mean, z1_std, …, zk_std[, label]` and one row per example.
`read_latents` takes any of them (and a bare [N, k] array of z) and returns the means [N, k];
`read_labels` the labels, where the file has them.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.files import is_header, npy_holds_its_header, number
from ..errors import VaekitError
from ..files import atomic_write, check_zip_members, read_capped, write_array
from ..parts.distributions import mean_of
from ..training.progress import Progress

FORMATS = (".npy", ".npz", ".csv")
MC_SAMPLES = 256  # draws for a standard deviation torch has no closed form for (a flow's Q)
MAX_LATENTS_BYTES = 1 << 30  # read whole: 2^27 float32 rows of k = 2, far beyond a decode; larger files are refused unread


@torch.no_grad()
def posterior_summary(model, x: Tensor, batch_size: int = 1000, seed: int = 0,
                      y: Tensor | None = None, progress: bool = False) -> tuple[Tensor, Tensor]:
    """(mean, std) of Q(z|x) for every row of x, each [N, k]: closed forms where torch has them, else
    Monte Carlo over `MC_SAMPLES` draws from a generator seeded by `seed` (the caller's RNG untouched).
    y: the labels of x, for a conditional VAE's Q(z|x, y). `progress`: a bar (or lines) over the examples."""
    means, stds = [], []
    with torch.random.fork_rng(devices=[]), Progress(x.shape[0], "encoding", enabled=progress) as bar:
        torch.manual_seed(seed)
        labels = y.split(batch_size) if y is not None else [None] * len(x.split(batch_size))
        for xb, yb in zip(x.split(batch_size), labels):
            q = (model.given(yb) if yb is not None else model).encode(xb, distribution=True)
            means.append(mean_of(q, MC_SAMPLES))
            try:
                stds.append(q.stddev)
            except NotImplementedError:
                stds.append(q.sample((MC_SAMPLES,)).std(0))
            bar.update(xb.shape[0])
    return torch.cat(means), torch.cat(stds)


def write_latents(path: Path, mean: Tensor, std: Tensor, labels: Tensor | None = None) -> Path:
    """Write the posterior summary in the format `path`'s suffix names (see the module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    mean_np, std_np = mean.cpu().float().numpy(), std.cpu().float().numpy()
    if suffix == ".npy":
        write_array(path, np.concatenate([mean_np, std_np], axis=1))
    elif suffix == ".npz":
        arrays = {"mean": mean_np, "std": std_np, **({"labels": labels.cpu().numpy()} if labels is not None else {})}

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(path, write)
    elif suffix == ".csv":
        k = mean_np.shape[1]
        header = [f"z{j + 1}_mean" for j in range(k)] + [f"z{j + 1}_std" for j in range(k)]
        header += ["label"] if labels is not None else []
        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        w.writerow(header)
        for i in range(mean_np.shape[0]):
            row = [repr(float(v)) for v in mean_np[i]] + [repr(float(v)) for v in std_np[i]]
            w.writerow(row + ([int(labels[i])] if labels is not None else []))
        atomic_write(path, lambda tmp: Path(tmp).write_text(text.getvalue()))
    else:
        raise VaekitError(f"{path}: latents are written as {', '.join(FORMATS)}; name a file with one of those suffixes")
    return path


def read_latents(path: Path, latent_dim: int) -> Tensor:
    """The latent means [N, k] in a file `write_latents` wrote, or a bare [N, k] array of z (.npy, .csv): a regular
    file of at most MAX_LATENTS_BYTES (a FIFO would block, /dev/zero or a sparse file never end), real numbers
    finite in float32, at least one row."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise VaekitError(f"{path}: latents are read from {', '.join(FORMATS)}")
    try:
        data = read_capped(path, MAX_LATENTS_BYTES)
        if suffix in (".npz", ".npy"):  # a header claiming more than the file holds: said, not allocated
            npy_holds_its_header(path, data)
        if suffix == ".npz":
            check_zip_members(data, path, MAX_LATENTS_BYTES)
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                key = next((k for k in ("mean", "z") if k in f.files), None)
                if key is None:
                    raise VaekitError(f"{path}: holds {', '.join(f.files) or 'no arrays'}; expected 'mean' or 'z'")
                z = f[key]
        elif suffix == ".npy":
            z = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            rows = list(csv.reader(data.decode("utf-8-sig").splitlines()))
            header = rows[0] if rows and is_header(rows[0], path, rows[1] if len(rows) > 1 else None) else None
            body = [r for r in (rows[1:] if header else rows) if r]
            width = len(header) if header else len(body[0]) if body else 0
            short = next((i for i, r in enumerate(rows) if r and len(r) != width), None)
            if short is not None:
                raise VaekitError(f"{path}: line {short + 1} has {len(rows[short])} cells, but line "
                                  f"{1 if header else rows.index(body[0]) + 1} has {width}; give every row as many")
            if not body:
                raise VaekitError(f"{path}: no latents (0 rows); decode needs at least one")
            columns = ([i for i, name in enumerate(header) if name.endswith("_mean")]  # write_latents's layout
                       or [i for i, name in enumerate(header) if name.strip() != "label"]) if header else None
            z = np.array([[number(r[i]) for i in (columns or range(len(r)))] for r in body], dtype=np.float64)
    except (OSError, ValueError, IndexError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, VaekitError):
            raise
        raise VaekitError(f"{path}: cannot read latents ({_said(e)})") from None
    z = np.asarray(z)
    if z.dtype.kind not in "iuf":  # complex: the imaginary part would be dropped; bool, strings, objects: no z
        raise VaekitError(f"{path}: latents must be real numbers (integer or floating point), got dtype {z.dtype}")
    if z.ndim == 2 and z.shape[1] == 2 * latent_dim:
        z = z[:, :latent_dim]  # the .npy layout: means, then standard deviations
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise VaekitError(f"{path}: expected latents of shape [N, {latent_dim}] (or [N, {2 * latent_dim}]: means and "
                          f"standard deviations), got {list(z.shape)} of {z.dtype}")
    if z.shape[0] == 0:
        raise VaekitError(f"{path}: no latents (0 rows); decode needs at least one")
    if not np.isfinite(z).all():
        raise VaekitError(f"{path}: the latents hold NaN or Inf")
    with np.errstate(over="ignore"):
        z32 = z.astype(np.float32)
    if not np.isfinite(z32).all():  # finite as stored (float64), ±inf in the model's float32
        row, col = (int(i[0]) for i in np.nonzero(~np.isfinite(z32)))
        raise VaekitError(f"{path}: row {row + 1}, z{col + 1} = {z[row, col]:g} is beyond float32's range "
                          f"(±{np.finfo(np.float32).max:.3g}), what the model computes in")
    return torch.from_numpy(z32)


def read_labels(path: Path) -> Tensor | None:
    """The labels stored beside the latents (`labels` of an .npz, the `label` column of a .csv, as
    `write_latents` writes them), int64 [N], or None. What a conditional VAE decodes with."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npz":
            data = read_capped(path, MAX_LATENTS_BYTES)
            npy_holds_its_header(path, data)
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                y = f["labels"] if "labels" in f.files else None
        elif path.suffix.lower() == ".csv":
            rows = list(csv.reader(read_capped(path, MAX_LATENTS_BYTES).decode("utf-8-sig").splitlines()))
            if not rows or "label" not in rows[0]:
                return None
            column = rows[0].index("label")
            y = np.array([number(r[column]) for r in rows[1:] if r])
        else:
            return None
    except (OSError, ValueError, IndexError, EOFError, zipfile.BadZipFile) as e:
        raise VaekitError(f"{path}: cannot read labels ({_said(e)})") from None
    if y is None:
        return None
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
        raise VaekitError(f"{path}: labels must be whole numbers, one per row; got {list(y.shape)} of {y.dtype}")
    return torch.from_numpy(y.astype(np.int64))


def _said(e: BaseException) -> str:
    """An exception's first line, or its kind when it says nothing (an IndexError of a short CSV row)."""
    text = str(e).splitlines()
    return f"{type(e).__name__}: {text[0]}" if text and isinstance(e, IndexError) else text[0] if text else \
        type(e).__name__

