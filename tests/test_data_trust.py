"""User data read as written: bit depths and scales, CSV text, transparency, labels, memory maps, limits.

Each test pins a fault that once passed silently (wrong values, exit 0) or ended in a traceback.
"""

import logging
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.data import load_dataset
from vaekit.errors import VaekitError

ROOT = Path(__file__).resolve().parents[1]


def rows(ds, splits=("train", "val", "test")):
    """All stored examples over the splits, rows sorted (order-free comparison with a source array)."""
    x = torch.cat([ds.split(k) for k in splits]).numpy()
    return x[np.lexsort(x.T[::-1])]


def sorted_rows(x):
    x = x.reshape(len(x), -1)
    return x[np.lexsort(x.T[::-1])]


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG (valid chunks and CRCs) whose header claims width × height 8-bit grey pixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def save_images(folder, arrays):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:02d}.png")  # mode from the array: L, I;16, RGB, RGBA
    return folder


def test_16_bit_png_keeps_every_grey_level(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 65536, size=(12, 4, 5)).astype(np.uint16)
    pixels[0, 0, :2] = (0, 65535)
    folder = save_images(tmp_path / "deep", pixels)
    with Image.open(folder / "00.png") as im:
        assert im.mode == "I;16"  # what Pillow makes of a 16-bit grey PNG
    ds = load_dataset(str(folder), binarize="none", support="unit")
    assert ds.scale == 65535.0 and ds.shape == (1, 4, 5)
    assert np.array_equal(rows(ds), sorted_rows(pixels.astype(np.float32)))  # every level, none clipped at 255
    x = ds.prepare(torch.cat([ds.split(k) for k in ("train", "val", "test")]))
    assert x.max().item() == 1.0 and x.min().item() == 0.0
    assert x.mean().item() == pytest.approx(pixels.mean() / 65535, rel=1e-6)  # ≈ 0.5, not 0.996 (clipped white)
    save_images(tmp_path / "deep", [np.zeros((4, 5), np.uint8)])  # 00.png, now 8-bit, beside 16-bit images
    with pytest.raises(VaekitError) as info:
        load_dataset(str(folder))
    assert str(info.value) == (f"{folder / '01.png'}: a 16-bit image, but 00.png is 8-bit; "
                               "all images must have one bit depth")


def test_npz_mixing_uint8_and_float_splits_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "m.npz", train=rng.integers(0, 256, (20, 3)).astype(np.uint8), test=rng.random((5, 3)))
    with pytest.raises(VaekitError) as info:
        load_dataset(str(tmp_path / "m.npz"), support="real")
    assert str(info.value) == (f"{tmp_path / 'm.npz'}: the splits mix uint8 with other dtypes (train uint8, "
                               "test float64); uint8 is divided by 255 and other dtypes are used as given, so save "
                               "every split with one dtype")
    test = rng.random((5, 3))  # float splits (float32 beside float64): one scale, 1, fits both
    np.savez(tmp_path / "f.npz", train=rng.random((20, 3)).astype(np.float32), test=test)
    ds = load_dataset(str(tmp_path / "f.npz"), support="real")
    assert ds.scale == 1.0 and torch.equal(ds.prepare(ds.split("test")), torch.from_numpy(test.astype(np.float32)))


