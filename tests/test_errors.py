"""Every bad input gets one line naming the problem: the matrix of docs/errors.md, row by row.

Each row runs through the CLI in-process: exit status 2, one line on stderr starting "vaekit: error:",
no traceback. The table in docs/errors.md is generated from these rows (temporary paths shown as
DIR); `python tests/test_errors.py` rewrites it, and `test_docs_match` fails when the two drift.
"""

import gzip
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_trust import png_claiming

from vaekit.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
# The verified data beside the repository (or where $VAEKIT_DATA says); rows that need it skip without it.
SHARED = Path(os.environ.get("VAEKIT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason=f"{SHARED / 'mnist'} not found (shared data)")
SHARED_ROWS = {"a truncated IDX file (MD5 mismatch)"}  # built from SHARED's files


def npz(d, name, **arrays):
    np.savez(d / name, **arrays)
    return str(d / name)


def npy(d, name, arr):
    np.save(d / name, arr)
    return str(d / name)


def write_bytes(d, name, data):
    (d / name).write_bytes(data)
    return str(d / name)


def bomb(d):
    """A folder with one small PNG whose header claims 30000 × 30000 pixels."""
    (d / "imgs").mkdir()
    write_bytes(d / "imgs", "bomb.png", png_claiming(30000, 30000))
    return str(d / "imgs")


def mixed_depths(d):
    """Two 8-bit grey PNGs, then a 16-bit one."""
    from PIL import Image

    images(d, [(5, 5)] * 2)
    Image.fromarray(np.zeros((5, 5), dtype=np.uint16)).save(d / "imgs" / "2.png")
    return str(d / "imgs")


def parquet_twice(d):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_arrays([pa.array([1.0, 2.0, 3.0]), pa.array(["x", "y", "x"])], names=["a", "a"]),
                   d / "t.parquet")
    return str(d / "t.parquet")


def run_dir(d):
    """A trained 1-epoch run to break in various ways (trained once, copied per row)."""
    src = d.parent / "trained"
    if not src.exists():
        assert main(["--quiet", "train", "--out", str(src), "--latent-dim", "2", "--hidden", "16", "--epochs", "1"]) == 0
    shutil.copytree(src, d / "run")
    return d / "run"


def standardized(d, **tensors):
    """A 1-epoch Gaussian VAE of wine, standardized, whose saved statistics are then replaced by `tensors`."""
    from safetensors.torch import save_file

    src = d.parent / "standardized"
    if not src.exists():
        assert main(["--quiet", "train", "--out", str(src), "--dataset", "wine", "--likelihood", "gaussian-learned",
                     "--standardize", "--latent-dim", "2", "--hidden", "16", "--epochs", "1"]) == 0
    shutil.copytree(src, d / "run")
    save_file(tensors, d / "run" / "standardization.safetensors")
    return str(d / "run")


def vamp_iaf_run(d):
    """A 1-epoch VampPrior over an IAF's Q: a p(z) that is a mixture of flows, not of Gaussians."""
    assert main(["--quiet", "train", "--out", str(d / "vr"), "--latent-dim", "2", "--hidden", "16", "--epochs", "1",
                 "--prior", "vampprior", "--prior-components", "3", "--posterior", "iaf"]) == 0
    return str(d / "vr")


def dangling(d):
    (d / "link").symlink_to(d / "gone")
    return str(d / "link")


def fifo(d, name):
    """A FIFO: a reader that opens it waits for a writer for ever."""
    os.mkfifo(d / name)
    return str(d / name)


def appended(run, name, line):
    (run / name).write_text((run / name).read_text() + line + "\n")
    return run


def edit_config(run, fn):
    cfg = json.loads((run / "config.json").read_text())
    fn(cfg)
    (run / "config.json").write_text(json.dumps(cfg))
    return str(run)


def edit_config_path(run, fn):
    edit_config(run, fn)
    return run


def truncated_npy(d):
    np.save(d / "t.npy", np.zeros((100, 10), dtype=np.float32))
    (d / "t.npy").write_bytes((d / "t.npy").read_bytes()[:500])
    return str(d / "t.npy")


def images(d, sizes, extra=None):
    from PIL import Image

    (d / "imgs").mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.zeros((h, w), dtype=np.uint8)).save(d / "imgs" / f"{i}.png")
    if extra:
        (d / "imgs" / extra).write_text("not an image")
    return str(d / "imgs")


def broken_mnist(d):
    root = d / "data"
    shutil.copytree(SHARED / "mnist", root / "mnist")
    path = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-100])
    return str(root)


def bad_amat(d):
    root = d / "data" / "binarized_mnist"
    root.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (root / f"binarized_mnist_{split}.amat.gz").write_bytes(gzip.compress(b"0 1 2\n", mtime=0))
    return str(d / "data")


