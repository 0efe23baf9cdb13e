"""The named datasets outside the MNIST family: what they hold and how they are split.

| name       | examples | example shape | stored values              | scale | test | default val |
|------------|----------|---------------|----------------------------|-------|------|-------------|
| digits     | 1797     | (1, 8, 8)     | uint8 grey levels 0..16    | 16    | 297  | 200         |
| wine       | 178      | (13,)         | float32 real features      | 1     | 18   | 16          |
| frey-faces | 1965     | (1, 28, 20)   | uint8 grey levels 8..238   | 255   | 196  | 176         |
| shapes2d   | 23040    | (1, 64, 64)   | uint8 pixels 0/1           | 1     | 2304 | 2304        |

digits and wine are scikit-learn's copies of UCI data, embedded (resources/*.csv.gz: features, then
the class label); Frey faces (Kingma & Welling 2013, Fig. 2: their real-valued example) are read from
the data root, MD5-checked (`mnist.read_frey_faces`). None has a published train/test split: the
loader holds out `test` examples drawn with the run's split seed, then `val` from the rest (≈10% each).
Wine's features span very different ranges (proline ≈ 750, hue ≈ 1): the case for standardization.
shapes2d (`shapes.py`, rendered here, nothing read) is dSprites' factor grid on a stated subgrid that
fits in memory (94 MB): every shape and scale, every 2nd orientation (20 of 40, 18° apart) and every
4th position (8 × 8 of 32 × 32); its labels are the shape, its factors the five indices on the full grid.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources

import numpy as np

from . import shapes
from .mnist import read_frey_faces


@dataclass(frozen=True)
class Builtin:
    shape: tuple[int, ...]  # one example's shape
    scale: float  # stored value / scale: the data's units ([0, 1] for grey levels)
    test: int  # examples held out (seeded) as the test split
    val: int  # default validation examples carved (seeded) from the rest
    factor_names: tuple[str, ...] = ()  # ground-truth factors, where the data have them


BUILTIN = {
    "digits": Builtin((1, 8, 8), 16.0, test=297, val=200),
    "wine": Builtin((13,), 1.0, test=18, val=16),
    "frey-faces": Builtin((1, 28, 20), 255.0, test=196, val=176),  # 10% of 1965, then 10% of 1769
    "shapes2d": Builtin((1, 64, 64), 1.0, test=2304, val=2304, factor_names=shapes.FACTOR_NAMES),  # 10%, 10%
}
SHAPES2D_SUBGRID = {"orientation": 2, "pos_x": 4, "pos_y": 4}  # strides on dSprites' grid: 23,040 images


def read_builtin(name: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """All examples of a BUILTIN dataset, flattened: x [N, D] (uint8 or float32), labels int64 [N] or None,
    factors int64 [N, F] or None."""
    if name == "digits":
        table = _embedded_table("digits.csv.gz", np.uint8)
        return table[:, :64], table[:, 64].astype(np.int64), None
    if name == "wine":
        table = _embedded_table("wine.csv.gz", np.float64)  # the CSV holds the exact decimals
        return table[:, :13].astype(np.float32), table[:, 13].astype(np.int64), None
    if name == "frey-faces":
        return read_frey_faces(data_dir), None, None
    if name == "shapes2d":
        indices = shapes.all_indices(SHAPES2D_SUBGRID)
        images = shapes.render(indices).reshape(len(indices), -1).numpy()
        return images, indices[:, 0].numpy().astype(np.int64), indices.numpy().astype(np.int64)
    raise KeyError(name)


def _embedded_table(file: str, dtype: type) -> np.ndarray:
    with resources.files("vaekit.data.resources").joinpath(file).open("rb") as f, gzip.open(f) as g:
        return np.loadtxt(g, delimiter=",", dtype=dtype)