def test_csv_with_a_byte_order_mark_keeps_its_first_row(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("1.5,2\n3,4\n5,6\n7,8.25\n".encode("utf-8-sig"))  # Excel's "CSV UTF-8": BOM, no header
    ds = load_dataset(str(path), support="real")
    assert np.array_equal(rows(ds), np.array([[1.5, 2], [3, 4], [5, 6], [7, 8.25]], np.float32))
    path.write_bytes("a,b\n1.5,2\n3,4\n5,6\n7,8.25\n".encode("utf-8-sig"))  # BOM and a header
    assert rows(load_dataset(str(path), support="real"))[0].tolist() == [1.5, 2.0]


def test_csv_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("1,2\n3,4\n5,6\n7,8\n9,10\n11,12\n13,14\n15,16\n17,18\n19,20\n21,22\n"
                     "caf\xe9,2\n".encode("latin-1"))
    with pytest.raises(VaekitError) as info:
        load_dataset(str(path), support="real")
    assert str(info.value) == f"{path}: line 12 is not UTF-8 text (byte 0xe9); save the CSV as UTF-8"


def test_transparency_dropped_is_said_once_naming_the_file(tmp_path, caplog):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, size=(6, 4, 4, 4)).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[2, 0, 0, 3] = 10  # one pixel of one image is not opaque
    folder = save_images(tmp_path / "rgba", rgba)
    with caplog.at_level(logging.WARNING, logger="vaekit.data"):
        ds = load_dataset(str(folder), support="real")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{folder / '02.png'}: transparency (alpha) dropped; only the colour channels are data"]
    assert ds.shape == (3, 4, 4)
    assert np.array_equal(rows(ds), sorted_rows(rgba[..., :3].transpose(0, 3, 1, 2)))  # the colour kept exactly
    caplog.clear()
    save_images(tmp_path / "opaque", np.where(rgba[..., 3:] < 255, 255, rgba))
    with caplog.at_level(logging.WARNING, logger="vaekit.data"):
        load_dataset(str(tmp_path / "opaque"), support="real")
    assert not caplog.records  # an opaque alpha channel loses nothing: no warning


def test_small_integers_in_a_csv_are_used_as_given(tmp_path, caplog):
    digits = np.random.default_rng(3).integers(0, 17, size=(40, 8))
    digits[0, 0] = 16
    path = tmp_path / "digits.csv"
    path.write_text("\n".join(",".join(map(str, r)) for r in digits) + "\n")
    with caplog.at_level(logging.INFO, logger="vaekit.data"):
        ds = load_dataset(str(path), support="real")
    assert ds.scale == 1.0 and np.array_equal(rows(ds), sorted_rows(digits.astype(np.float32)))
    assert ds.prepare(ds.split("train")).max().item() == 16.0  # not 16/255 = 0.063
    assert [r.getMessage() for r in caplog.records] == ["digits.csv: values used as given, scale 1 (a CSV's numbers)"]
    with pytest.raises(VaekitError, match=r"found range \[0, 16\]; .*8-bit pixels are divided by 255 when stored as"):
        load_dataset(str(path))  # a Bernoulli likelihood: grey levels 0..16 are not probabilities
    stated = load_dataset(str(path), support="unit", scale=16)  # the explicit option: the data's own maximum
    assert stated.scale == 16.0 and stated.prepare(stated.split("train")).max().item() == 1.0
    caplog.clear()
    np.save(tmp_path / "p.npy", digits.astype(np.uint8))
    with caplog.at_level(logging.INFO, logger="vaekit.data"):
        assert load_dataset(str(tmp_path / "p.npy"), support="real").scale == 255.0  # uint8: 8-bit data
    assert [r.getMessage() for r in caplog.records] == ["p.npy: values divided by 255 (uint8 arrays: 8-bit data)"]
    with pytest.raises(VaekitError, match="scale applies to user files; digits is stored with its own scale"):
        load_dataset("digits", scale=16)
    with pytest.raises(VaekitError, match="scale must be a positive number, got 0"):
        load_dataset(str(path), scale=0)


def test_memory_mapped_float64_stays_on_disk_and_converts_per_batch(tmp_path):
    x = np.random.default_rng(4).random((200, 16))
    np.save(tmp_path / "f64.npy", x)
    ds = load_dataset(str(tmp_path / "f64.npy"), support="unit", mmap=True, val_size=20)
    train, val, test = (ds.split(k) for k in ("train", "val", "test"))
    assert train.dtype == torch.float64 and ds.scale == 1.0  # not a float32 copy in memory
    assert val.data_ptr() == train.data_ptr() + 160 * 16 * 8 and test.data_ptr() == train.data_ptr() + 180 * 16 * 8
    assert torch.equal(ds.prepare(train[5:9]), torch.from_numpy(x[5:9].astype(np.float32)))  # one batch, converted
    static = load_dataset(str(tmp_path / "f64.npy"), binarize="static", mmap=True, val_size=20)
    g = torch.Generator().manual_seed(0)  # the same draws as one call per split over float32 probabilities
    expected = {k: torch.bernoulli(torch.from_numpy(x[s].astype(np.float32)), generator=g).to(torch.uint8)
                for k, s in (("train", slice(0, 160)), ("test", slice(180, 200)), ("val", slice(160, 180)))}
    assert list(static.splits) == ["train", "test", "val"]
    assert all(torch.equal(static.split(k), expected[k]) for k in expected)