TRAIN = ["train", "--out", "{d}/out", "--epochs", "1"]
MIXED = [*TRAIN, "--likelihood", "mixed"]
# (area, the input, argv builder, fragment the message must hold)
ROWS = [
    ("data", "example shape does not match the model", lambda d: [*TRAIN, "--config", write(d, "c.json", {"model": {"data_shape": [1, 4, 4]}})], "model expects data of shape (1, 4, 4) but digits has (1, 8, 8)"),
    ("data", "NaN or Inf values", lambda d: [*TRAIN, "--dataset", npy(d, "nan.npy", np.full((10, 4), np.nan))], "contains NaN or Inf"),
    ("data", "values outside [0, 1] for a Bernoulli likelihood", lambda d: [*TRAIN, "--dataset", npy(d, "big.npy", np.full((10, 4), 2.0))], "values must lie in [0, 1]"),
    ("data", "grey levels with a Bernoulli likelihood and no binarization", lambda d: [*TRAIN, "--binarize", "none"], "Bernoulli likelihood needs 0/1 data"),
    ("data", "an empty dataset", lambda d: [*TRAIN, "--dataset", npy(d, "empty.npy", np.zeros((0, 4)))], "the dataset is empty"),
    ("data", "a non-numeric dtype", lambda d: [*TRAIN, "--dataset", npy(d, "s.npy", np.array([["a", "b"]] * 5))], "expected numeric data"),
    ("data", "a truncated .npy", lambda d: [*TRAIN, "--dataset", truncated_npy(d)], "the file is cut short or damaged"),
    ("data", "a truncated IDX file (MD5 mismatch)", lambda d: [*TRAIN, "--dataset", "mnist", "--data-dir", broken_mnist(d)], "md5"),
    ("data", "a corrupt .amat file", lambda d: [*TRAIN, "--dataset", "binarized-mnist", "--data-dir", bad_amat(d)], "md5"),
    ("data", "an image folder with a non-image file", lambda d: [*TRAIN, "--dataset", images(d, [(5, 5)] * 3, "notes.txt")], "not a PNG or JPEG image"),
    ("data", "an image folder with mixed sizes", lambda d: [*TRAIN, "--dataset", images(d, [(5, 5), (5, 5), (6, 5)])], "differs from"),
    ("data", "a missing data file", lambda d: [*TRAIN, "--dataset", "{d}/nothing.npy"], "no such file or directory"),
    ("data", "a .npz mixing uint8 and float splits", lambda d: [*TRAIN, "--dataset", npz(d, "m.npz", train=np.zeros((20, 3), np.uint8), test=np.zeros((5, 3)))], "the splits mix uint8 with other dtypes (train uint8, test float64)"),
    ("data", "a .npz with fewer labels y than examples", lambda d: [*TRAIN, "--dataset", npz(d, "y.npz", x=np.zeros((20, 3)), y=np.arange(10))], "[y]: (10,) labels for the 20 examples of [x]"),
    ("data", "a .npz whose labels y are strings", lambda d: [*TRAIN, "--dataset", npz(d, "y.npz", x=np.zeros((20, 3)), y=np.array(["a"] * 20))], "[y]: labels must be whole numbers, one per example; got dtype <U1"),
    ("data", "a CSV that is not UTF-8", lambda d: [*TRAIN, "--dataset", write_bytes(d, "l.csv", "x,y\n1,2\ncaf\xe9,3\n".encode("latin-1"))], "l.csv: line 3 is not UTF-8 text (byte 0xe9)"),
    ("data", "a PNG claiming 30000×30000 pixels (decompression bomb)", lambda d: [*TRAIN, "--dataset", bomb(d)], "bomb.png: the image claims 30000×30000 = 900,000,000 pixels"),
    ("data", "an image folder mixing 8-bit and 16-bit images", lambda d: [*TRAIN, "--dataset", mixed_depths(d)], "2.png: a 16-bit image, but 0.png is 8-bit"),
    ("table", "a table row with a cell too few (--likelihood mixed)", lambda d: [*MIXED, "--dataset", write_text(d, "t.csv", "a,b\n1,x\n2\n3,y\n")], "t.csv: line 3 has 1 cells; the header names 2 columns"),
    ("table", "a numeric cell in a positive column that is not > 0", lambda d: [*MIXED, "--column-type", "a=positive", "--dataset", write_text(d, "t.csv", "a,b\n1,x\n-2,y\n3,y\n4,x\n")], "t.csv: line 3, column 'a': -2 is not > 0"),
    ("table", "an unknown column kind", lambda d: [*MIXED, "--column-type", "a=normal", "--dataset", write_text(d, "t.csv", "a,b\n1,x\n2,y\n3,y\n4,x\n")], "column 'a': expected a kind (real, positive"),
    ("table", "a table with text given a Gaussian likelihood", lambda d: [*TRAIN, "--likelihood", "gaussian", "--dataset", write_text(d, "t.csv", "a,b\n1,x\n2,y\n3,y\n4,x\n")], "a table with text or missing cells takes --likelihood mixed"),
    ("table", "penguins without the mixed likelihood", lambda d: [*TRAIN, "--likelihood", "gaussian", "--dataset", "penguins"], "penguins: a table of mixed columns; it takes --likelihood mixed"),
    ("samplers", "sample from a sampler never fitted", lambda d: ["sample", str(run_dir(d)), "--sampler", "gmm"], "samplers/gmm.safetensors: missing; fit it first: vaekit fit-sampler DIR/run --sampler gmm"),
    ("samplers", "a mixture of no components", lambda d: ["fit-sampler", str(run_dir(d)), "--sampler", "gmm", "--components", "0"], "--components must be a number of mixture components ≥ 1, got 0"),
    ("samplers", "sample quality of 2 samples", lambda d: ["evaluate", str(run_dir(d)), "--samples", "2", "--k", "2"], "--samples 2: sample quality needs at least 4 samples"),
    ("reproduce", "an unknown recipe", lambda d: ["reproduce", "vamprior", "--out", "{d}/r"], "no recipe 'vamprior'; vaekit reproduce --list shows them"),
    ("table", "impute with a run that is not of a table", lambda d: ["impute", str(run_dir(d)), "--data", write_text(d, "t.csv", "a\n1\n"), "--out", "{d}/f.csv"], "not a run of a table (train with --likelihood mixed"),
    ("table", "a column beyond what a run stores (masses of 5e19)", lambda d: [*MIXED, "--dataset", write_text(d, "t.csv", "a,b\n5e19,x\n6e19,y\n4e19,y\n5.5e19,x\n")], "column 'a': values reach"),
    ("table", "a Parquet file naming a column twice", lambda d: [*MIXED, "--dataset", parquet_twice(d)], "the header names column 'a' twice"),
    ("table", "--likelihood mixed with the VampPrior", lambda d: [*MIXED, "--prior", "vampprior", "--dataset", write_text(d, "t.csv", "a,b\n1,x\n2,y\n3,y\n4,x\n")], "--prior vampprior learns pseudo-inputs in the data's space"),
    ("data", "a CSV label of 10¹² (a one-hot of 10¹² classes)", lambda d: [*TRAIN, "--dataset", write_text(d, "l.csv", "a,b,label\n1,2,0\n3,4,1\n5,6,1e12\n7,8,0\n9,1,1\n")], "labels are class indices 0…99999 (0…999 for a conditional VAE); the label of example 2 is 1e+12"),
    ("data", "a label of 1e20 (once reported as −2⁶³)", lambda d: [*TRAIN, "--dataset", npz(d, "y.npz", x=np.zeros((20, 3)), y=np.full(20, 1e20))], "labels are class indices 0…99999 (0…999 for a conditional VAE); the label of example 0 is 1e+20"),
    ("data", "a test split of one example", lambda d: [*TRAIN, "--dataset", npz(d, "t.npz", train=np.zeros((10, 3)), test=np.zeros((1, 3)))], "[test]: 1 example; a test split needs at least 2"),
    ("config", "an unknown key", lambda d: [*TRAIN, "--config", write(d, "c.json", {"train": {"batchsize": 3}})], "unknown key 'batchsize'; did you mean 'batch_size'?"),
    ("config", "a wrong type", lambda d: [*TRAIN, "--config", write(d, "c.json", {"model": {"latent_dim": "two"}})], "latent_dim: expected a list of integers, got 'two'"),
    ("config", "a non-positive latent size", lambda d: [*TRAIN, "--latent-dim", "0"], "--latent-dim must be > 0, got 0"),
    ("config", "a non-positive batch size", lambda d: [*TRAIN, "--batch-size", "-5"], "--batch-size must be > 0, got -5"),
    ("config", "a non-positive learning rate", lambda d: [*TRAIN, "--lr", "0"], "--lr must be > 0, got 0.0"),
    ("config", "a non-positive k", lambda d: ["evaluate", "{d}", "--k", "0"], "--k must be > 0, got 0"),
    ("config", "σ ≤ 0", lambda d: [*TRAIN, "--likelihood", "gaussian", "--sigma", "-1"], "sigma must be >= 1e-06, got -1.0"),
    ("config", "β < 0", lambda d: [*TRAIN, "--beta", "-0.5"], "--beta must be >= 0, got -0.5"),
    ("config", "a setting the chosen part does not read", lambda d: [*TRAIN, "--gamma", "40"], "--gamma is a setting of --objective capacity or factorvae, not of elbo: add --objective capacity or factorvae"),
    ("config", "a misspelt setting of a part", lambda d: [*TRAIN, "--config", write(d, "c.json", {"model": {"prior": {"name": "mog", "component": 5}}})], "prior 'mog' has no setting 'component'; did you mean 'components'?"),
    ("config", "a 0.2 config's flat setting of a part", lambda d: [*TRAIN, "--config", write(d, "c.json", {"train": {"gamma": 40}})], "gamma is a setting of the objective since vaekit 0.3: write it in its table, [train.objective] gamma = …"),
    ("config", "a top-down VAE with a posterior other than diagonal", lambda d: [*TRAIN, "--latent-dim", "2", "--latent-dim", "2", "--inference", "top-down", "--posterior", "iaf"], "--inference top-down) draws every group from the shared path: --posterior must be diagonal, got iaf"),
    ("config", "free bits with the score-function estimator", lambda d: [*TRAIN, "--free-bits", "0.5", "--estimator", "score-function"], "free bits and KL balancing shape the reparameterized gradient"),
    ("config", "an EMA decay of 1 or more", lambda d: [*TRAIN, "--ema", "1"], "ema must be >= 0 and <= 0.99999, got 1.0"),
    ("config", "an unsupported precision", lambda d: [*TRAIN, "--config", write(d, "c.json", {"train": {"precision": "fp16"}})], "precision = 'fp16' is not one of fp32, bf16"),
    ("config", "an unknown device", lambda d: [*TRAIN, "--device", "tpu"], "--device 'tpu': use cpu, cuda, cuda:N or auto"),
    ("config", "invalid TOML", lambda d: [*TRAIN, "--config", write_text(d, "c.toml", "[model\n")], "not valid TOML"),
    ("config", "a --grad-skip below every gradient norm", lambda d: [*TRAIN, "--grad-skip", "1e-6"], "every update of epoch 1 was skipped"),
    ("run", "a missing run directory", lambda d: ["evaluate", "{d}/nowhere"], "no such run directory"),
    ("run", "a missing config.json", lambda d: ["evaluate", str(unlink(run_dir(d), "config.json"))], "config.json: missing"),
    ("run", "a corrupt config.json", lambda d: ["evaluate", str(overwrite(run_dir(d), "config.json", b"{not json"))], "config.json: not valid JSON"),
    ("run", "a truncated model.safetensors", lambda d: ["evaluate", str(truncate(run_dir(d), "model.safetensors"))], "corrupt or truncated safetensors file"),
    ("run", "a checkpoint from a different architecture", lambda d: ["evaluate", edit_config(run_dir(d), lambda c: c["model"].update(hidden=[8]))], "weights do not match the architecture"),
    ("run", "a file from a newer vaekit", lambda d: ["evaluate", edit_config(run_dir(d), lambda c: c["versions"].update(vaekit="99.0"))], "newer than this vaekit"),
    ("run", "a run directory that already holds a run", lambda d: ["train", "--out", str(run_dir(d)), "--epochs", "1"], "already holds a run; pass --resume"),
    ("run", "train --resume on a run vaekit.fit trained on tensors", lambda d: ["train", "--out", edit_config(run_dir(d), lambda c: c["data"].update(dataset="tensors")), "--resume", "--epochs", "2"], "its data were tensors given to vaekit.fit in Python"),
    ("run", "--out a symbolic link to a missing folder", lambda d: ["train", "--out", dangling(d), "--epochs", "1"], "which does not exist: make that folder"),
    ("run", "--init-from a run of another model", lambda d: ["train", "--init-from", str(run_dir(d)), "--hidden", "32", "--out", "{d}/ft"], "its weights fit only its own model"),
    ("run", "--resume with nothing to resume", lambda d: [*TRAIN, "--resume"], "no checkpoint to resume from"),
    ("run", "a train_state.pt whose Adam moment is smaller than its parameter", lambda d: [*RESUME(shrunk_moment(run_dir(d)))], "exp_avg has shape [1, 64], expected [16, 64]"),
    ("run", "a train_state.pt that makes Adam maximize the loss", lambda d: [*RESUME(edit_state(run_dir(d), lambda s: s["optimizer"]["param_groups"][0].update(maximize=True)))], "param_groups[0].maximize is True, but this run's optimizer has False"),
    ("run", "a train_state.pt with amsgrad switched on", lambda d: [*RESUME(edit_state(run_dir(d), lambda s: s["optimizer"]["param_groups"][0].update(amsgrad=True)))], "param_groups[0].amsgrad is True, but this run's optimizer has False"),
    ("run", "a train_state.pt with an optimizer option this run lacks", lambda d: [*RESUME(edit_state(run_dir(d), lambda s: s["optimizer"]["param_groups"][0].update(nesterov=True)))], "has options ['nesterov'] that this run's optimizer lacks"),
    ("run", "saved standardization statistics holding NaN (sample)", lambda d: ["sample", standardized(d, shift=torch.full((13,), float("nan")), spread=torch.ones(13)), "--n", "4"], "standardization.safetensors: shift holds NaN or Inf"),
    ("run", "a saved spread of 0 (decode would give every sample alike)", lambda d: ["sample", standardized(d, shift=torch.zeros(13), spread=torch.zeros(13)), "--n", "4"], "standardization.safetensors: spread must be at least 1e-30 (a constant dimension's is 1), found minimum 0"),
    ("run", "saved statistics of the wrong shape", lambda d: ["sample", standardized(d, shift=torch.zeros(5), spread=torch.ones(5)), "--n", "4"], "standardization.safetensors: shift has shape [5]; the data need [13]"),
    ("run", "a config.json edited by hand between checkpoints (β)", lambda d: RESUME(edit_config_path(run_dir(d), lambda c: c["train"]["objective"].update(beta=4.0))), "[train.objective] beta = 4.0, but train_state.pt was trained with 1.0"),
    ("run", "a plain train into a run that lost its config.json", lambda d: ["train", "--out", str(unlink(run_dir(d), "config.json")), "--epochs", "1"], "of a run whose config.json is missing; pass --resume to continue it"),
    ("table", "a column name holding a control character (NUL)", lambda d: [*MIXED, "--dataset", write_text(d, "t.csv", "a\x00b,c\n1,x\n2,y\n3,y\n4,x\n")], "column 1 of the header, 'a\\x00b', holds a control character; rename it"),
    ("run", "a train_state.pt whose generator bytes are no state", lambda d: [*RESUME(edit_state(run_dir(d), lambda s: s.update(rng=torch.zeros_like(s["rng"]))))], "rng is not a valid generator state"),
    ("run", "decode --label out of the model's range", lambda d: ["decode", str(run_dir(d)), "--latents", npy(d, "z.npy", np.zeros((3, 2), np.float32)), "--label", "3", "--out", "{d}/x.npy"], "--label 3: this model is not conditioned on labels"),
    ("run", "a train_state.pt with a negative batch position", lambda d: [*RESUME(edit_state(run_dir(d), lambda s: s.update(batch=-3)))], "batch is -3, below 0"),
    ("run", "float64 weights that overflow the float32 model (1e300)", lambda d: ["evaluate", str(f64_weights(run_dir(d)))], "decoder.net.0.bias is float64, but the model's is float32"),
    ("run", "weights holding NaN or Inf", lambda d: ["evaluate", str(nan_weights(run_dir(d)))], "the weights hold NaN or Inf"),
    ("run", "--out that is a file", lambda d: ["train", "--out", write_text(d, "file", "x"), "--epochs", "1"], "is a file, not a folder"),
    ("run", "--resume with a different model", lambda d: [*RESUME(run_dir(d)), "--hidden", "32"], "[model] hidden = [32] differs from the run's [16], and it cannot change on --resume"),
    ("run", "an empty --out", lambda d: ["train", "--out", "", "--epochs", "1"], "--out is empty"),
    ("run", "sample --n too large for memory", lambda d: ["sample", str(run_dir(d)), "--n", "100000000000"],
     "vaekit draws at once; draw in parts"),
    ("run", "sample --temperature 0", lambda d: ["sample", str(run_dir(d)), "--temperature", "0"], "--temperature must be a number > 0, got 0.0"),
    ("run", "sample --temperature with a prior that is not Gaussian", lambda d: ["sample", vamp_iaf_run(d), "--temperature", "0.5"], "sampling at a temperature needs a Gaussian p(z)"),
    ("run", "sample --output with a suffix it cannot write", lambda d: ["sample", str(run_dir(d)), "--output", "{d}/x.jpg"], "name a .png (the grid"),
    ("config", "--arch conv on vectors", lambda d: [*TRAIN, "--arch", "conv", "--dataset", "wine", "--likelihood", "gaussian"], "arch = 'conv' needs image data of shape (C, H, W), got (13,)"),
    ("data", "frey-faces not in the data folder", lambda d: [*TRAIN, "--dataset", "frey-faces", "--likelihood", "gaussian", "--data-dir", "{d}/empty"], "or point --data-dir (or $VAEKIT_DATA) at the folder"),
    ("config", "a conditional VAE with --cuda-graphs", lambda d: [*TRAIN, "--condition", "label", "--cuda-graphs"], "condition = 'label' takes no cuda_graphs"),
    ("config", "a config nested 100 000 deep", lambda d: [*TRAIN, "--config", write_text(d, "deep.json", "[" * 100000 + "]" * 100000)], "not valid JSON (nested too deeply)"),
    ("run", "data that no longer match the run's model", lambda d: ["reconstruct", edit_config(run_dir(d), lambda c: c["data"].update(dataset=npy(d, "v.npy", np.ones((50, 10), dtype=np.uint8))))], "but the model of DIR/run was trained on shape (1, 8, 8)"),
    ("data", "an .npz whose arrays have unknown names", lambda d: [*TRAIN, "--dataset", npz(d, "k.npz", images=np.zeros((20, 4)), targets=np.zeros(20))], "holds the arrays images, targets; expected 'x'"),
    ("run", "a run written by vaekit 0.1", lambda d: ["evaluate", edit_config(run_dir(d), lambda c: c["versions"].update(vaekit="0.1.0"))], "written by vaekit 0.1.0, whose model layout"),
    ("run", "a damaged tracking.json on --resume", lambda d: [*RESUME(overwrite(run_dir(d), "tracking.json", b"{not json"))], "tracking.json: not valid JSON; remove it to start a new tracked run"),
    ("run", "decode --latents that is a FIFO (waited for ever)", lambda d: ["decode", str(run_dir(d)), "--latents", fifo(d, "z.npy"), "--out", "{d}/x.png"], "z.npy: not a regular file (a FIFO)"),
    ("run", "decode --latents of 0 rows", lambda d: ["decode", str(run_dir(d)), "--latents", npy(d, "empty.npy", np.zeros((0, 2), np.float32)), "--out", "{d}/x.png"], "empty.npy: no latents (0 rows); decode needs at least one"),
    ("run", "decode --latents of complex numbers", lambda d: ["decode", str(run_dir(d)), "--latents", npy(d, "c.npy", np.full((3, 2), 1 + 5j, np.complex64)), "--out", "{d}/x.npy"], "c.npy: latents must be real numbers (integer or floating point), got dtype complex64"),
    ("run", "decode --latents beyond float32's range", lambda d: ["decode", str(run_dir(d)), "--latents", npy(d, "big.npy", np.full((3, 2), 1e300)), "--out", "{d}/x.npy"], "big.npy: row 1, z1 = 1e+300 is beyond float32's range (±3.4e+38)"),
    ("run", "sample --temperature 1e300", lambda d: ["sample", str(run_dir(d)), "--temperature", "1e300"], "--temperature 1e+300 is out of range (at most 1000"),
    ("run", "evaluate --n 1 (active units of one example)", lambda d: ["evaluate", str(run_dir(d)), "--n", "1"], "--n must be at least 2: active units are a variance over the examples, undefined for one; got 1"),
    ("run", "a metrics.jsonl record of epoch 1e308 (plot)", lambda d: ["plot", str(appended(run_dir(d), "metrics.jsonl", '{"epoch": 1e308, "train/elbo": -1}')), "--out", "{d}/pics"], "metrics.jsonl: line 2: epoch must be a whole number from 1 to 1099511627776, got 1e+308"),
    ("run", "a metrics.jsonl value that is not a number (report)", lambda d: ["report", str(appended(run_dir(d), "metrics.jsonl", '{"epoch": 1, "train/elbo": {"a": 1}}')), "--k", "2"], "metrics.jsonl: line 2: field 'train/elbo' must be a number, got {\"a\": 1}"),
    ("run", "--init-from '' (an unset shell variable)", lambda d: ["train", "--init-from", "", "--out", "{d}/ft"], "--init-from is empty; name the run directory to start from"),
    ("run", "decode --latents written by pandas with an underscore number", lambda d: ["decode", str(run_dir(d)), "--latents", write_text(d, "z.csv", "0,1\n1_0,2\n"), "--out", "{d}/x.npy"], "z.csv: cannot read latents (could not convert string to float: '1_0')"),
    ("run", "--track naming another tracker than the run's", lambda d: [*RESUME(overwrite(run_dir(d), "tracking.json", b'{"tracker": "wandb", "run_id": "abc123"}')), "--track", "mlflow"], "says this run is tracked in wandb: pass --track wandb (or --track none)"),
    ("config", "a JSON config giving a key twice", lambda d: [*TRAIN, "--config", write_text(d, "dup.json", '{"train": {"epochs": 1, "epochs": 3}}')], "not valid JSON (the key 'epochs' is given twice)"),
    ("config", "a folder given as the config", lambda d: [*TRAIN, "--config", str(d)], "not a regular file (a folder)"),
    ("run", "encode --out naming the run's own weights", lambda d: ["encode", str(run_dir(d)), "--out", str(d / "run" / "model.safetensors")], "model.safetensors: is the run's model.safetensors, which this command reads; write to another file"),
    ("run", "decode --out naming its own --latents", lambda d: ["decode", str(run_dir(d)), "--latents", npy(d, "z.npy", np.zeros((3, 2), np.float32)), "--out", "{d}/z.npy"], "z.npy: is --latents, which this command reads; write to another file"),
    ("table", "a tab-separated file", lambda d: [*MIXED, "--dataset", write_text(d, "t.csv", "a\tb\n1\t2\n3\t4\n")], "the header is one column holding tabs; vaekit reads comma-separated tables: write the file as CSV"),
    ("table", "a column name holding a word joiner (U+2060)", lambda d: [*MIXED, "--dataset", write_text(d, "t.csv", "a\u2060b,ab\n1,x\n2,y\n3,y\n4,x\n")], "holds a control character; rename it"),
    ("config", "a network of 100,000 layers", lambda d: [*TRAIN, "--config", write(d, "c.json", {"model": {"hidden": [8] * 100000}})], "hidden lists 100,000 layers; vaekit builds at most 1,000"),
    ("run", "a resume whose standardization is not the training split's", lambda d: RESUME(standardized(d, shift=torch.zeros(13), spread=torch.ones(13))), "standardization.safetensors: not the statistics of this run's training split"),
    ("run", "saved statistics in float16", lambda d: ["sample", standardized(d, shift=torch.zeros(13, dtype=torch.float16), spread=torch.ones(13, dtype=torch.float16)), "--n", "4"], "not the float32 shift and spread vaekit writes"),
    ("run", "a compressed train_state.pt (torch.save stores)", lambda d: RESUME(deflated_state(run_dir(d))), "torch.save stores its records as they are: not a file vaekit wrote"),
    ("run", "a train_state.pt counter of 400 digits", lambda d: RESUME(edit_state(run_dir(d), lambda s: s.update(batch=10**400))), "batch is a whole number beyond 2**63"),
    ("flag", "--sigma beyond float32", lambda d: [*TRAIN, "--likelihood", "gaussian", "--sigma", "3.5e38"], "--sigma = 3.5e+38 is out of range (float32 holds at most 3.403e+38)"),
    ("data", "train --out inside the image folder it trains on", lambda d: ["train", "--dataset", images(d, [(5, 5)] * 3), "--out", "{d}/imgs/run", "--epochs", "1"], "a folder of images training reads (the run's files would become its examples)"),
    ("run", "a metrics.jsonl number of 5,000 digits (plot)", lambda d: ["plot", str(appended(run_dir(d), "metrics.jsonl", '{"epoch": 2, "train/elbo": ' + "9" * 5000 + "}")), "--out", "{d}/pics"], "metrics.jsonl: line 2 is not a metrics record (a whole number of 5,000 digits)"),
    ("run", "sample with saved statistics of 3e38", lambda d: ["sample", standardized(d, shift=torch.full((13,), 3e38), spread=torch.full((13,), 3e38)), "--n", "4"], "shift + spread · x passes float32's range (±3.4e38)"),
    ("flag", "--sigma 1e-30", lambda d: [*TRAIN, "--likelihood", "gaussian", "--sigma", "1e-30"], "--sigma must be >= 1e-06, got 1e-30"),
    ("config", "an empty --dataset", lambda d: [*TRAIN, "--dataset", ""], "--dataset is empty; name a dataset"),
    ("config", "a config file integer of 5,000 digits", lambda d: [*TRAIN, "--config", write_text(d, "big.json", '{"train": {"epochs": ' + "9" * 5000 + "}}")], "big.json: not valid JSON (a whole number of 5,000 digits)"),
    ("flag", "--patience with no validation split", lambda d: [*TRAIN, "--val-size", "0", "--patience", "5"], "--patience 5 stops on the validation ELBO, but digits holds none out (--val-size 0)"),
    ("table", "a CSV cell of 2,000 characters", lambda d: [*MIXED, "--dataset", write_text(d, "t.csv", "a,b\n1,x\n2," + "y" * 2000 + "\n")], "line 3 holds a cell of 2,000 characters (column 2)"),
    ("run", "a config.json that is a link to a missing file", lambda d: RESUME(dangle(run_dir(d), "config.json")), "config.json: a symbolic link to gone.json, which leads to no file (gone, or links in a loop)"),
    ("run", "metrics.jsonl nested 100,000 brackets deep", lambda d: ["plot", str(append(run_dir(d), "metrics.jsonl", "[" * 100000 + "]" * 100000 + "\n"))], "is not a metrics record (nested too deeply)"),
    ("run", "a run whose data file is gone", lambda d: ["evaluate", edit_config(run_dir(d), lambda c: c["data"].update(dataset=f"{d}/gone.npy", digest="0" * 64))], "gone.npy: the run's data are gone (moved or removed); put them back there, or name where they lie now with --dataset"),
    ("run", "evaluate --samples with a sampler never fitted", lambda d: ["evaluate", str(run_dir(d)), "--samples", "20", "--sampler", "gmm"], "samplers/gmm.safetensors: missing; fit it first: vaekit fit-sampler"),
    ("run", "a resume refused on a --config file's setting", lambda d: ["train", "--out", str(run_dir(d)), "--resume", "--config", write(d, "c.json", {"model": {"latent_dim": 7}})], "latent_dim = [7] (in DIR/c.json) differs from the run's"),
    ("run", "config.json with condition_classes 10¹²", lambda d: ["evaluate", edit_config(run_dir(d), lambda c: c["model"].update(condition="label", condition_classes=10**12))], "[model] condition_classes must be >= 0 and <= 1000, got 1000000000000"),
]

