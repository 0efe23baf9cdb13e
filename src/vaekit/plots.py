"""Pictures. Image grids are written as PNG with the standard library alone (no extra needed);
figures that need matplotlib import it lazily behind the `plot` extra.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor


def image_grid(images: Tensor, shape: tuple[int, ...], ncol: int | None = None, pad: int = 1) -> Tensor:
    """images: [N, D] in [0, 1] with D = prod(shape), shape (C, H, W) or (D,) → a [H', W', C] uint8 grid."""
    if len(shape) == 3:
        c, h, w = shape
    else:  # flat data: show as a near-square greyscale tile
        c, h, w = 1, 1, math.prod(shape)
    n = images.shape[0]
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = torch.ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    imgs = images.detach().float().clamp(0, 1).reshape(n, c, h, w).cpu()
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = imgs[i]
    return (grid * 255).round().to(torch.uint8).permute(1, 2, 0)


def write_png(path: str | Path, pixels: Tensor, upscale: int = 1) -> None:
    """Write a [H, W, C] uint8 tensor (C = 1 grey, 3 RGB) as PNG; `upscale` repeats pixels for viewing."""
    if upscale > 1:
        pixels = pixels.repeat_interleave(upscale, 0).repeat_interleave(upscale, 1)
    h, w, c = pixels.shape
    color_type = {1: 0, 3: 2}[c]
    rows = pixels.contiguous().numpy().reshape(h, w * c)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


def save_grid(path: str | Path, images: Tensor, shape: tuple[int, ...], ncol: int | None = None) -> Path:
    """A grid of images [N, D] in [0, 1] as a PNG, upscaled so that small images are visible."""
    grid = image_grid(images, shape, ncol)
    upscale = max(1, 256 // max(grid.shape[0], grid.shape[1]) + 1)
    write_png(path, grid, upscale=min(upscale, 8))
    return Path(path)
