"""Generated inputs to the config parser and the file loaders: a valid result or our own error, never
another exception."""

import io
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaekit import Config
from vaekit.data import SUPPORTS, load_dataset
from vaekit.data.mnist import read_amat, read_idx
from vaekit.errors import VaekitError

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,  # CI sees the same cases every run
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
known = {
    "model": ["data_shape", "latent_dim", "hidden", "decoder_hidden", "activation", "likelihood", "prior", "arch"],
    "data": ["dataset", "binarize", "split_seed", "val_size"],
    "train": ["epochs", "batch_size", "lr", "seed", "objective", "eval_k", "precision"],
}
sections = st.fixed_dictionaries({}, optional={
    name: st.dictionaries(st.sampled_from(keys + ["bogus"]), values, max_size=4) for name, keys in known.items()
})


@SETTINGS
@given(st.one_of(sections, st.dictionaries(st.text(max_size=6), values, max_size=3)))
def test_config_parsing_never_escapes(d):
    try:
        cfg = Config.from_dict(d)
    except VaekitError:
        return
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # whatever parses round-trips


arrays = st.one_of(
    st.builds(lambda shape, fill: np.full(shape, fill), st.lists(st.integers(0, 5), max_size=3).map(tuple),
              st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda shape: np.zeros(shape, dtype=np.uint8), st.lists(st.integers(0, 5), max_size=3).map(tuple)),
    st.builds(lambda n: np.array(["x"] * n), st.integers(0, 4)),
)


@SETTINGS
@given(arrays, st.sampled_from(SUPPORTS), st.sampled_from(["auto", "dynamic", "static", "none"]))
def test_array_loader_never_escapes(tmp_path_factory, arr, support, binarize):
    path = tmp_path_factory.mktemp("fuzz") / "a.npy"
    np.save(path, arr)
    try:
        ds = load_dataset(str(path), binarize=binarize, support=support)
    except VaekitError:
        return
    assert sum(v.shape[0] for v in ds.splits.values()) == arr.shape[0]


@SETTINGS
@given(st.binary(max_size=300))
def test_npy_bytes_never_escape(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "b.npy"
    buf = io.BytesIO()
    np.save(buf, np.zeros((6, 4), dtype=np.float32))
    path.write_bytes(buf.getvalue()[: len(data) % 250] + data)  # a real header cut anywhere, then noise
    try:
        load_dataset(str(path), binarize="none", support="real")
    except VaekitError:
        pass


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from([1, 3]), st.booleans())
def test_idx_and_amat_parsers_never_escape(tmp_path_factory, data, ndim, compress):
    import gzip

    d = tmp_path_factory.mktemp("fuzz")
    header = bytes([0, 0, 8, ndim]) + (4).to_bytes(4, "big") * ndim
    payload = header + data if len(data) % 2 else data
    (d / "x.gz").write_bytes(gzip.compress(payload, mtime=0) if compress else payload)
    try:
        read_idx(d / "x.gz", ndim)
    except VaekitError:
        pass
    (d / "x.amat").write_bytes(data)
    try:
        read_amat(d / "x.amat")
    except VaekitError:
        pass
