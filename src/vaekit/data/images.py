"""A folder of PNG/JPEG images as one array: 8-bit grey or colour, or 16-bit grey kept at full depth.

Pillow, needed for image folders only, is an optional dependency (`pip install pillow`), imported when
a folder is read. Every image's claimed size is checked against MAX_PIXELS before it is decoded (a
PNG's header first, before Pillow sees it), so a small file claiming 30000 × 30000 pixels (a
decompression bomb) is refused instead of filling memory. Transparency is not a channel of the data:
an image with any pixel not fully opaque has its alpha dropped, with a warning naming the file.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import VaekitError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MAX_PIXELS = 1 << 24  # 4096 × 4096 per image: far beyond any one VAE example; Pillow's own limit is 89M
SIXTEEN_BIT = 65535.0  # the scale of 16-bit images (Pillow modes I;16*, I): 65535 is white
_PNG = b"\x89PNG\r\n\x1a\n"


def folder_files(folder: Path, links: list[Path] | None = None) -> Iterator[Path]:
    """The files of a data folder, in no order: each regular file (or link to one) under it, none hidden: no name on
    its way starting with "." (.DS_Store, a .git/ folder, Jupyter's .ipynb_checkpoints/ copies, which would be
    duplicate examples). A link to a folder is not followed (it may lead anywhere: `/`, or back up), but put in
    `links`, for the reader to say. The one listing the reader, the data's digest and its size share. An unreadable
    folder raises OSError. Walked with a stack, not recursion: folders nested thousands deep are listed, not a
    RecursionError."""
    stack = [os.fspath(folder)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_symlink() and entry.is_dir():
                    if links is not None:
                        links.append(Path(entry.path))
                elif entry.is_file():  # a link to a file counts, as a file
                    yield Path(entry.path)


def read_image_folder(folder: Path) -> np.ndarray:
    """All images under `folder` (sorted by path) → [N, H, W] (grey) or [N, 3, H, W] (colour): uint8
    for 8-bit images, uint16 for 16-bit grey PNGs (every level kept; their scale is SIXTEEN_BIT).

    Every file must be an image of the same size, colour mode and bit depth; the first that is not
    names itself."""
    try:  # imported here: Pillow is an optional dependency that only image folders need
        from PIL import Image  # noqa: F401
    except ImportError:
        raise VaekitError("reading an image folder needs Pillow: pip install pillow") from None
    try:
        links: list[Path] = []
        files = []
        for path in folder_files(folder, links):  # a non-image refused as it is met: a wrong folder of a million
            if path.suffix.lower() not in IMAGE_SUFFIXES:  # files is not listed whole first
                raise VaekitError(f"{path}: not a PNG or JPEG image (only images may be in {folder})")
            files.append(path)
        files.sort()
    except OSError as e:  # a folder that is not a dataset (unreadable entries, /proc): said, not raised
        raise VaekitError(f"{folder}: cannot list it as an image folder ({e.strerror}: {e.filename})") from None
    if links:
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        log.warning("%s%s: a link to a folder, not followed (it may lead anywhere); put the images themselves, or links "
                    "to the image files, in %s", min(links), more, folder)
    if not files:
        raise VaekitError(f"{folder}: the folder holds no files")
    images, first, transparent = [], None, []
    for path in files:
        arr, had_alpha = _read_image(path)
        if had_alpha:
            transparent.append(path)
        if first is None:
            first = (path, arr.shape, arr.dtype)
        elif arr.shape != first[1]:
            raise VaekitError(f"{path}: image shape {arr.shape} differs from {first[1]} of {first[0].name}; "
                              "all images must have one size and colour mode")
        elif arr.dtype != first[2]:
            raise VaekitError(f"{path}: a {_bits(arr.dtype)}-bit image, but {first[0].name} is {_bits(first[2])}-bit; "
                              "all images must have one bit depth")
        images.append(arr)
    if transparent:
        more = f" (and {len(transparent) - 1} more of {len(files)} images)" if len(transparent) > 1 else ""
        log.warning("%s%s: transparency (alpha) dropped; only the colour channels are data", transparent[0], more)
    stacked = np.stack(images)
    return stacked if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)


def _bits(dtype: np.dtype) -> int:
    return 8 * np.dtype(dtype).itemsize


def _read_image(path: Path) -> tuple[np.ndarray, bool]:
    """One image → (uint8 [H, W] or [H, W, 3], or uint16 [H, W] for 16-bit grey; whether a non-opaque
    alpha channel was dropped). The size is checked before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    _check_size(path, _png_size(path))
    try:
        with warnings.catch_warnings():  # Pillow warns above 89M pixels: refuse, do not decode
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            _check_size(path, im.size)
            if im.mode.startswith("I"):  # 16-bit grey (I;16, I;16B; I in older Pillow)
                return _sixteen_bit(path, np.asarray(im)), False
            alpha = ("A" in im.getbands() and im.getchannel("A").getextrema()[0] < 255) or "transparency" in im.info
            grey = im.mode in ("1", "L", "LA") or (im.mode in ("P", "PA") and _palette_is_grey(im))
            return np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8), alpha
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise VaekitError(f"{path}: refused before decoding ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:  # SyntaxError: Pillow's word for a broken header
        raise VaekitError(f"{path}: cannot read image ({e})") from None


def _png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk (bytes 16..24), or None when the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or not head.startswith(_PNG) or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _check_size(path: Path, size: tuple[int, int] | None) -> None:
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise VaekitError(f"{path}: the image claims {size[0]}×{size[1]} = {size[0] * size[1]:,} pixels, more than "
                          f"the {MAX_PIXELS:,} an image may have (a corrupt file or a decompression bomb); not decoded")


def _sixteen_bit(path: Path, arr: np.ndarray) -> np.ndarray:
    """Pillow's 16-bit grey pixels (any byte order, or int32 for mode I) as uint16 [H, W]."""
    if arr.size and (arr.min() < 0 or arr.max() > SIXTEEN_BIT):
        raise VaekitError(f"{path}: grey levels span [{arr.min()}, {arr.max()}]; 16-bit images hold 0..65535")
    return arr.astype(np.uint16)


def _palette_is_grey(im) -> bool:
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