def deflated_state(run):
    """train_state.pt rewritten with every record DEFLATE-compressed (torch.load would inflate them first)."""
    import io
    import zipfile

    state = (run / "train_state.pt").read_bytes()
    with zipfile.ZipFile(run / "train_state.pt", "w", zipfile.ZIP_DEFLATED) as z, \
            zipfile.ZipFile(io.BytesIO(state)) as original:
        for member in original.infolist():
            z.writestr(member.filename, original.read(member.filename))
    return run


def RESUME(run):
    return ["train", "--out", str(run), "--resume", "--epochs", "2"]


def edit_state(run, fn):
    import torch

    state = torch.load(run / "train_state.pt", weights_only=True)
    fn(state)
    torch.save(state, run / "train_state.pt")
    return run


def shrunk_moment(run):
    return edit_state(run, lambda s: s["optimizer"]["state"][0].update(exp_avg=s["optimizer"]["state"][0]["exp_avg"][:1]))


def f64_weights(run):
    from safetensors.torch import load_file, save_file

    weights = {k: v.double() for k, v in load_file(run / "model.safetensors").items()}
    weights["decoder.net.0.bias"][0] = 1e300  # finite here, inf in float32
    save_file(weights, run / "model.safetensors")
    return run


def nan_weights(run):
    from safetensors.torch import load_file, save_file

    weights = load_file(run / "model.safetensors")
    weights["decoder.net.0.weight"][0, 0] = float("nan")
    save_file(weights, run / "model.safetensors")
    return run


