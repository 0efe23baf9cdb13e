"""Runs and inputs that are not what they claim, the fourth attack (issue 27): a received config.json or a flag that
asks for 10¹² importance samples (days of work, silently), `--init-from` a run built in Python (trained another
network), a fit-sampler racing a training, `init_from` in a --config file, a metrics.jsonl of millions of lines."""

import json
import zipfile

import pytest
import torch

import vaekit
from vaekit.cli import main
from vaekit.errors import VaekitError
from vaekit.files import RunLock

TRAIN = ["--quiet", "train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main([*TRAIN, "--out", str(run)]) == 0
    return run


def one_line(capsys, *argv):
    code = main(["--quiet", *map(str, argv)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_number_of_importance_samples_that_would_take_days_is_refused(trained, tmp_path, capsys):
    for argv in (["evaluate", trained, "--k", 10**12], ["report", trained, "--k", 10**12]):
        assert one_line(capsys, *argv) == (2, [("vaekit: error: --k 1000000000000 is out of range: importance samples "
                                               "per example from 1 to 1,000,000")])
    import shutil

    received = tmp_path / "received"
    shutil.copytree(trained, received)
    cfg = json.loads((received / "config.json").read_text())
    cfg["train"]["eval_k"] = 10**12  # `vaekit evaluate RUN` ran for days with nothing on the screen
    (received / "config.json").write_text(json.dumps(cfg))
    code, err = one_line(capsys, "evaluate", received)
    assert code == 2 and err == [(f"vaekit: error: {received / 'config.json'}: [train] eval_k must be > 0 and <= 1000000, "
                                 "got 1000000000000")]
    with pytest.raises(VaekitError, match=r"^k must be a whole number of importance samples from 1 to 1,000,000"):
        vaekit.log_likelihood(vaekit.load(trained), torch.zeros(2, 64), k=10**7)


def test_init_from_a_run_built_in_python_or_trained_on_tensors_is_refused(tmp_path, capsys):
    from torch import nn

    enc = vaekit.Encoder(nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 4)), "diagonal")  # Tanh
    dec = vaekit.Decoder(nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 64)), "bernoulli", data_dim=64)
    x = (torch.rand(100, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    vaekit.fit(vaekit.VAE(enc, dec, vaekit.StandardNormal(2)), x, epochs=1, out=tmp_path / "python", progress=False)
    code, err = one_line(capsys, "train", "--init-from", tmp_path / "python", "--dataset", "digits", "--out", tmp_path / "a")
    assert code == 2 and err == [(f"vaekit: error: --init-from {tmp_path / 'python'}: its model was built in Python, "
                                 "which no setting rebuilds; load it with vaekit.load(RUN, model=…) and go on with "
                                 "vaekit.fit")]  # it trained the ReLU network its placeholder settings name
    vaekit.fit(vaekit.VAE(data_dim=64, latent_dim=2, hidden=(16,)), x, epochs=1, out=tmp_path / "tensors", progress=False)
    code, err = one_line(capsys, "train", "--init-from", tmp_path / "tensors", "--out", tmp_path / "b")
    assert code == 2 and err == [(f"vaekit: error: --init-from {tmp_path / 'tensors'}: its data were tensors given to "
                                 "vaekit.fit; name the data to train on with --dataset FILE")]
    assert not (tmp_path / "a" / "config.json").exists() and not (tmp_path / "b" / "config.json").exists()
    import numpy as np

    np.save(tmp_path / "x.npy", x.numpy())  # the advice taken: the same data, from a file
    code, err = one_line(capsys, "train", "--init-from", tmp_path / "tensors", "--dataset", tmp_path / "x.npy",
                         "--epochs", "1", "--out", tmp_path / "c")
    assert code == 0, err


def test_init_from_in_a_config_file_takes_the_runs_settings_as_the_flag_does(trained, tmp_path, capsys):
    (tmp_path / "c.toml").write_text(f'[train]\ninit_from = "{trained}"\nepochs = 1\n')
    assert one_line(capsys, "train", "--config", tmp_path / "c.toml", "--out", tmp_path / "ft")[0] == 0
    got, src = (json.loads((d / "config.json").read_text()) for d in (tmp_path / "ft", trained))
    assert got["model"] == src["model"] and got["train"]["init_from"] == str(trained.resolve())


def test_fit_sampler_waits_for_a_training_of_the_same_run(trained, tmp_path, capsys):
    import os
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with RunLock(run):  # a `train --resume` in progress: its checkpoint could land between the reading and the digest
        code, err = one_line(capsys, "fit-sampler", run, "--sampler", "gmm", "--components", "2")
    assert code == 2 and err == [(f"vaekit: error: {run}: another vaekit process (pid {os.getpid()}) holds this run "
                                 "(training it, or fitting a sampler of it); wait for it to finish or stop it")]
    assert not (run / "samplers" / "gmm.safetensors").exists()


def test_a_metrics_file_of_too_many_epochs_is_refused_before_it_is_parsed(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with (run / "metrics.jsonl").open("a") as f:
        f.writelines(f'{{"epoch": {i}, "train/elbo": -1}}\n' for i in range(2, 100_002))  # 1.3 GB of dicts at 2M
    code, err = one_line(capsys, "plot", run, "--out", tmp_path / "pics")
    assert code == 2 and err == [(f"vaekit: error: {run / 'metrics.jsonl'}: 100,001 lines, more than the 100,000 epochs "
                                 "vaekit reads of it")]


def test_encode_to_npy_does_not_claim_labels(trained, tmp_path, capsys):
    assert main(["--quiet", "encode", str(trained), "--out", str(tmp_path / "z.npy")]) == 0
    assert "labels" not in capsys.readouterr().out
    assert main(["--quiet", "encode", str(trained), "--out", str(tmp_path / "z.npz")]) == 0
    assert "and labels" in capsys.readouterr().out


def zip_bomb(path, name, rows, cols):
    """A .npz of a float32 [rows, cols] array of zeros, written as a stream: ~1/1000 of its size on disk."""
    import io

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (rows, cols)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open(f"{name}.npy", "w", force_zip64=True) as f:
        f.write(header.getvalue())
        left = rows * cols * 4
        while left > 0:
            f.write(bytes(min(left, 1 << 24)))
            left -= 1 << 24
    return path


def test_a_small_npz_that_inflates_to_gigabytes_is_refused_unread(trained, tmp_path, capsys):
    """1.5 MB of zeros claimed 1.6 GB: decode --latents and a --dataset inflated it (2.6 and 3.3 GB resident)."""
    latents = zip_bomb(tmp_path / "z.npz", "z", 200_000_000, 2)
    code, err = one_line(capsys, "decode", trained, "--latents", latents, "--out", tmp_path / "d.npy")
    assert code == 2 and err == [(f"vaekit: error: {latents} [z.npy]: 1,600,000,128 bytes once decompressed, from "
                                 f"{zipfile.ZipFile(latents).getinfo('z.npy').compress_size:,} stored; "
                                 "more than vaekit inflates (at most 1,073,741,824)")]
    data = zip_bomb(tmp_path / "x.npz", "x", 200_000, 2000)
    code, err = one_line(capsys, "train", "--dataset", data, "--epochs", "1", "--out", tmp_path / "r")
    assert code == 2 and err[-1].startswith(f"vaekit: error: {data}: its members inflate to 1,600,000,128 bytes from ")
