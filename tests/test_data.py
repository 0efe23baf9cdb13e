"""Datasets: the named ones, user arrays, supports, the stated binarization, standardization."""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.data import load_dataset, standardization
from vaekit.data.builtin import read_builtin
from vaekit.errors import VaekitError

# The verified data lives beside the repository (CI clones it to ../shared), not inside it, or where
# $VAEKIT_DATA says (as for the benchmarks); a test that needs it skips without it.
SHARED = Path(os.environ.get("VAEKIT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
FREY = SHARED / "frey_faces" / "frey_faces.npy"


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
        load_dataset("digits", binarize="none", support="binary")
    ds = load_dataset("digits", binarize="none", support="real")
    assert ds.prepare(ds.split("test")).max() == 1.0
    static = load_dataset("digits", binarize="static")
    assert set(static.split("train").unique().tolist()) == {0, 1}


def file_rows(split, rows):
    """The index in `rows` (the file's examples, flattened) of each row of a split; fails on a row the file lacks."""
    index = {r.tobytes(): i for i, r in enumerate(rows)}
    got = [index.get(r.tobytes()) for r in split.numpy()]
    assert None not in got, "a split holds a row that is not one of the file's"
    return got


def test_user_arrays(tmp_path):
    """The splits hold the file's examples, each once, in the file's order within a split (C order within
    an example), as stored; prepared they are the values /255 for uint8, as given for floats."""
    x = np.random.default_rng(0).integers(0, 256, size=(50, 6, 5), dtype=np.uint8)
    rows = x.reshape(50, 30)
    np.save(tmp_path / "a.npy", x)
    ds = load_dataset(str(tmp_path / "a.npy"))
    assert ds.shape == (1, 6, 5) and sum(len(v) for v in ds.splits.values()) == 50 and ds.scale == 255.0
    where = {k: file_rows(v, rows) for k, v in ds.splits.items()}
    assert sorted(i for w in where.values() for i in w) == list(range(50)) and all(w == sorted(w) for w in where.values())
    assert all(torch.equal(ds.split(k), torch.from_numpy(rows[w])) for k, w in where.items())
    unit = load_dataset(str(tmp_path / "a.npy"), support="unit")  # not binarized: the grey levels k/255
    for k in unit.splits:
        want = torch.from_numpy(rows[file_rows(unit.split(k), rows)].astype(np.float64) / 255)
        torch.testing.assert_close(unit.prepare(unit.split(k)).double(), want, atol=1e-7, rtol=0)
    np.savez(tmp_path / "b.npz", train=x[:40] / 255.0, test=x[40:] / 255.0)
    ds = load_dataset(str(tmp_path / "b.npz"), binarize="none", support="real")
    # no val array: 10% of train becomes the validation split; the given test split is kept as it is
    assert ds.split("train").shape == (36, 30) and ds.split("val").shape == (4, 30)
    assert ds.split("test").dtype == torch.float32
    floats = (rows / 255.0).astype(np.float32)
    assert torch.equal(ds.prepare(ds.split("test")), torch.from_numpy(floats[40:]))
    train, val = file_rows(ds.split("train"), floats), file_rows(ds.split("val"), floats)
    assert sorted(train + val) == list(range(40)) and train == sorted(train) and val == sorted(val)
    assert torch.equal(ds.prepare(ds.split("train")), torch.from_numpy(floats[train]))


def test_csv_with_header(tmp_path):
    rows = np.random.default_rng(1).integers(0, 256, size=(30, 4))
    (tmp_path / "d.csv").write_text("a,b,c,d\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    ds = load_dataset(str(tmp_path / "d.csv"), binarize="none", support="real")
    assert ds.split("train").dtype == torch.float32 and ds.scale == 1.0  # a CSV's numbers are used as written
    got = torch.cat([ds.split(k) for k in ("train", "val", "test")]).sort(0).values
    assert torch.equal(got, torch.from_numpy(rows.astype(np.float32)).sort(0).values)


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
    ds = load_dataset(str(tmp_path), binarize="none", support="real")
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
    with pytest.raises(VaekitError, match=r"t.npy: its header claims an array of shape \(100, 10\) \(4,000 bytes\), but the file holds [\d,]+ bytes after it; the file is cut short or damaged"):
        load_dataset(str(tmp_path / "t.npy"))


@pytest.mark.parametrize(
    "array, support, message",
    [
        (np.full((10, 3), np.nan), "real", "contains NaN or Inf"),
        (np.full((10, 3), np.inf), "count", "contains NaN or Inf"),
        (np.full((10, 3), 2.0), "unit", r"values must lie in \[0, 1\]"),
        (np.array(["a", "b", "c"]), "real", "expected numeric data"),
        (np.zeros(5), "real", r"expected shape \[N, ...\]"),
    ],
)
def test_bad_arrays_are_named(tmp_path, array, support, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(VaekitError, match=message) as info:
        load_dataset(str(tmp_path / "bad.npy"), binarize="none", support=support)
    assert "bad.npy" in str(info.value)


def _rows(ds):
    """All stored examples over the splits, rows sorted: order-free comparison with the source array."""
    x = torch.cat([ds.split(k) for k in ("train", "val", "test")]).numpy()
    return x[np.lexsort(x.T[::-1])]


def _sorted_rows(x):
    x = x.reshape(len(x), -1)
    return x[np.lexsort(x.T[::-1])]


def test_standardization_maps_training_columns_to_mean_0_std_1(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal([5.0, -3.0, 1000.0, 0.5], [2.0, 0.1, 300.0, 1.0], size=(200, 4))
    x = np.concatenate([x, np.full((200, 1), 7.25)], axis=1).astype(np.float32)  # a constant column
    np.save(tmp_path / "r.npy", x)
    ds = load_dataset(str(tmp_path / "r.npy"), support="real", standardize=True)
    assert ds.binarize == "none" and ds.scale == 1.0 and ds.shift.shape == (5,) and ds.spread.dtype == torch.float32
    train = ds.split("train").numpy().astype(np.float64)  # the stored rows, statistics by numpy
    z = ds.prepare(ds.split("train")).double().numpy()
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, :4].std(0), 1.0, atol=1e-5)
    assert ds.spread[4].item() == 1.0 and np.all(z[:, 4] == 0.0)  # constant: shifted, not rescaled
    std = train.std(0)
    std[4] = 1.0
    assert ds.log_det_jacobian == pytest.approx(-np.log(std).sum(), abs=1e-5)
    test = ds.split("test")
    torch.testing.assert_close(ds.restore(ds.prepare(test)), test / ds.scale, rtol=1e-5, atol=1e-5)
    # blockwise accumulation (Chan's update) gives numpy's mean and std
    shift, spread = standardization(ds.split("train"), block=7)
    np.testing.assert_allclose(shift.numpy(), train.mean(0), rtol=1e-6)
    np.testing.assert_allclose(spread.numpy()[:4], train.std(0)[:4], rtol=1e-6)


def test_saved_standardization_is_reapplied_not_recomputed(tmp_path):
    x = np.random.default_rng(5).normal(10.0, 3.0, size=(60, 3)).astype(np.float32)
    np.save(tmp_path / "r.npy", x)
    first = load_dataset(str(tmp_path / "r.npy"), support="real", standardize=True)
    other = load_dataset(str(tmp_path / "r.npy"), support="real", split_seed=1, standardize=True)
    assert not torch.equal(other.shift, first.shift)  # another training split, other statistics
    again = load_dataset(str(tmp_path / "r.npy"), support="real", split_seed=1, standardize=True,
                         shift=first.shift.numpy(), spread=first.spread.tolist())
    assert torch.equal(again.shift, first.shift) and torch.equal(again.spread, first.spread)
    raw = again.split("test")
    torch.testing.assert_close(again.prepare(raw), (raw - first.shift) / first.spread)
    plain = load_dataset(str(tmp_path / "r.npy"), support="real")
    assert plain.shift is None and plain.log_det_jacobian == 0.0 and plain.restore(raw) is raw
    with pytest.raises(VaekitError, match="only; this likelihood's support is 'binary'"):
        load_dataset(str(tmp_path / "r.npy"), standardize=True)
    with pytest.raises(VaekitError, match="both shift and spread"):
        load_dataset(str(tmp_path / "r.npy"), support="real", standardize=True, shift=first.shift)
    with pytest.raises(VaekitError, match=r"spread has shape \[2\]; the data need \[3\]"):
        first.with_standardization(first.shift, [1.0, 2.0])


def test_real_data_need_a_real_support(tmp_path):
    x = np.full((30, 4), 2.5, dtype=np.float32)
    x[:, 0] = -1.5
    x[:, 1] = np.arange(30)
    path = tmp_path / "wide.npy"
    np.save(path, x)
    ds = load_dataset(str(path), support="real")
    assert np.array_equal(_rows(ds), _sorted_rows(x))
    assert ds.prepare(ds.split("train")).min().item() == -1.5
    for support in ("binary", "unit"):
        with pytest.raises(VaekitError, match="values must lie in") as info:
            load_dataset(str(path), support=support)
        msg = str(info.value)
        assert "wide.npy [train]" in msg and f"support {support!r}" in msg
        lo, hi = map(float, re.search(r"found range \[(\S+), (\S+)\]", msg).groups())
        assert lo == -1.5 and 2.5 <= hi <= 29


def test_auto_binarization_follows_the_support():
    binary = load_dataset("digits")
    assert binary.binarize == "dynamic"
    real = load_dataset("digits", support="real")
    assert real.binarize == "none" and real.prepare(real.split("train")).unique().numel() == 17  # 0/16 .. 16/16
    assert load_dataset("digits", support="unit").binarize == "none"
    for value, support in (("dynamic", "real"), ("static", "unit"), ("dynamic", "count")):
        with pytest.raises(VaekitError, match=f"binarize='{value}' applies to a Bernoulli") as info:
            load_dataset("digits", binarize=value, support=support)
        assert f"support is '{support}'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(VaekitError, match="unknown support 'gaussian'"):
        load_dataset("digits", support="gaussian")


def test_bool_arrays_load_as_0_1(tmp_path):
    x = np.random.default_rng(6).random((40, 3, 4)) < 0.3
    np.save(tmp_path / "b.npy", x)
    ds = load_dataset(str(tmp_path / "b.npy"), binarize="none")
    assert ds.shape == (1, 3, 4) and ds.scale == 1.0 and ds.split("train").dtype == torch.uint8
    assert np.array_equal(_rows(ds), _sorted_rows(x.astype(np.uint8)))
    auto = load_dataset(str(tmp_path / "b.npy"))  # dynamic, but a draw from 0/1 is the data itself
    train = auto.split("train")
    assert torch.equal(auto.prepare(train), train.float()) and int(train.sum()) > 0


def test_count_support(tmp_path):
    counts = np.random.default_rng(7).integers(0, 200, size=(30, 5)).astype(np.uint8)
    np.save(tmp_path / "c.npy", counts)
    ds = load_dataset(str(tmp_path / "c.npy"), support="count")
    assert ds.scale == 1.0 and ds.binarize == "none"
    assert torch.equal(ds.prepare(ds.split("test")), ds.split("test").float())  # counts, not counts/255
    assert np.array_equal(_rows(ds), _sorted_rows(counts))
    np.save(tmp_path / "i.npy", counts.astype(np.int64) * 100)  # beyond 255: float, still whole
    assert load_dataset(str(tmp_path / "i.npy"), support="count").prepare(ds.split("test")).max() > 1
    frac = counts.astype(np.float32)
    frac[3, 2] = 1.5
    np.save(tmp_path / "f.npy", frac)
    with pytest.raises(VaekitError, match=r"f.npy \[\w+\]: count data must be whole numbers; example \d+ is not"):
        load_dataset(str(tmp_path / "f.npy"), support="count")
    neg = counts.astype(np.float32)
    neg[:, 0] = -2
    np.save(tmp_path / "n.npy", neg)
    with pytest.raises(VaekitError, match=r"n.npy \[train\]: count data must be non-negative, found range \[-2, "):
        load_dataset(str(tmp_path / "n.npy"), support="count")


WINE_SUM = 159975.295999  # sklearn.datasets.load_wine().data.sum(): the 178 × 13 features, exact decimals


def test_wine_is_sklearns_wine():
    ds = load_dataset("wine", support="real")
    assert ds.shape == (13,) and ds.scale == 1.0 and ds.binarize == "none"
    assert {k: len(v) for k, v in ds.splits.items()} == {"test": 18, "train": 144, "val": 16}
    assert torch.cat(list(ds.labels.values())).bincount().tolist() == [59, 71, 48]
    x = torch.cat(list(ds.splits.values())).double()
    assert x.sum().item() == pytest.approx(WINE_SUM, abs=1e-4)  # float32 storage moves it by 4e-6
    assert x[:, 12].max().item() == 1680 and x[:, 10].max().item() == pytest.approx(1.71)  # proline, hue
    with pytest.raises(VaekitError, match=r"wine \[\w+\]: values must lie in \[0, 1\] .* found range \[0.1"):
        load_dataset("wine")  # a Bernoulli likelihood: not for these data


def test_wine_matches_sklearn_when_installed():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is not installed (only a cross-check)")
    wine = datasets.load_wine()
    x, y, _ = read_builtin("wine")
    np.testing.assert_allclose(x.astype(np.float64).mean(0), wine.data.mean(0), rtol=1e-7)
    assert np.array_equal(x, wine.data.astype(np.float32)) and np.array_equal(y, wine.target)


frey = pytest.mark.skipif(not FREY.is_file(), reason=f"Frey faces not found at {FREY} (the shared data folder)")


@frey
def test_frey_faces_splits_and_pixels():
    ds = load_dataset("frey-faces", support="real", data_dir=str(SHARED))
    assert ds.shape == (1, 28, 20) and ds.scale == 255.0 and ds.labels == {}
    assert {k: len(v) for k, v in ds.splits.items()} == {"test": 196, "train": 1593, "val": 176}
    assert sum(int(v.sum()) for v in ds.splits.values()) == 169968741 and ds.split("train").dtype == torch.uint8
    other = load_dataset("frey-faces", support="real", split_seed=1, data_dir=str(SHARED))
    assert not torch.equal(other.split("test"), ds.split("test"))  # the held-out test split follows the seed
    assert load_dataset("frey-faces", data_dir=str(SHARED)).binarize == "dynamic"  # grey levels in [0, 1]


@frey
def test_frey_faces_corrupt_or_missing(tmp_path):
    (tmp_path / "frey_faces").mkdir()
    with pytest.raises(VaekitError, match="no download") as info:
        load_dataset("frey-faces", data_dir=str(tmp_path))
    assert str(tmp_path / "frey_faces" / "frey_faces.npy") in str(info.value) and "\n" not in str(info.value)
    raw = bytearray(FREY.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one pixel off by one: still a valid .npy
    (tmp_path / "frey_faces" / "frey_faces.npy").write_bytes(raw)
    with pytest.raises(VaekitError, match="ba92189c966bec4ac7b48dd0f55cb805"):
        load_dataset("frey-faces", support="real", data_dir=str(tmp_path))
    shutil.copyfile(FREY, tmp_path / "frey_faces" / "frey_faces.npy")
    assert load_dataset("frey-faces", support="real", data_dir=str(tmp_path)).dim == 560
