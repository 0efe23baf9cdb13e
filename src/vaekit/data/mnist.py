"""MNIST, Fashion-MNIST, binarized MNIST and Frey faces from their published files, checked byte for byte.

The data root (see `data_root`) holds one folder per dataset, files named as published:
  mnist/, fashion-mnist/: {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   (IDX inside gzip)
  binarized_mnist/:       binarized_mnist_{train,valid,test}.amat[.gz]      (784 "0"/"1" a line)
  frey_faces/:            frey_faces.npy                                   (uint8 [1965, 560], no download)
Every file is MD5-checked against the published checksum before it is parsed, so a result reported
"on MNIST" is on MNIST and not on a truncated download. Pixels stay uint8 [N, 784] in memory (47 MB
for MNIST train instead of 188 MB as float32); `scale` says how to map them to [0, 1].
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import stat
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import VaekitError
from ..files import kind_of

DATASETS = ("mnist", "fashion-mnist", "binarized-mnist")
SHAPE = (1, 28, 28)
PIXELS = 784

_FOLDERS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "binarized-mnist": "binarized_mnist"}
_MIRRORS = {  # tried in order; a file's URL is mirror + file name
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "binarized-mnist": ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",),
}
_IDX_FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_AMAT_SPLITS = {"train": "train", "val": "valid", "test": "test"}  # our split -> the file's word

# Published MD5s, keyed "folder/file". A .gz is checked as the .gz (the official archives for
# MNIST/Fashion); a plain .amat as text (Larochelle's originals, which his mirror serves uncompressed).
_MD5 = {
    "mnist/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "mnist/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "mnist/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "mnist/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "fashion-mnist/train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "fashion-mnist/train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "fashion-mnist/t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "fashion-mnist/t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    "binarized_mnist/binarized_mnist_train.amat.gz": "55c6be0db63f47a228822edc21049d6f",
    "binarized_mnist/binarized_mnist_valid.amat.gz": "bf325c5893052cb8b540dfeb3c0c6fbe",
    "binarized_mnist/binarized_mnist_test.amat.gz": "f7f18e7c5d551792f6aab10d62a7ea74",
    "binarized_mnist/binarized_mnist_train.amat": "db28b1a6ae0fe70cbd3da91acf46e477",
    "binarized_mnist/binarized_mnist_valid.amat": "bf37822a04e94123630de6a7dfd9c9ef",
    "binarized_mnist/binarized_mnist_test.amat": "14e41ae11040adba6ab8cb291eda0dd8",
    "frey_faces/frey_faces.npy": "ba92189c966bec4ac7b48dd0f55cb805",
}
_REDOWNLOAD = "delete it and download it again"

# (resolved path, mtime_ns, size, expected md5) of files already hashed: hashing 30 MB on every load
# would cost more than parsing; a rewritten file changes mtime or size and is hashed again.
_verified: set[tuple[str, int, int, str]] = set()


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the dataset folders: `data_dir` if given, else $VAEKIT_DATA, else the user
    cache ($XDG_CACHE_HOME/vaekit or ~/.cache/vaekit)."""
    if data_dir:
        root, what = Path(data_dir).expanduser(), "--data-dir"
    elif os.environ.get("VAEKIT_DATA"):
        root, what = Path(os.environ["VAEKIT_DATA"]).expanduser(), "$VAEKIT_DATA"
    else:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "vaekit"
    try:
        mode = root.stat().st_mode
    except OSError:  # not there (yet): a download makes it
        return root
    if not stat.S_ISDIR(mode):  # a file, /dev/null, a FIFO: no dataset folder can be put in it
        raise VaekitError(f"{what} {root}: not a folder ({kind_of(mode) if not stat.S_ISREG(mode) else 'a file'})")
    return root


