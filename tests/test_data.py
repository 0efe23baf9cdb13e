"""Datasets: the embedded digits, user arrays, and the stated binarization."""

import numpy as np
import pytest
import torch

from vaekit.data import load_dataset
from vaekit.errors import VaekitError


def test_digits_split_is_fixed_and_complete():
    a, b = load_dataset("digits"), load_dataset("digits")
    sizes = {k: v.shape for k, v in a.splits.items()}
    assert sizes == {"train": (1300, 64), "val": (200, 64), "test": (297, 64)}
    assert all(torch.equal(a.splits[k], b.splits[k]) for k in a.splits)
    assert a.splits["train"].dtype == torch.uint8 and int(a.splits["train"].max()) == 16
    assert sum(len(v) for v in a.labels.values()) == 1797
    # every label occurs (about 180 of each digit)
    counts = torch.bincount(torch.cat(list(a.labels.values())))
    assert counts.min() >= 174 and counts.max() <= 183


def test_dynamic_binarization_draws_afresh_with_the_pixel_probability():
    ds = load_dataset("digits", binarize="dynamic")
    raw = ds.split("train")[:200]
    draws = torch.stack([ds.prepare(raw) for _ in range(400)])
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(draws.mean(0), raw.float() / 16, atol=0.1, rtol=0)
    # the evaluation split is one fixed draw
    assert torch.equal(ds.eval_split("test"), ds.eval_split("test"))


def test_grey_levels_with_bernoulli_need_a_binarization_choice():
    with pytest.raises(VaekitError, match="Bernoulli likelihood needs 0/1 data"):
        load_dataset("digits", binarize="none", likelihood="bernoulli")
    ds = load_dataset("digits", binarize="none", likelihood="gaussian")
    assert ds.prepare(ds.split("test")).max() == 1.0
    static = load_dataset("digits", binarize="static")
    assert set(static.split("train").unique().tolist()) == {0, 1}


def test_user_arrays(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(50, 6, 5), dtype=np.uint8)
    np.save(tmp_path / "a.npy", x)
    ds = load_dataset(str(tmp_path / "a.npy"))
    assert ds.shape == (1, 6, 5) and sum(len(v) for v in ds.splits.values()) == 50 and ds.scale == 255.0
    np.savez(tmp_path / "b.npz", train=x[:40] / 255.0, test=x[40:] / 255.0)
    ds = load_dataset(str(tmp_path / "b.npz"), binarize="none", likelihood="gaussian")
    assert ds.split("train").shape == (40, 30) and ds.split("test").dtype == torch.float32


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((10, 3), np.nan), "contains NaN or Inf"),
        (np.full((10, 3), 2.0), r"values must lie in \[0, 1\]"),
        (np.array(["a", "b", "c"]), "expected numeric data"),
        (np.zeros(5), r"expected shape \[N, ...\]"),
    ],
)
def test_bad_arrays_are_named(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(VaekitError, match=message):
        load_dataset(str(tmp_path / "bad.npy"), binarize="none", likelihood="gaussian")
