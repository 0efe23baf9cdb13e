"""The sixth held-out attack's faults that the last session left (issue 27), each made for real: a Parquet column
with no name, pandas' index column, a table that needs more memory than is left, decode's labels (out of range,
given to a model without labels, a `label` column in a latents CSV). Each is one line or a warning now."""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trust_attack5 import one_line

import vaekit
from vaekit.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("attack6")
    common = ["--quiet", "train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "16"]
    assert main([*common, "--out", str(base / "plain")]) == 0
    assert main([*common, "--out", str(base / "cond"), "--condition", "label"]) == 0
    return base


def test_a_parquet_column_with_no_name_is_refused_as_a_csvs_is(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from vaekit.data.table_files import read_table

    pq.write_table(pa.table({"x": [0.5, 1.5, 2.5], "": [1.0, 2.0, 3.0]}), tmp_path / "t.parquet")
    with pytest.raises(vaekit.VaekitError, match=r"t.parquet: column 2 of the header has no name$"):
        read_table(tmp_path / "t.parquet")


def test_pandas_index_column_is_refused_with_the_hint_to_leave_it_out(tmp_path):
    pd = pytest.importorskip("pandas")
    from vaekit.data.table_files import read_table

    pd.DataFrame({"age": [1.0, 2.0, 3.5], "c": ["a", "b", "a"]}).to_csv(tmp_path / "t.csv")  # header ",age,c"
    with pytest.raises(vaekit.VaekitError, match=r"t.csv: column 1 of the header has no name \(pandas' index\? write the "
                       r"table with index=False\)$"):
        read_table(tmp_path / "t.csv")


def test_a_table_that_needs_more_memory_than_is_left_is_one_line_naming_the_file(tmp_path):
    """Under the cell cap a table may still need more memory than a machine has (Python objects per cell); the
    out-of-memory advice named --k and --draws. A real limit: the address space capped a little above the process's."""
    pytest.importorskip("resource")
    rows = "\n".join(f"{i * 0.5},{'abc'[i % 3]},{i % 7}" for i in range(400_000))
    (tmp_path / "big.csv").write_text("x,c,n\n" + rows + "\n")
    script = f"""
import resource, sys
import torch

import vaekit
from vaekit.data.table_files import read_table
used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 60 * 2**20, resource.RLIM_INFINITY))
try:
    read_table({str(tmp_path / 'big.csv')!r})
    print("read")
except vaekit.VaekitError as e:
    print(e)
"""
    if not Path("/proc/self/statm").exists():
        pytest.skip("the address space is measured from /proc (Linux)")
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == (f"{tmp_path / 'big.csv'}: reading the table needs more memory than this machine has "
                                   "left; split it, or keep the columns the model needs"), (done.stdout, done.stderr[-500:])


def test_decode_label_out_of_range_names_the_flag(runs, tmp_path, capsys):
    np.save(tmp_path / "z.npy", np.zeros((3, 2), np.float32))
    said = one_line(capsys, "decode", runs / "cond", "--latents", tmp_path / "z.npy", "--label", 10, "--out", tmp_path / "x.npy")
    assert said == "--label 10: the model's labels are 0…9"
    said = one_line(capsys, "decode", runs / "plain", "--latents", tmp_path / "z.npy", "--label", 1, "--out", tmp_path / "x.npy")
    assert said == "--label 1: this model is not conditioned on labels (train with --condition label)"
    assert not (tmp_path / "x.npy").exists()


def test_labels_beside_latents_given_to_a_model_without_labels_are_said_to_be_unused(runs, tmp_path, caplog):
    z = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    np.savez(tmp_path / "z.npz", mean=z, labels=np.arange(4))
    np.save(tmp_path / "z.npy", z)
    with caplog.at_level(logging.INFO):  # info: vaekit's own encode → decode round trip writes labels
        assert main(["--quiet", "decode", str(runs / "plain"), "--latents", str(tmp_path / "z.npz"), "--out", str(tmp_path / "a.npy")]) == 0
    assert f"{tmp_path / 'z.npz'}: its labels are not used: {runs / 'plain'} is not conditioned on labels" in caplog.text
    assert main(["--quiet", "decode", str(runs / "plain"), "--latents", str(tmp_path / "z.npy"), "--out", str(tmp_path / "b.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_a_latents_csv_with_a_label_column_decodes_as_the_npz(runs, tmp_path, capsys):
    """`z1,z2,label` was refused as a [N, 3] shape, and `z1,z2,label,y` read as means and standard deviations."""
    z = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    labels = np.array([3, 1, 4, 1, 5])
    (tmp_path / "z.csv").write_text("z1,z2,label\n" + "".join(f"{a!r},{b!r},{y}\n" for (a, b), y in zip(z.tolist(), labels)))
    np.savez(tmp_path / "z.npz", mean=z, labels=labels)
    for name in ("z.csv", "z.npz"):
        assert main(["--quiet", "decode", str(runs / "cond"), "--latents", str(tmp_path / name), "--out", str(tmp_path / f"{name}.npy")]) == 0
    decoded = np.load(tmp_path / "z.csv.npy")
    assert np.array_equal(decoded, np.load(tmp_path / "z.npz.npy"))
    assert not np.array_equal(decoded[0], decoded[1])  # labels 3 and 1: the labels reached the decoder
    (tmp_path / "w.csv").write_text("z1,z2,label,y\n" + "".join(f"{a!r},{b!r},{y},0.5\n" for (a, b), y in
                                                                 zip(z.tolist(), labels)))
    said = one_line(capsys, "decode", runs / "cond", "--latents", tmp_path / "w.csv", "--out", tmp_path / "w.npy")
    assert said.startswith(f"{tmp_path / 'w.csv'}: expected latents of shape [N, 2]") and "got [5, 3]" in said


def fit_model():
    torch.manual_seed(0)
    return vaekit.VAE(data_dim=10, latent_dim=2, hidden=(16,))


X = (torch.rand(60, 10, generator=torch.Generator().manual_seed(1)) > 0.5).float()


def test_fit_resume_continues_on_the_same_tensors_and_refuses_others_in_its_own_words(tmp_path):
    """vaekit.fit(…, resume=True) continued on other tensors silently (no digest of the data was kept), and its
    refusals named the CLI's --resume and --out."""
    whole = vaekit.fit(fit_model(), X, out=tmp_path / "whole", epochs=2, progress=False)
    vaekit.fit(fit_model(), X, out=tmp_path / "part", epochs=1, progress=False)
    resumed = vaekit.fit(fit_model(), X, out=tmp_path / "part", epochs=2, resume=True, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()))
    other = X.flip(0)
    with pytest.raises(vaekit.VaekitError, match=r"^resume=True: \[data\] digest = '[0-9a-f]{64}' differs from the "
                       r"run's '[0-9a-f]{64}', and it cannot change on resume=True; train a new run into another out$"):
        vaekit.fit(fit_model(), other, out=tmp_path / "part", epochs=3, resume=True, progress=False)
    with pytest.raises(vaekit.VaekitError, match=r"spectral_reg = 0.5 differs .* on resume=True; train a new run into "
                       r"another out$"):
        vaekit.fit(fit_model(), X, out=tmp_path / "part", epochs=3, resume=True, spectral_reg=0.5, progress=False)
    with pytest.raises(vaekit.VaekitError, match=r"already holds a run; pass resume=True to continue it or choose "
                       r"another out$"):
        vaekit.fit(fit_model(), X, out=tmp_path / "part", epochs=3, progress=False)
