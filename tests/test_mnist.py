"""MNIST-family loaders: real files (checked against published facts), corruption, downloads, data root."""

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.data import load_dataset, mnist
from vaekit.data.mnist import data_root, load_mnist_family, read_amat, read_idx
from vaekit.errors import VaekitError

# The verified data lives beside the repository (CI clones it to ../shared), not inside it, or where
# $VAEKIT_DATA says (as for the benchmarks); a test that needs one of its folders skips without it.
SHARED = Path(os.environ.get("VAEKIT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def needs(folder: str):
    return pytest.mark.skipif(not (SHARED / folder).is_dir(), reason=f"{SHARED / folder} not found (shared data)")


MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture(scope="module")
def real_mnist():
    return load_mnist_family("mnist", data_dir=SHARED, download=False)


@needs("mnist")
def test_mnist_matches_published_facts(real_mnist):
    splits, labels = real_mnist["splits"], real_mnist["labels"]
    assert real_mnist["shape"] == (1, 28, 28) and real_mnist["scale"] == 255.0
    assert splits["train"].shape == (60000, 784) and splits["test"].shape == (10000, 784)
    assert splits["train"].dtype == torch.uint8 and labels["train"].dtype == torch.int64
    assert splits["train"].sum().item() == 1567298545
    assert splits["test"].sum().item() == 264923200
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert labels["train"].bincount().tolist() == counts
    assert labels["test"].shape == (10000,)


@needs("fashion-mnist")
def test_fashion_mnist_is_balanced():
    data = load_mnist_family("fashion-mnist", data_dir=SHARED, download=False)
    assert data["splits"]["train"].shape == (60000, 784) and data["splits"]["test"].shape == (10000, 784)
    assert data["labels"]["train"].bincount().tolist() == [6000] * 10
    assert data["labels"]["test"].bincount().tolist() == [1000] * 10
    assert data["scale"] == 255.0


@needs("binarized_mnist")
def test_binarized_mnist_splits_and_values():
    data = load_mnist_family("binarized-mnist", data_dir=SHARED, download=False)
    shapes = {k: tuple(v.shape) for k, v in data["splits"].items()}
    assert shapes == {"train": (50000, 784), "val": (10000, 784), "test": (10000, 784)}
    assert data["labels"] == {} and data["scale"] == 1.0
    for x in data["splits"].values():
        assert x.dtype == torch.uint8 and x.min().item() == 0 and x.max().item() == 1  # uint8: nothing between


def _mnist_copy(tmp_path, flip=None):
    """tmp_path/mnist with the shared files (symlinked: cheap), except `flip`, copied with one byte changed."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_FILES:
        if name == flip:
            raw = bytearray((SHARED / "mnist" / name).read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            (folder / name).write_bytes(raw)
        else:
            (folder / name).symlink_to(SHARED / "mnist" / name)
    return folder


@needs("mnist")
def test_md5_mismatch_names_file_and_advises_redownload(tmp_path):
    folder = _mnist_copy(tmp_path, flip="t10k-labels-idx1-ubyte.gz")
    with pytest.raises(VaekitError, match="md5") as info:
        load_mnist_family("mnist", data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in msg
    assert "ec29112dd5afa0611ce80d1b7f02629c" in msg and "delete" in msg


def test_each_file_is_hashed_once_per_process(tmp_path, monkeypatch):
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    path.parent.mkdir()
    path.write_bytes(b"labels")
    monkeypatch.setitem(mnist._MD5, "mnist/t10k-labels-idx1-ubyte.gz", mnist._md5(path))
    monkeypatch.setattr(mnist, "_verified", set())
    calls = []
    real_md5 = mnist._md5
    monkeypatch.setattr(mnist, "_md5", lambda p: calls.append(p) or real_md5(p))
    mnist._verify(path)
    mnist._verify(path)
    assert len(calls) == 1
    path.write_bytes(b"labelz!")  # rewritten (size changes): hashed again, and now it is wrong
    with pytest.raises(VaekitError, match="md5"):
        mnist._verify(path)
    assert len(calls) == 2


def _idx(magic, dims, payload):
    return gzip.compress(np.array([magic, *dims], ">u4").tobytes() + payload, mtime=0)


@pytest.mark.parametrize(
    "content, problem",
    [
        (_idx(0x801, [5], bytes(3)), "truncated IDX data"),  # header promises 5 labels, 3 present
        (_idx(0x801, [5], bytes(6)), "bytes after"),
        (_idx(0x803, [5], bytes(5)), "magic number 0x00000803"),  # images where labels are expected
        (gzip.compress(b"\0\0", mtime=0), "truncated IDX header"),
        (_idx(0x801, [5], bytes(5))[:-12], "corrupt or truncated gzip"),  # gzip stream cut off
        (b"not gzip at all", "corrupt or truncated gzip"),
    ],
)
def test_read_idx_rejects_corruption(tmp_path, content, problem):
    path = tmp_path / "labels.gz"
    path.write_bytes(content)
    with pytest.raises(VaekitError, match=problem) as info:
        read_idx(path, ndim=1)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_idx_reads_images(tmp_path):
    pixels = np.arange(2 * 28 * 28, dtype=np.uint64).astype(np.uint8)
    path = tmp_path / "images.gz"
    path.write_bytes(_idx(0x803, [2, 28, 28], pixels.tobytes()))
    images = read_idx(path, ndim=3)
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images.reshape(-1), pixels)


def _amat(rows):
    return "".join(" ".join(str(v) for v in row) + "\n" for row in rows).encode()


def test_read_amat_plain_and_gzip(tmp_path):
    rows = np.random.default_rng(0).integers(0, 2, size=(3, 784))
    (tmp_path / "a.amat").write_bytes(_amat(rows))
    (tmp_path / "a.amat.gz").write_bytes(gzip.compress(_amat(rows)))
    for name in ("a.amat", "a.amat.gz"):
        x = read_amat(tmp_path / name)
        assert x.dtype == np.uint8 and np.array_equal(x, rows)


@pytest.mark.parametrize(
    "mutate, line",
    [
        (lambda text: text[: 2 * 1568 + 10] + b"2" + text[2 * 1568 + 11 :], 3),  # a "2" on line 3
        (lambda text: text.replace(b"\n", b" 1\n", 1), 1),  # 785 values on line 1
        (lambda text: text.replace(b"\n", b" 1\n", 1).replace(b"\n0 ", b"\n", 1), 1),  # 785 then 783: same size
        (lambda text: text.replace(b" ", b"  ", 1), 1),  # a double space
        (lambda text: text[:-1], 4),  # last line has no "\n"
    ],
)
def test_read_amat_names_the_bad_line(tmp_path, mutate, line):
    rows = np.zeros((4, 784), dtype=int)
    path = tmp_path / "bad.amat"
    path.write_bytes(mutate(_amat(rows)))
    with pytest.raises(VaekitError, match=f"line {line} is not 784") as info:
        read_amat(path)
    assert str(path) in str(info.value)


def test_binarized_accepts_uncompressed_amat(tmp_path, monkeypatch):
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    for n, word in enumerate(["train", "valid", "test"], start=1):
        path = folder / f"binarized_mnist_{word}.amat"
        path.write_bytes(_amat(np.ones((n, 784), dtype=int)))
        monkeypatch.setitem(mnist._MD5, f"binarized_mnist/{path.name}", mnist._md5(path))
    data = load_mnist_family("binarized-mnist", data_dir=tmp_path, download=False)
    assert {k: v.shape[0] for k, v in data["splits"].items()} == {"train": 1, "val": 2, "test": 3}
    assert data["splits"]["test"].sum().item() == 3 * 784


def test_offline_gives_one_message_with_files_urls_and_folder(tmp_path, monkeypatch):
    tried = []

    def offline(url, dest):
        tried.append(url)
        raise OSError("network unreachable")

    monkeypatch.setattr(mnist, "_fetch", offline)
    with pytest.raises(VaekitError) as info:
        load_mnist_family("mnist", data_dir=tmp_path)
    msg = str(info.value)
    for name in MNIST_FILES:
        assert name in msg and f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}" in msg
    assert "http://yann.lecun.com/exdb/mnist/" in msg and str(tmp_path / "mnist") in msg
    assert len(tried) == 2  # both mirrors for the first file, then it stops: offline
    assert list(tmp_path.iterdir()) == []  # no empty mnist/ folder left behind


def test_missing_binarized_with_download_off_points_to_toronto(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_fetch", lambda url, dest: pytest.fail("download=False must not fetch"))
    with pytest.raises(VaekitError, match="download=False") as info:
        load_mnist_family("binarized-mnist", data_dir=tmp_path, download=False)
    url = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_valid.amat"
    assert url in str(info.value) and str(tmp_path / "binarized_mnist") in str(info.value)


@needs("mnist")
def test_download_saves_verified_files(tmp_path, monkeypatch):
    urls = []

    def copy_shared(url, dest):
        urls.append(url)
        shutil.copyfile(SHARED / "mnist" / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(mnist, "_fetch", copy_shared)
    data = load_mnist_family("mnist", data_dir=tmp_path)
    assert data["splits"]["test"].sum().item() == 264923200
    assert urls == [f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}" for name in MNIST_FILES]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(MNIST_FILES)


def test_download_with_wrong_bytes_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_fetch", lambda url, dest: Path(dest).write_bytes(b"<html>moved</html>"))
    with pytest.raises(VaekitError, match="md5") as info:
        load_mnist_family("fashion-mnist", data_dir=tmp_path)
    assert "8d4fb7e6c68d591d4c3dfef9ec88bf0d" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither a file nor an empty fashion-mnist/ folder


def _offline(url, dest):
    raise OSError("network unreachable")


def test_failed_download_into_the_default_root_leaves_no_folder(tmp_path, monkeypatch):
    """The data root itself did not exist (a first run offline): neither it nor mnist/ is left behind."""
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "cache" / "vaekit"))
    monkeypatch.setattr(mnist, "_fetch", _offline)
    with pytest.raises(VaekitError, match="could not download them") as info:
        load_dataset("mnist")
    assert f"put them in {tmp_path / 'cache' / 'vaekit' / 'mnist'}" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_partly_failed_download_keeps_the_files_it_saved(tmp_path, monkeypatch):
    def first_only(url, dest):
        if "train-images" not in url:
            raise OSError("network unreachable")
        Path(dest).write_bytes(b"images")

    monkeypatch.setitem(mnist._MD5, "mnist/train-images-idx3-ubyte.gz", hashlib.md5(b"images").hexdigest())
    monkeypatch.setattr(mnist, "_fetch", first_only)
    with pytest.raises(VaekitError, match="missing train-labels-idx1-ubyte.gz, t10k-images"):
        load_mnist_family("mnist", data_dir=tmp_path / "root")
    assert [p.name for p in (tmp_path / "root" / "mnist").iterdir()] == ["train-images-idx3-ubyte.gz"]


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VAEKIT_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert data_root(None) == tmp_path / "home" / ".cache" / "vaekit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root(None) == tmp_path / "xdg" / "vaekit"
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "env"))
    assert data_root(None) == tmp_path / "env"
    assert data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(VaekitError, match="binarized-mnist"):
        load_mnist_family("cifar10", data_dir=SHARED)