def load_mnist_family(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> dict:
    """Load one of DATASETS, downloading missing files when `download` (and a network) allow.

    Returns {"shape": (1, 28, 28), "splits": {split: uint8 [N, 784]}, "labels": {split: int64 [N]},
    "scale": 255.0 | 1.0}. mnist/fashion-mnist: train 60000, test 10000, labels 0..9, pixels 0..255.
    binarized-mnist: train 50000, val 10000, test 10000, pixels 0/1, no labels (labels == {}).
    """
    if name not in DATASETS:
        raise VaekitError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    folder = data_root(data_dir) / _FOLDERS[name]
    files = _split_files(name, folder)
    paths = [p for ps in files.values() for p in ps]
    _ensure_present(name, paths, download)
    for path in paths:
        _verify(path)
    if name == "binarized-mnist":
        splits = {split: torch.from_numpy(read_amat(path)) for split, (path,) in files.items()}
        return {"shape": SHAPE, "splits": splits, "labels": {}, "scale": 1.0}
    splits, labels = {}, {}
    for split, (image_path, label_path) in files.items():
        images, targets = read_idx(image_path, ndim=3), read_idx(label_path, ndim=1)
        if images.shape[1:] != SHAPE[1:] or len(targets) != len(images):
            raise VaekitError(
                f"{image_path}: images {images.shape} do not match labels {targets.shape} of {label_path}"
            )
        splits[split] = torch.from_numpy(images.reshape(len(images), PIXELS))
        labels[split] = torch.from_numpy(targets.astype(np.int64))
    return {"shape": SHAPE, "splits": splits, "labels": labels, "scale": 255.0}


def _split_files(name: str, folder: Path) -> dict[str, tuple[Path, ...]]:
    """split -> the files it is read from. A binarized split takes its .amat.gz if present, else the
    plain .amat (what Larochelle's mirror serves, so also what a download writes)."""
    if name != "binarized-mnist":
        return {split: tuple(folder / f for f in names) for split, names in _IDX_FILES.items()}
    files = {}
    for split, word in _AMAT_SPLITS.items():
        gz = folder / f"binarized_mnist_{word}.amat.gz"
        files[split] = (gz if gz.is_file() else gz.with_suffix(""),)
    return files


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _md5(path: Path) -> str:
    with open(path, "rb") as f:  # usedforsecurity=False: MD5 is a checksum here, and FIPS builds allow that
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def _verify(path: Path, fix: str = _REDOWNLOAD) -> None:
    """Raise VaekitError unless `path` has its published MD5 (`fix` says what to do); hashes each file
    once per process."""
    expected = _MD5[_key(path)]
    st = path.stat()
    tag = (str(path.resolve()), st.st_mtime_ns, st.st_size, expected)
    if tag in _verified:
        return
    actual = _md5(path)
    if actual != expected:
        raise VaekitError(
            f"{path}: md5 {actual} differs from the published md5 {expected}; the file is corrupt or "
            f"incomplete: {fix}"
        )
    _verified.add(tag)


def _fetch(url: str, dest: Path) -> None:
    """Write the body of `url` to the file `dest`. Module-level so tests replace it: no test touches the network."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _download(urls: list[str], dest: Path) -> bool:
    """Fetch `dest` from the first of `urls` that works: True if saved, False if none was reachable.

    Each try writes a temp file beside `dest`, checks its MD5, then renames it (atomic within a folder),
    so an interrupted or wrong download never leaves a file that looks complete."""
    expected, wrong = _MD5[_key(dest)], None
    for url in urls:
        tmp = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            os.close(fd)
            _fetch(url, Path(tmp))
            actual = _md5(Path(tmp))
            if actual == expected:
                os.replace(tmp, dest)
                st = dest.stat()
                _verified.add((str(dest.resolve()), st.st_mtime_ns, st.st_size, expected))
                return True
            wrong = f"{url}: downloaded md5 {actual} differs from the published md5 {expected}; not saved as {dest}"
        except (OSError, http.client.HTTPException):  # unreachable, HTTP error, cut off, unwritable folder
            continue
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    if wrong:  # a mirror answered with the wrong bytes: say so rather than "offline"
        raise VaekitError(wrong)
    return False


def _ensure_present(name: str, paths: list[Path], download: bool) -> None:
    """Download missing files if allowed; raise one VaekitError naming all still missing, their URLs and folder.

    Folders a download creates (the dataset's, the data root) are removed again if they end up empty:
    a failed download leaves the disk as it found it."""
    missing = [p for p in paths if not p.is_file()]
    mirrors = _MIRRORS[name]
    if missing and download:
        folder = missing[0].parent
        created = [f for f in (folder, *folder.parents) if not f.exists()]  # innermost first
        try:
            for i, path in enumerate(missing):
                if not _download([m + path.name for m in mirrors], path):
                    missing = missing[i:]  # every mirror failed (offline?): the rest would only time out too
                    break
            else:
                missing = []
        finally:
            for f in created:  # a saved file keeps its folder (and so the folders above it)
                if not f.is_dir() or any(f.iterdir()):
                    break
                f.rmdir()
    if not missing:
        return
    urls = ", ".join(mirrors[0] + p.name for p in missing)
    also = f" (or the same names under {', '.join(mirrors[1:])})" if len(mirrors) > 1 else ""
    why = "could not download them" if download else "download=False"
    names = ", ".join(p.name for p in missing)
    raise VaekitError(f"{name}: missing {names} ({why}); fetch {urls}{also} and put them in {paths[0].parent}")


FREY_SHAPE = (1965, 560)  # 1965 images of 28 rows × 20 columns, row-major
_FREY_SOURCE = (
    "it has no download: it is Sam Roweis's frey_rawface.mat (also freyfaces.pkl in GitHub "
    "jmtomczak/vae_vampprior), saved as a uint8 array [1965, 560] with np.save(..., allow_pickle=False)"
)


def read_frey_faces(data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Brendan Frey's faces (the real-valued data of Kingma & Welling 2013, Fig. 2) from
    `data_root(data_dir)/frey_faces/frey_faces.npy`, MD5-checked: uint8 [1965, 560], grey levels 8..238."""
    path = data_root(data_dir) / "frey_faces" / "frey_faces.npy"
    if not path.is_file():
        raise VaekitError(f"frey-faces: missing {path}; {_FREY_SOURCE}; or point --data-dir (or $VAEKIT_DATA) at the "
                          "folder that holds frey_faces/")
    _verify(path, fix=f"replace it with a good copy ({_FREY_SOURCE})")
    x = np.load(path, allow_pickle=False)
    if x.dtype != np.uint8 or x.shape != FREY_SHAPE:  # cannot happen with the right MD5: a guard for edits above
        raise VaekitError(f"{path}: expected uint8 {list(FREY_SHAPE)}, found {x.dtype} {list(x.shape)}")
    return x


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes -> uint8 array of the header's dims: [N, 28, 28] for
    images (ndim=3, magic 0x00000803), [N] for labels (ndim=1, magic 0x00000801).

    Checks the magic number and that the payload is exactly the size the header promises."""
    path = Path(path)
    with open(path, "rb") as raw:  # opened outside the try: a missing file is not a corrupt one
        try:
            with gzip.open(raw, "rb") as f:
                head = f.read(4 + 4 * ndim)
                if len(head) < 4 + 4 * ndim:
                    raise VaekitError(f"{path}: truncated IDX header ({len(head)} bytes, expected {4 + 4 * ndim})")
                magic, *dims = np.frombuffer(head, ">u4").tolist()  # IDX integers are big-endian
                if magic != 0x800 | ndim:  # 0x08 = unsigned byte, then the number of dimensions
                    raise VaekitError(f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{0x800 | ndim:08x}")
                out = np.empty(dims, np.uint8)  # read straight into a writable array: no copy, no torch warning
                got = _read_into(f, memoryview(out.reshape(-1)))
                if got < out.size:
                    raise VaekitError(
                        f"{path}: truncated IDX data: header {dims} promises {out.size} bytes, file has {got}"
                    )
                if f.read(1):
                    raise VaekitError(f"{path}: IDX file has bytes after the {out.size} its header {dims} promises")
        except (OSError, EOFError, zlib.error) as exc:  # bad gzip header, cut-off stream, bad CRC
            raise VaekitError(f"{path}: corrupt or truncated gzip ({exc}); delete it and download it again") from None
    return out


def _read_into(f, view: memoryview) -> int:
    """Fill `view` from `f` until full or end of file; returns the bytes read (readinto may stop short)."""
    n = k = 0
    while n < len(view) and (k := f.readinto(view[n:])):
        n += k
    return n


_LINE = 2 * PIXELS  # "d d ... d\n": 784 digits, each followed by one byte (a space, the last by "\n")


def read_amat(path: str | os.PathLike) -> np.ndarray:
    """A binarized-MNIST .amat or .amat.gz -> uint8 [N, 784] of 0/1.

    Every line must be 784 "0"/"1" separated by single spaces and end in "\\n"; else VaekitError
    naming the first bad line. Vectorised (digits are the even bytes): parsing 78 MB of text with
    split() would take seconds."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise VaekitError(f"{path}: corrupt or truncated gzip ({exc}); delete it and download it again") from None
    buf = np.frombuffer(raw, np.uint8)
    if buf.size == 0:
        raise VaekitError(f"{path}: empty .amat file")
    if buf.size % _LINE:  # some line has the wrong length: find the first
        ends = np.flatnonzero(buf == ord("\n"))
        bad = np.flatnonzero(np.diff(ends, prepend=-1) != _LINE)
        line = int(bad[0]) + 1 if bad.size else len(ends) + 1  # no bad line: the last one lacks "\n"
    else:
        rows = buf.reshape(-1, _LINE)
        bits = rows[:, 0::2] - ord("0")  # uint8 wraps below '0', so one test <= 1 checks both ends
        seps = rows[:, 1::2]
        ok = (bits <= 1).all(axis=1) & (seps[:, :-1] == ord(" ")).all(axis=1) & (seps[:, -1] == ord("\n"))
        if ok.all():
            return bits
        line = int(np.flatnonzero(~ok)[0]) + 1
    raise VaekitError(f"{path}: line {line} is not {PIXELS} values '0'/'1' separated by single spaces")
