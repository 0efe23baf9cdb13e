"""Data with known factors: `--dataset shapes2d` (the dSprites grid on its stated subgrid, rendered) and an
.npz with `factors` (and optional `factor_names`): every split keeps each example's factors beside it."""

import numpy as np
import pytest
import torch

from vaekit.data import load_dataset, shapes
from vaekit.data.builtin import SHAPES2D_SUBGRID
from vaekit.errors import VaekitError


@pytest.fixture(scope="module")
def shapes2d():
    return load_dataset("shapes2d")


def test_shapes2d_is_the_stated_subgrid_once_each(shapes2d):
    factors = torch.cat([shapes2d.factors[s] for s in ("train", "val", "test")])
    flat = shapes.to_flat(factors)
    assert len(flat) == 3 * 6 * 20 * 8 * 8 == len(torch.unique(flat))  # every image of the subgrid, once
    assert torch.equal(torch.sort(flat).values, torch.sort(shapes.to_flat(shapes.all_indices(SHAPES2D_SUBGRID))).values)
    assert {s: len(shapes2d.split(s)) for s in ("train", "val", "test")} == {"train": 18432, "val": 2304, "test": 2304}
    assert shapes2d.factor_names == shapes.FACTOR_NAMES and shapes2d.shape == (1, 64, 64)


def test_shapes2d_images_labels_and_factors_stay_together(shapes2d):
    for split in ("train", "val", "test"):
        rows = torch.arange(0, len(shapes2d.split(split)), 97)
        f = shapes2d.factors[split][rows]
        assert torch.equal(shapes2d.split(split)[rows], shapes.render(f).reshape(len(rows), -1))
        assert torch.equal(shapes2d.labels[split][rows], f[:, 0])


def test_npz_factors_follow_their_rows_through_every_split(tmp_path):
    n = 120
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, axis=1)  # row i holds i
    factors = np.stack([np.arange(n) % 4, np.arange(n) * 10], 1)
    np.savez(tmp_path / "d.npz", x=x, factors=factors, factor_names=np.array(["colour", "size"]))
    ds = load_dataset(str(tmp_path / "d.npz"), support="real")
    assert ds.factor_names == ("colour", "size")
    for split in ("train", "val", "test"):
        i = ds.split(split)[:, 0].long()
        assert torch.equal(ds.factors[split], torch.from_numpy(factors)[i]), split


@pytest.mark.parametrize(("factors", "names", "message"), [
    (np.zeros((119, 2)), None, r"expected numbers of shape \(120, F\)"),
    (np.full((120, 2), np.nan), None, "NaN or Inf"),
    (np.zeros((120, 2)), np.array(["a"]), r"expected 2 strings"),
])
def test_bad_factors_are_named(tmp_path, factors, names, message):
    arrays = {"x": np.zeros((120, 3), np.float32), "factors": factors}
    if names is not None:
        arrays["factor_names"] = names
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(VaekitError, match=message):
        load_dataset(str(tmp_path / "d.npz"), support="real")
