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
    assert load_dataset("digits", val_size=500).split("val").shape == (500, 64)
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
    # no val array: 10% of train becomes the validation split
    assert ds.split("train").shape == (36, 30) and ds.split("val").shape == (4, 30)
    assert ds.split("test").dtype == torch.float32


def test_csv_with_header(tmp_path):
    rows = np.random.default_rng(1).integers(0, 256, size=(30, 4))
    (tmp_path / "d.csv").write_text("a,b,c,d\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    ds = load_dataset(str(tmp_path / "d.csv"), binarize="none", likelihood="gaussian")
    assert ds.split("train").dtype == torch.uint8 and ds.scale == 255.0
    got = torch.cat([ds.split(k) for k in ("train", "val", "test")]).sort(0).values
    assert torch.equal(got, torch.from_numpy(rows.astype(np.uint8)).sort(0).values)


def test_memory_mapped_npy_is_not_read_into_memory(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, size=(1000, 16), dtype=np.uint8)
    np.save(tmp_path / "big.npy", x)
    ds = load_dataset(str(tmp_path / "big.npy"), mmap=True, val_size=50)
    # contiguous views of the file: the last 10% is test, the 50 rows before it validation
    assert torch.equal(ds.split("test"), torch.from_numpy(x[900:]))
    assert torch.equal(ds.split("val"), torch.from_numpy(x[850:900]))
    # views into one buffer (the mapping), not per-split copies
    base = ds.split("train").data_ptr()
    assert ds.split("val").data_ptr() == base + 850 * 16 and ds.split("test").data_ptr() == base + 900 * 16


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(12, 5, 7), dtype=np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / f"{i:02d}.png")
    ds = load_dataset(str(tmp_path), binarize="none", likelihood="gaussian")
    assert ds.shape == (1, 5, 7)
    got = torch.cat([ds.split(k) for k in ("train", "val", "test")]).sort(0).values
    assert torch.equal(got, torch.from_numpy(pixels.reshape(12, -1)).sort(0).values)
    Image.fromarray(rng.integers(0, 256, size=(6, 7), dtype=np.uint8)).save(tmp_path / "99.png")
    with pytest.raises(VaekitError, match=r"99.png: image shape \(6, 7\) differs from \(5, 7\)"):
        load_dataset(str(tmp_path))
    (tmp_path / "99.png").unlink()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(VaekitError, match="notes.txt: not a PNG or JPEG image"):
        load_dataset(str(tmp_path))


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((100, 10), dtype=np.float32))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(VaekitError, match=r"t.npy: cannot read as .npy"):
        load_dataset(str(tmp_path / "t.npy"))


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
