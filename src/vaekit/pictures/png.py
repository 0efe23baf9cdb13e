"""Image grids as PNG with the standard library alone: tensors in, files out, no extra needed.

The titled and labelled pictures (and everything drawn for vector data) are matplotlib figures in
`figures`, which lays these grids out; `report` assembles a run's pictures and does every model
call. Shapes follow the data: grey for 1 channel, colour for 3, any H×W; (D,) for vector data.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor

from ..errors import VaekitError
from ..files import atomic_write

MIN_IMAGE_PX = 48  # the longer side of one image on screen, at least: an 8×8 digit is drawn 6× larger
PAD = 1  # grid pixels between images (white), before upscaling


def image_hw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of one image of `shape` (C, H, W); a vector (D,) is one grey 1×D strip."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    return 1, 1, math.prod(shape)


def upscale_for(shape: tuple[int, ...]) -> int:
    """The integer pixel repeat that draws one image of `shape` with its longer side ≥ MIN_IMAGE_PX:
    from the image's size, so a grid of 100 images is drawn at the same scale as a grid of 4."""
    _, h, w = image_hw(shape)
    return max(1, math.ceil(MIN_IMAGE_PX / max(h, w)))


def image_grid(images: Tensor, shape: tuple[int, ...], ncol: int | None = None, pad: int = PAD) -> Tensor:
    """images: [N, D] in [0, 1] with D = prod(shape), shape (C, H, W) or (D,) → a [H', W', C] uint8 grid,
    row-major, `ncol` images a row (default: near-square), white between and around the images."""
    c, h, w = image_hw(shape)
    n = images.shape[0]
    if n == 0:
        raise VaekitError("no images to draw (0 rows)")
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = torch.ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    imgs = images.detach().float().clamp(0, 1).reshape(n, c, h, w).cpu()
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = imgs[i]
    return (grid * 255).round().to(torch.uint8).permute(1, 2, 0)


def pairs_layout(x: Tensor, x_hat: Tensor, ncol: int = 8) -> tuple[Tensor, int]:
    """Inputs x [N, D] and reconstructions x_hat [N, D] as blocks of two rows, `ncol` inputs above
    their `ncol` reconstructions; a short last block is filled with blank (white) images.
    Returns (images [2·blocks·ncol, D], blocks)."""
    ncol = max(1, min(ncol, x.shape[0]))
    blocks = math.ceil(x.shape[0] / ncol)
    blank = torch.ones(blocks * ncol - x.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    rows = [torch.cat([t, blank.to(t.dtype)]).reshape(blocks, ncol, -1) for t in (x, x_hat)]
    return torch.stack(rows, 1).reshape(-1, x.shape[1]), blocks


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
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(png))


def save_grid(path: str | Path, images: Tensor, shape: tuple[int, ...], ncol: int | None = None) -> Path:
    """A bare grid of images [N, D] in [0, 1] as a PNG (no title, no labels; no matplotlib needed), each
    image upscaled by `upscale_for(shape)`: (grid pixels) × that factor."""
    if Path(path).suffix.lower() != ".png":
        raise VaekitError(f"{path}: image grids are written as PNG; name a .png file")
    write_png(path, image_grid(images, tuple(shape), ncol), upscale=upscale_for(tuple(shape)))
    return Path(path)