def test_npz_labels_must_be_one_whole_number_per_example(tmp_path):
    x = np.random.default_rng(5).random((20, 3))
    np.savez(tmp_path / "short.npz", x=x, y=np.arange(10))
    with pytest.raises(VaekitError) as info:
        load_dataset(str(tmp_path / "short.npz"), support="real")
    assert str(info.value) == (f"{tmp_path / 'short.npz'} [y]: (10,) labels for the 20 examples of [x]; "
                               "give one label per example, shape (20,)")
    np.savez(tmp_path / "words.npz", x=x, y=np.array(["cat", "dog"] * 10))
    with pytest.raises(VaekitError) as info:
        load_dataset(str(tmp_path / "words.npz"), support="real")
    assert str(info.value) == (f"{tmp_path / 'words.npz'} [y]: labels must be whole numbers, one per example; "
                               "got dtype <U3")
    np.savez(tmp_path / "ok.npz", x=x, y=np.arange(20.0) % 3)  # whole floats are labels
    ds = load_dataset(str(tmp_path / "ok.npz"), support="real")
    assert ds.labels["train"].dtype == torch.int64
    assert torch.cat(list(ds.labels.values())).bincount().tolist() == [7, 7, 6]


def test_png_claiming_30000_by_30000_pixels_is_refused_before_decoding(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bomb.png").write_bytes(png_claiming(30000, 30000))
    with pytest.raises(VaekitError) as info:
        load_dataset(str(tmp_path / "imgs"))
    assert str(info.value) == (f"{tmp_path / 'imgs' / 'bomb.png'}: the image claims 30000×30000 = 900,000,000 pixels, "
                               "more than the 16,777,216 an image may have (a corrupt file or a decompression bomb); "
                               "not decoded")


def test_test_split_needs_two_examples(tmp_path):
    rng = np.random.default_rng(6)
    np.savez(tmp_path / "one.npz", train=rng.random((10, 3)), test=rng.random((1, 3)))
    with pytest.raises(VaekitError) as info:
        load_dataset(str(tmp_path / "one.npz"), support="real")
    assert str(info.value) == (f"{tmp_path / 'one.npz'} [test]: 1 example; a test split needs at least 2 (its standard "
                               "error, active units and the report's pictures compare examples)")
    np.save(tmp_path / "few.npy", rng.random((12, 3)))  # 10% of 12 is 1: the held-out test takes 2
    for mmap in (False, True):
        ds = load_dataset(str(tmp_path / "few.npy"), support="real", mmap=mmap)
        assert {k: len(v) for k, v in ds.splits.items()} == {"train": 9, "test": 2, "val": 1}
    np.save(tmp_path / "three.npy", rng.random((3, 3)))
    with pytest.raises(VaekitError, match="need at least 4 examples to split into train, val and test, got 3"):
        load_dataset(str(tmp_path / "three.npy"), support="real")


def test_shared_data_tests_skip_with_a_reason_when_the_folder_is_absent(tmp_path):
    """Point the shared data folder at nothing: every test that needs it skips, naming it; none fails."""
    absent = tmp_path / "nothing"
    tests = ["tests/test_mnist.py", "tests/test_benchmarks.py", "tests/test_data.py::test_frey_faces_splits_and_pixels",
             "tests/test_errors.py::test_docs_match",
             "tests/test_errors.py::test_bad_input_gets_one_line[a truncated IDX file (MD5 mismatch)]"]
    env = {**os.environ, "VAEKIT_DATA": str(absent)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests],
                         check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]  # 0: nothing failed
    skipped = re.findall(r"^SKIPPED \[(\d+)\] (\S+?):\d+: (.*)$", out.stdout, re.MULTILINE)
    by_file = {}
    for n, file, reason in skipped:
        assert str(absent) in reason and "not found" in reason, reason
        by_file[Path(file).name] = by_file.get(Path(file).name, 0) + int(n)
    assert by_file == {"test_mnist.py": 5, "test_benchmarks.py": 1, "test_data.py": 1, "test_errors.py": 2}, out.stdout
    assert not absent.exists()
