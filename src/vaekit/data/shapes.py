"""shapes2d: a dSprites-like dataset (Matthey et al. 2017, "dSprites: disentanglement testing sprites
dataset") rendered on demand from its factor indices, so the 737,280 images are never held at once.

Factors, in dSprites' order (the last varies fastest in the flat numbering, as dSprites stores them):
  shape        3   square, ellipse, heart (values 1, 2, 3, as dSprites' latents_values)
  scale        6   linearly spaced in [0.5, 1]
  orientation 40   2π·i/40, i = 0..39: 40 distinct angles in [0, 2π). dSprites' 40 are linspace(0, 2π, 40),
                   whose first and last are the same picture; ours step by exactly 9°, so index 10 is 90°.
  pos_x, pos_y 32  linearly spaced in [0, 1]: x to the right (columns), y downwards (rows)

Geometry (canvas units: pixel (row i, column j) is the unit square [j, j+1] × [i, i+1], sampled at its
centre; no anti-aliasing, a pixel is 1 iff its centre lies in the shape):
  every shape at scale s lies within RADIUS·s = 10.6875·s px of its centre (its farthest point is at
  that distance), so its largest extent is 21.4 px at scale 1, a third of the 64 px canvas;
  the centre of position index k is RADIUS + STEP·k (STEP = 1.375 px), so at pos 0 and 1 the largest
  shape touches the canvas edge and never leaves it; positions 8 apart are exactly 11 px apart;
  the shape turns counter-clockwise (as displayed) about its centre: the square's and ellipse's centre
  of symmetry, the heart's centre of mass.
  square   |u|, |v| ≤ R/√2 (side √2·R: its corners on the circle)
  ellipse  (u/R)² + (v/(R/2))² ≤ 1 (2:1, long axis horizontal at orientation 0)
  heart    (X² + Y² − 1)³ − X²Y³ ≤ 0 with (X, Y) = (u, v)·HEART_RADIUS/R + (0, HEART_CENTROID_Y): the
           classic implicit heart, lobes up at orientation 0, shifted to put its centre of mass at the
           centre and scaled so its tip, the farthest point, is at distance R
with (u, v) the rotated offset from the centre (v up) and R = RADIUS·scale. Quarter turns use cosines
and sines of exactly 0 and ±1, so a 90° turn of the square (or 180° of the ellipse) is the same image:
as in dSprites, the square's 40 orientations hold 10 distinct pictures and the ellipse's 20.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from ..errors import VaekitError

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")
NUM_IMAGES = math.prod(FACTOR_SIZES)  # 737,280
IMAGE_SIZE = 64
RADIUS = 10.6875  # px (171/16): every shape at scale 1 lies within this distance of its centre
STEP = (IMAGE_SIZE - 2 * RADIUS) / (FACTOR_SIZES[3] - 1)  # 1.375 px between neighbouring positions
# The implicit heart's centre of mass is (0, 0.29348...): ∫∫ y dA / A over r(θ), the curve's polar radius
# (r² − 1)³ = r⁵ cos²θ sin³θ (one root per θ), by quadrature; its tip (0, −1) is the farthest point.
HEART_CENTROID_Y = 0.29348122730
HEART_RADIUS = 1.0 + HEART_CENTROID_Y
# Images computed at once. On a CPU a [256, 64, 64] float32 temporary (4 MB) stays in cache: about 8 µs an
# image on one core, 3 times faster than chunks of 1024; an accelerator wants fewer, larger launches.
CPU_CHUNK, DEVICE_CHUNK = 256, 16384

_SCALES = torch.linspace(0.5, 1.0, FACTOR_SIZES[1], dtype=torch.float64)
_RADIX = torch.tensor([math.prod(FACTOR_SIZES[i + 1:]) for i in range(5)])  # flat = Σ index · radix


def _check_indices(indices: Tensor) -> Tensor:
    if not isinstance(indices, Tensor) or indices.dim() != 2 or indices.shape[1] != 5:
        shape = list(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
        raise VaekitError(f"factor indices must be a tensor [B, 5] ({', '.join(FACTOR_NAMES)}), got {shape}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise VaekitError(f"factor indices must be integers, got {indices.dtype}")
    sizes = torch.tensor(FACTOR_SIZES, device=indices.device)
    bad = (indices < 0) | (indices >= sizes)
    if bool(bad.any()):
        row, col = (int(v) for v in bad.nonzero()[0])
        raise VaekitError(f"factor indices [{indices.shape[0]}, 5]: row {row} has {FACTOR_NAMES[col]} = "
                          f"{int(indices[row, col])}, outside 0..{FACTOR_SIZES[col] - 1}")
    return indices.long()


def factor_values(indices: Tensor) -> Tensor:
    """indices: [B, 5] → float64 [B, 5]: shape 1..3, scale linspace(0.5, 1, 6)[i], orientation 2π·i/40
    (radians), pos_x and pos_y k/31 in [0, 1]."""
    i = _check_indices(indices)
    scale = _SCALES.to(i.device)[i[:, 1]]
    i = i.double()
    return torch.stack([i[:, 0] + 1, scale, i[:, 2] * (2 * math.pi / 40), i[:, 3] / 31, i[:, 4] / 31], dim=1)


def to_flat(indices: Tensor) -> Tensor:
    """indices [B, 5] → flat numbers [B] in 0..NUM_IMAGES−1, pos_y varying fastest (dSprites' order)."""
    i = _check_indices(indices)
    return (i * _RADIX.to(i.device)).sum(dim=1)


def from_flat(flat: Tensor) -> Tensor:
    """flat numbers [B] → indices [B, 5]; the inverse of `to_flat`."""
    flat = torch.as_tensor(flat)
    if flat.dim() != 1 or flat.is_floating_point() or bool(((flat < 0) | (flat >= NUM_IMAGES)).any()):
        raise VaekitError(f"flat numbers must be integers [B] in 0..{NUM_IMAGES - 1}, got {list(flat.shape)} "
                          f"{flat.dtype}")
    radix = _RADIX.to(flat.device)
    return torch.stack([(flat // radix[f]) % FACTOR_SIZES[f] for f in range(5)], dim=1)


def _allowed(subgrid: Mapping[str, int | slice | Sequence[int]] | None) -> list[Tensor]:
    """Each factor's allowed indices: all of them, or what `subgrid` gives by name (an int is a stride)."""
    subgrid = dict(subgrid or {})
    unknown = set(subgrid) - set(FACTOR_NAMES)
    if unknown:
        raise VaekitError(f"subgrid names unknown factors {sorted(unknown)}; the factors are {FACTOR_NAMES}")
    allowed = []
    for name, size in zip(FACTOR_NAMES, FACTOR_SIZES):
        spec = subgrid.get(name, slice(None))
        if isinstance(spec, int) and not isinstance(spec, bool):
            values = range(0, size, spec) if spec > 0 else []
        else:
            values = range(size)[spec] if isinstance(spec, slice) else spec
        values = torch.as_tensor(list(values), dtype=torch.long)
        if values.numel() == 0 or bool(((values < 0) | (values >= size)).any()) or values.unique().numel() < len(values):
            raise VaekitError(f"subgrid {name}={spec!r} must pick distinct indices in 0..{size - 1}, at least one")
        allowed.append(values)
    return allowed


def all_indices(subgrid: Mapping[str, int | slice | Sequence[int]] | None = None) -> Tensor:
    """Every factor combination of a subgrid as indices [M, 5], in flat order. `subgrid` maps factor
    names to a stride (int), a slice or a list of indices; unnamed factors take all their values:
    all_indices({"pos_x": 2, "pos_y": 2}) is every 2nd position, 184,320 rows."""
    grids = torch.meshgrid(*_allowed(subgrid), indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)


def sample_indices(n: int, seed: int = 0, subgrid: Mapping[str, int | slice | Sequence[int]] | None = None) -> Tensor:
    """n indices [n, 5] drawn uniformly (with replacement) from the grid or a subgrid, by a generator
    seeded with `seed`: the same n and seed give the same indices."""
    if int(n) != n or n < 0:
        raise VaekitError(f"n must be an integer ≥ 0, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    return torch.stack([a[torch.randint(len(a), (int(n),), generator=g)] for a in _allowed(subgrid)], dim=1)


def _trig(orientation: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin of 2π·i/40 from a float64 table with |x| < 1e-12 set to 0: quarter turns are exact."""
    angle = torch.arange(FACTOR_SIZES[2], dtype=torch.float64) * (2 * math.pi / FACTOR_SIZES[2])
    cos, sin = (torch.where(t.abs() < 1e-12, 0.0, t).float() for t in (torch.cos(angle), torch.sin(angle)))
    return cos.to(orientation.device)[orientation], sin.to(orientation.device)[orientation]


def _offsets(i: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(u, v, R): each pixel centre's offset from the shape's centre turned into the shape's frame
    (v up), [B, 64, 64] float32, and the shape's radius R [B, 1, 1]."""
    centre = torch.arange(IMAGE_SIZE, dtype=torch.float32, device=i.device) + 0.5
    dx = centre.view(1, 1, -1) - (RADIUS + STEP * i[:, 3].float()).view(-1, 1, 1)  # exact: multiples of 1/16
    dy = (RADIUS + STEP * i[:, 4].float()).view(-1, 1, 1) - centre.view(1, -1, 1)
    cos, sin = (t.view(-1, 1, 1) for t in _trig(i[:, 2]))
    u = cos * dx + sin * dy  # the inverse rotation: the shape turns counter-clockwise by the angle
    v = cos * dy - sin * dx
    return u, v, (RADIUS * _SCALES.to(i.device)[i[:, 1]]).float().view(-1, 1, 1)


def _square(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    half = r * (1 / math.sqrt(2))
    return (u.abs() <= half) & (v.abs() <= half)


def _ellipse(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    return u * u + 4 * (v * v) <= r * r


def _heart(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    k = HEART_RADIUS / r
    x, y = u * k, v * k + HEART_CENTROID_Y
    x2, s = x * x, x * x + y * y - 1
    return s * s * s <= x2 * (y * y * y)


_INSIDE = (_square, _ellipse, _heart)


def _render_chunk(i: Tensor) -> Tensor:
    image = torch.zeros(len(i), IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool, device=i.device)
    for shape, inside in enumerate(_INSIDE):  # a loop over the 3 shapes, not over images
        rows = (i[:, 0] == shape).nonzero().squeeze(1)
        if len(rows):
            image[rows] = inside(*_offsets(i[rows]))
    return image


def render(indices: Tensor, dtype: torch.dtype = torch.uint8) -> Tensor:
    """indices: [B, 5] integer factor indices → images [B, 64, 64] of 0 and 1 in `dtype`, on the indices'
    device. Each pixel depends only on its image's indices, through IEEE float32 arithmetic without
    fused operations, so the bytes do not depend on the batch they are rendered in."""
    i = _check_indices(indices)
    out = torch.empty(len(i), IMAGE_SIZE, IMAGE_SIZE, dtype=dtype, device=i.device)
    chunk = CPU_CHUNK if i.device.type == "cpu" else DEVICE_CHUNK
    for start in range(0, len(i), chunk):
        out[start:start + chunk] = _render_chunk(i[start:start + chunk]).to(dtype)
    return out