def write(d, name, obj):
    (d / name).write_text(json.dumps(obj))
    return str(d / name)


def write_text(d, name, text):
    (d / name).write_text(text)
    return str(d / name)


def dangle(run, name):
    (run / name).unlink()
    (run / name).symlink_to("gone.json")
    return run


def append(run, name, text):
    with open(run / name, "a") as f:
        f.write(text)
    return run


def unlink(run, name):
    (run / name).unlink()
    return run


def overwrite(run, name, data):
    (run / name).write_bytes(data)
    return run


def truncate(run, name):
    (run / name).write_bytes((run / name).read_bytes()[:100])
    return run


ROW_SECONDS = 120  # a row that waits (a FIFO opened for reading, say) fails instead of hanging the suite


def within(seconds, call, *args):
    """call(*args), or a failure after `seconds` (SIGALRM interrupts even a blocking open)."""
    def late(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, late)
    signal.alarm(seconds)
    try:
        return call(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def message(tmp_path, build, capsys) -> tuple[int, str]:
    d = tmp_path / "case"
    d.mkdir()
    argv = [a.replace("{d}", str(d)) for a in map(str, build(d))]
    code = within(ROW_SECONDS, main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, (err[-1] if err else "").replace(str(d), "DIR")


@pytest.mark.parametrize("row", [pytest.param(r, id=r[1], marks=[needs_shared] if r[1] in SHARED_ROWS else [])
                                 for r in ROWS])
def test_bad_input_gets_one_line(tmp_path, capsys, row):
    _, _, build, fragment = row
    code, line = message(tmp_path, build, capsys)
    assert code == 2
    assert line.startswith("vaekit: error: ") and fragment in line, line


def render(lines: list[tuple[str, str, str]]) -> str:
    out = ["# Errors: bad input → the one line vaekit prints", "",
           "Generated by `tests/test_errors.py` from the rows it runs (exit status 2; DIR stands for the",
           "directory of the case). Regenerate with `python tests/test_errors.py`.", "",
           "| area | input | message |", "|---|---|---|"]
    for area, what, line in lines:
        text = line.removeprefix("vaekit: error: ").replace("|", "\\|")
        out.append(f"| {area} | {what} | `{text}` |")
    return "\n".join(out) + "\n"


def collect(tmp_path_factory, capsys) -> str:
    rows = []
    for area, what, build, _ in ROWS:
        rows.append((area, what, message(tmp_path_factory.mktemp("doc"), build, capsys)[1]))
    return render(rows)


@needs_shared  # the table holds every row
def test_docs_match(tmp_path_factory, capsys):
    text = collect(tmp_path_factory, capsys)
    if os.environ.get("VAEKIT_WRITE_DOCS"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
    assert DOC.read_text() == text, "docs/errors.md is stale: run python tests/test_errors.py"


if __name__ == "__main__":  # regenerate docs/errors.md
    os.environ["VAEKIT_WRITE_DOCS"] = "1"
    sys.exit(pytest.main([__file__, "-q", "-k", "test_docs_match", "-p", "no:cacheprovider"]))
