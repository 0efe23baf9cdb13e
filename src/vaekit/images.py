"""A folder of PNG/JPEG images as one uint8 array (Pillow, imported lazily: `pip install pillow`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import VaekitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def read_image_folder(folder: Path) -> np.ndarray:
    """All images under `folder` (sorted by path) → [N, H, W] (grey) or [N, 3, H, W] (colour), uint8.

    Every file must be an image of the same size and colour mode; the first that is not names itself.
    """
    try:
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
