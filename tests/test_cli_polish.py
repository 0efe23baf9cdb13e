"""The everyday command line: flags anywhere, one-line errors, every flag's help with its default,
encode/decode, runs that travel, explain's output folder."""

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from run_cli import vaekit_cli

from vaekit import load
from vaekit.cli import main, parser
from vaekit.evaluation.latents import read_latents
from vaekit.runs.checkpoint import CONFIG, load_config
from vaekit.runs.experiment import load_data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("polish") / "run"
    assert main(["--quiet", "train", "--out", str(out), "--epochs", "1", "--latent-dim", "3", "--hidden", "32"]) == 0
    return out


def subparsers():
    return next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_flag_has_help_with_its_default():
    for name, sub in subparsers().items():
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or "--help" in action.option_strings:
                continue
            assert action.help, (name, action.option_strings)
            assert "default" in action.help or "required" in action.help or "=" in action.help, (name, action.help)


def test_debug_and_quiet_after_the_command(run, capsys):
    assert main(["evaluate", str(run), "--k", "5", "--elbo-samples", "2", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["k"] == 5
    with pytest.raises(Exception, match="no such run directory"):  # --debug: the exception itself, no one-liner
        main(["evaluate", str(run.parent / "nowhere"), "--debug"])


def test_a_reader_that_leaves_early_is_not_an_error(run):
    """`vaekit evaluate RUN --json | head -c 10`: the pipe's reader is gone before the JSON is written; the
    command stops as a shell tool does (status 141 = 128 + SIGPIPE), with no traceback."""
    with subprocess.Popen([sys.executable, "-m", "vaekit", "evaluate", str(run), "--k", "5", "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        proc.stdout.close()  # long before the model is even loaded
        err = proc.stderr.read()
        assert proc.wait(timeout=300) == 141 and "Traceback" not in err, err


def test_an_argument_error_is_one_line_pointing_to_help():
    proc = vaekit_cli("train", "--out", "x", "--epochs", "many", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "vaekit train: error: argument --epochs: invalid int value: 'many'; see vaekit train --help"]


def test_encode_then_decode_equals_reconstruct(run, tmp_path):
    for suffix in (".npz", ".npy", ".csv"):
        vaekit_cli("encode", run, "--split", "test", "--out", tmp_path / f"z{suffix}")
    model = load(run)
    x = load_data(load_config(run), run).eval_split("test")
    with np.load(tmp_path / "z.npz") as f:
        mean, std, labels = f["mean"], f["std"], f["labels"]
    q = model.encode(x, distribution=True)
    np.testing.assert_allclose(mean, q.mean.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(std, q.stddev.numpy(), rtol=0, atol=1e-6)
    assert labels.shape == (x.shape[0],) and set(np.unique(labels)) <= set(range(10))  # digits have labels
    for suffix in (".npz", ".npy", ".csv"):  # every layout reads back to the same means
        torch.testing.assert_close(read_latents(tmp_path / f"z{suffix}", 3), torch.from_numpy(mean), rtol=0, atol=1e-6)
    vaekit_cli("decode", run, "--latents", tmp_path / "z.npz", "--output", tmp_path / "x.npy")
    decoded = np.load(tmp_path / "x.npy").reshape(x.shape[0], -1)
    np.testing.assert_allclose(decoded, model.reconstruct(x).numpy(), rtol=0, atol=1e-6)


def test_encode_all_splits_and_a_bare_z_file(run, tmp_path):
    vaekit_cli("encode", run, "--split", "all", "--out", tmp_path / "all.npz")
    with np.load(tmp_path / "all.npz") as f:
        n = f["mean"].shape[0]
    dataset = load_data(load_config(run), run)
    assert n == sum(dataset.eval_split(s).shape[0] for s in ("train", "val", "test"))
    np.save(tmp_path / "z.npy", np.zeros((4, 3), dtype=np.float32))  # your own z
    vaekit_cli("decode", run, "--latents", tmp_path / "z.npy", "--out", tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.save(tmp_path / "bad.npy", np.zeros((4, 5), dtype=np.float32))
    proc = vaekit_cli("decode", run, "--latents", tmp_path / "bad.npy", "--out", tmp_path / "x.npy", check=False)
    assert proc.returncode == 2 and "expected latents of shape [N, 3]" in proc.stderr


def test_a_run_travels_with_data_dir_and_dataset(tmp_path, monkeypatch):
    """A run trained on a file, moved with its data to another folder, evaluated from a third."""
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    np.save(tmp_path / "a" / "x.npy", (rng.random((300, 6)) > 0.5).astype(np.float32))
    vaekit_cli("--quiet", "train", "--out", tmp_path / "a" / "run", "--dataset", tmp_path / "a" / "x.npy",
               "--epochs", "1", "--latent-dim", "2")
    shutil.move(tmp_path / "a", tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    proc = vaekit_cli("evaluate", tmp_path / "b" / "run", "--k", "5", check=False)
    assert proc.returncode == 2 and "x.npy: the run's data are gone (moved or removed); put them back there, or name where they lie now with --dataset" in proc.stderr
    assert not (tmp_path / "a").exists()  # a failed lookup creates no folders
    out = vaekit_cli("evaluate", tmp_path / "b" / "run", "--k", "5", "--json", "--dataset", tmp_path / "b" / "x.npy")
    assert json.loads(out.stdout)["n"] > 0
    vaekit_cli("--quiet", "report", tmp_path / "b" / "run", "--k", "5", "--dataset", tmp_path / "b" / "x.npy")
    assert (tmp_path / "b" / "run" / "report.html").stat().st_size > 1000
    assert json.loads((tmp_path / "b" / "run" / CONFIG).read_text())["data"]["dataset"] == str(tmp_path / "a" / "x.npy")


def test_data_dir_and_vaekit_data_point_a_named_dataset_elsewhere(tmp_path, monkeypatch):
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (shared / "frey_faces").exists():
        pytest.skip(f"needs {shared}/frey_faces")
    shutil.copytree(shared / "frey_faces", tmp_path / "mine" / "frey_faces")
    vaekit_cli("--quiet", "train", "--out", tmp_path / "run", "--dataset", "frey-faces", "--data-dir", tmp_path / "mine",
               "--likelihood", "gaussian", "--epochs", "1", "--latent-dim", "2", "--hidden", "16")
    shutil.move(tmp_path / "mine", tmp_path / "moved")
    proc = vaekit_cli("evaluate", tmp_path / "run", "--k", "5", check=False)
    assert proc.returncode == 2
    vaekit_cli("evaluate", tmp_path / "run", "--k", "5", "--data-dir", tmp_path / "moved")
    vaekit_cli("evaluate", tmp_path / "run", "--k", "5", env={**os.environ, "VAEKIT_DATA": str(tmp_path / "moved")})


def test_explain_writes_into_a_folder_named_for_the_topic(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["explain", "posterior"]) == 0
    assert "figure in explain-posterior" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["explain-posterior"]
    assert any(p.suffix == ".png" for p in (tmp_path / "explain-posterior").iterdir())


# ---- what a new user met (issue 27) ----------------------------------------------------------------------

def test_threads_sets_torch_threads_and_refuses_nonsense():
    """In a process of its own: setting torch's threads here would change this process's kernels, and the tests
    that compare a CLI run with Python bit for bit would see it."""
    code = ("import torch\nfrom vaekit.cli import main\n"
            "assert main(['--quiet', '--threads', '1', 'evaluate', 'no-such-run']) == 2\n"
            "print(torch.get_num_threads())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "1"
    proc = vaekit_cli("evaluate", "no-such-run", "--threads", "0", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == ("vaekit: error: --threads must be a number of threads "
                                                            "from 1 to 4096, got 0")


def test_fit_prints_each_epoch_where_logging_is_not_set_up():
    code = ("import torch, vaekit\n"
            "m = vaekit.VAE(data_dim=6, latent_dim=2, hidden=[8], likelihood='gaussian')\n"
            "vaekit.fit(m, torch.randn(60, 6), epochs=2, batch_size=20)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    lines = proc.stderr.splitlines()
    assert any(line.startswith("model mlp") for line in lines)
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert all("val elbo" in line for line in lines if line.startswith("epoch "))


def test_the_curves_fit_the_later_epochs_not_the_first():
    from vaekit.pictures.figures import curves_figure

    metrics = [{"epoch": e, "train/elbo": -100 - 900 * (e == 1) + e / 10, "val/elbo": -101 + e / 10} for e in range(1, 21)]
    low, high = curves_figure(metrics).axes[0].get_ylim()
    assert -101 < low < -100.5 and -98 < high < -97.5  # epoch 1's −1000 runs off the axis
    assert "y from epoch 3" in curves_figure(metrics).axes[0].get_title()


def test_the_start_line_says_the_data_are_binarized_and_sample_says_it_replaces(run, tmp_path):
    from vaekit.runs.config import Config
    from vaekit.runs.experiment import summary

    cfg = load_config(run)
    line = summary(cfg, load_data(cfg), "cpu", None)
    assert "binarized dynamically" in line
    gauss = Config().replace(model={"likelihood": "gaussian"}, data={"dataset": "wine"})
    assert "binarized" not in summary(gauss, load_data(gauss), "cpu", None)
    first = vaekit_cli("sample", run, "--n", "4", "--out", tmp_path / "s.png").stdout
    second = vaekit_cli("sample", run, "--n", "4", "--out", tmp_path / "s.png").stdout
    assert "replacing" not in first and "replacing the earlier ones" in second


def test_evaluate_n_is_the_first_n_examples_and_says_so(run, capsys):
    from vaekit.evaluation.estimates import evaluate_all

    assert main(["--quiet", "evaluate", str(run), "--n", "40", "--k", "16", "--elbo-samples", "4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    model = load(run)
    test = load_data(load_config(run), run).eval_split("test")
    want = evaluate_all(model, test[:40], k=16, seed=0, elbo_samples=4, progress=False)
    assert (got["n"], got["split_size"], got["protocol"]["n"]) == (40, test.shape[0], 40)
    assert got["log_likelihood"] == want["log_likelihood"] and got["elbo"] == want["elbo"]
    assert main(["--quiet", "evaluate", str(run), "--n", "40", "--k", "16", "--elbo-samples", "4"]) == 0
    assert f"(n=40: the first 40 of {test.shape[0]}, --n)" in capsys.readouterr().out


def test_val_size_0_trains_on_every_training_example_without_validation(tmp_path, capsys, caplog):
    flags = ["--epochs", "2", "--latent-dim", "3", "--hidden", "16", "--val-size", "0"]
    with caplog.at_level(logging.INFO):
        assert main(["train", "--out", str(tmp_path / "run"), *flags]) == 0
    out = capsys.readouterr()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(k for k in r if k.startswith("val/")) for r in records] == [[], []]
    data = load_data(load_config(tmp_path / "run"), tmp_path / "run")
    assert data.split("val").shape[0] == 0 and data.split("train").shape[0] == 1797 - data.split("test").shape[0]
    assert f"({data.split('train').shape[0]} train, 0 val)" in caplog.text and "no validation split" in out.out
    assert main(["--quiet", "evaluate", str(tmp_path / "run"), "--split", "val"]) == 2
    assert "no validation examples" in capsys.readouterr().err


def test_a_learned_sigma_is_reported_by_evaluate_and_the_report(tmp_path, capsys):
    from safetensors.torch import load_file

    for likelihood, count in (("gaussian-learned", 1), ("gaussian-learned-per-dim", 64)):
        out = tmp_path / likelihood
        assert main(["--quiet", "train", "--out", str(out), "--epochs", "2", "--latent-dim", "2", "--hidden", "16",
                     "--likelihood", likelihood, "--binarize", "none"]) == 0
        capsys.readouterr()
        assert main(["--quiet", "evaluate", str(out), "--k", "4", "--elbo-samples", "2", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)["likelihood_learned"]["σ"]
        sigma = load_file(out / "model.safetensors")["decoder.head.log_sigma"].exp().double()  # σ as the model uses it
        assert got == {"median": float(sigma.median()), "min": float(sigma.min()), "max": float(sigma.max()),
                       "count": count}
    assert main(["--quiet", "evaluate", str(out), "--k", "4", "--elbo-samples", "2"]) == 0
    assert f"p(x|z) learned  σ: median {got['median']:.4g}, from {got['min']:.4g}" in capsys.readouterr().out
    assert main(["--quiet", "report", str(out), "--k", "4"]) == 0
    assert f"p(x|z)&#x27;s learned σ</td><td>median {got['median']:.4g}" in (out / "report.html").read_text()


def test_conditional_vector_samples_name_each_rows_label(tmp_path, monkeypatch):
    from vaekit.pictures import figures

    g = np.random.default_rng(0)
    np.savez(tmp_path / "v.npz", x=g.normal(size=(120, 5)).astype(np.float32), y=np.arange(120) % 3)
    assert main(["--quiet", "train", "--dataset", str(tmp_path / "v.npz"), "--likelihood", "gaussian", "--epochs", "1",
                 "--condition", "label", "--latent-dim", "2", "--hidden", "8", "--out", str(tmp_path / "run")]) == 0
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig) or path)
    assert main(["--quiet", "sample", str(tmp_path / "run"), "--n", "6"]) == 0
    (fig,) = drawn
    assert "E[x|z, y] for 6 draws z ~ p(z|y)" in fig._suptitle.get_text().replace("\n", " ")  # wrapped
    heatmap = fig.axes[0]
    assert [t.get_text() for t in heatmap.get_yticklabels()] == ["y = 0", "y = 1", "y = 2"] * 2
