"""The command line in a subprocess, as a user runs it."""

import json
import subprocess
import sys

import numpy as np
import pytest
from pngread import read_png


def vaekit(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], capture_output=True, text=True, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def png_size(path):
    h, w, _ = read_png(path).shape
    return w, h


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = vaekit("--quiet", "train", "--dataset", "digits", "--latent-dim", "3", "--hidden", "32", "--epochs", "1", "--out", out)
    (out / "train_stdout.txt").write_text(proc.stdout)
    return out


def test_train_reports_active_units(run):
    """The printed count and KL per dimension are the saved model's on the validation split, recomputed
    here in float64: A_j = Var_x(E_Q[z_j|x]) > 0.01 (Burda et al. 2016) and the mean closed-form KL
    between 1-D Gaussians Q(z_j|x) and p(z_j), printed to 2 decimals."""
    import torch

    import vaekit
    from vaekit.runs.checkpoint import load_config
    from vaekit.runs.experiment import load_data

    line = next(x for x in (run / "train_stdout.txt").read_text().splitlines() if x.startswith("active units"))
    active, kls = int(line.split()[2]), [float(v) for v in line.split("(nats)")[1].split()]
    model = vaekit.load(run)
    x = load_data(load_config(run), run).eval_split("val")
    with torch.no_grad():
        q, p = model.posterior(x).base_dist, model.prior().base_dist
    mu, s, mu_p, s_p = (t.double() for t in (q.loc, q.scale, p.loc, p.scale))
    assert active == int((mu.var(0, unbiased=False) > 0.01).sum())
    kl = (torch.log(s_p / s) + (s**2 + (mu - mu_p) ** 2) / (2 * s_p**2) - 0.5).mean(0)
    assert len(kls) == 3 and all(abs(printed - v) <= 0.005 + 1e-9 for printed, v in zip(kls, kl.tolist()))


def test_evaluate_json(run):
    result = json.loads(vaekit("evaluate", run, "--k", "50", "--json").stdout)
    assert result["n"] == 297 and result["k"] == 50
    assert result["elbo"] < 0 and result["log_likelihood"] < 0 and result["kl"] >= 0
    assert abs(result["elbo"] - (result["reconstruction"] - result["kl"])) < 1e-4  # float32 terms
    # the k = 50 bound sits above the ELBO (same model, many examples)
    assert result["log_likelihood"] > result["elbo"]
    assert abs(result["bits_per_dim"] + result["log_likelihood"] / (64 * 0.6931471805599453)) < 1e-9
    assert len(result["kl_per_dim"]) == 3 and 0 <= result["active_units"] <= 3
    assert abs(sum(result["kl_per_dim"]) - result["kl"]) < 1e-3
    # two kinds of error: over the 297 examples (another test set), and Monte Carlo (another seed)
    assert 0 < result["log_likelihood_mc_stderr"] < result["log_likelihood_stderr"] / 5
    assert result["elbo_samples"] == 200 and 0 < result["elbo_mc_stderr"] < 0.05
    assert 1 <= result["ess_min"] <= result["ess_median"] <= 50 and 0 <= result["ess_low_fraction"] <= 1
    assert result["bound_check"] == "ok"


def test_evaluate_json_records_the_protocol(run):
    import hashlib

    from vaekit.runs.checkpoint import versions

    result = json.loads(vaekit("evaluate", run, "--k", "20", "--elbo-samples", "1", "--seed", "3", "--json").stdout)
    p = result["protocol"]
    model = json.loads((run / "config.json").read_text())["model"]
    canonical = json.dumps(model, sort_keys=True, separators=(",", ":"))
    assert p["model_config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert p["weights_sha256"] == hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    assert p["versions"] == versions()
    assert (p["split"], p["n"], p["k"], p["elbo_samples"], p["seed"]) == ("test", 297, 20, 1, 3)
    assert (p["dataset"], p["binarization"], p["binarization_seed"]) == ("digits", "dynamic", 1234)
    # one ELBO draw has no Monte Carlo error to give: null in the JSON, and the bound goes unchecked
    assert result["elbo_mc_stderr"] is None and result["bound_check"] == "unchecked"


def test_evaluate_text_names_each_error(run):
    out = vaekit("evaluate", run, "--k", "20", "--elbo-samples", "10").stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "Monte Carlo (10 draws of z per example)" in lines["elbo"]
    assert "Monte Carlo (k = 20 importance samples; delta method)" in lines["log_likelihood"]
    assert "over examples (standard error of the mean over the 297 test examples" in lines["±"]
    assert lines["ESS"].startswith("ESS             median ") and lines["bound"].endswith("within Monte Carlo error)")
    bad = vaekit("evaluate", run, "--elbo-samples", "0", check=False)
    assert bad.returncode == 2 and "--elbo-samples must be > 0, got 0" in bad.stderr


def shows(png, images, ncol=None, shape=(1, 8, 8)):
    """Whether the RGB picture holds the grid of `images` [N, D] pixel for pixel (white between them, each
    pixel an upscale_for(shape)² block, `image_grid`'s layout), found by its first image's corner, with
    only white below it and to the right of it (the title is above, row labels to the left): no more images."""
    from vaekit.pictures.png import image_grid, upscale_for

    up = upscale_for(shape)
    grid = np.repeat(image_grid(images, shape, ncol).numpy().repeat(up, 0).repeat(up, 1), 3, 2)
    (gh, gw), (h, w) = grid.shape[:2], png.shape[:2]
    corner = png[up : h - gh + 1 + up, up : w - gw + 1 + up]  # each candidate grid's first image pixel
    tops, lefts = np.nonzero((corner == grid[up, up]).all(-1))
    return any(np.array_equal(png[t : t + gh, c : c + gw], grid) and (png[t + gh :] == 255).all()
               and (png[t:, c + gw :] == 255).all() for t, c in zip(tops, lefts))


def test_sample_and_reconstruct_write_pictures(run):
    """The samples are the saved model's E[x|z] for z ~ p(z) under --seed's default 0, recomputed here,
    and both PNGs show their images pixel for pixel: the 16 samples in a 4×4 grid, the 8 test inputs above
    their reconstructions E[x|z = E_Q[z|x]] in one block of 2 rows of 8."""
    import torch

    from vaekit.pictures.png import pairs_layout
    from vaekit.runs.checkpoint import load_run
    from vaekit.runs.experiment import load_data

    cfg, model = load_run(run)
    vaekit("sample", run, "--n", "16")
    w, h = png_size(run / "samples.png")
    assert w >= 4 * 48 and h >= 4 * 48  # 16 digits in a titled 4×4 grid, each ≥ 48 px a side
    arr = np.load(run / "samples.npy")
    torch.manual_seed(0)
    with torch.no_grad():
        expected = model.p_x_given_z(model.prior().sample((16,))).mean
    assert arr.shape == (16, 1, 8, 8)
    np.testing.assert_allclose(arr.reshape(16, 64), expected.numpy(), rtol=0, atol=1e-6)
    assert shows(read_png(run / "samples.png"), torch.from_numpy(arr.reshape(16, 64)))
    vaekit("reconstruct", run, "--n", "8")
    x = load_data(cfg, run).eval_split("test")[:8]
    pairs, blocks = pairs_layout(x, model.reconstruct(x), 8)
    assert blocks == 1 and shows(read_png(run / "reconstructions.png"), pairs, ncol=8)


def test_flags_override_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nlatent_dim = 5\nhidden = [16]\n[train]\nepochs = 1\nbatch_size = 256\n')
    vaekit("--quiet", "train", "--config", cfg, "--batch-size", "512", "--out", tmp_path / "r")
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["model"]["latent_dim"] == [5] and saved["train"]["batch_size"] == 512


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--out", "{tmp}/x", "--latent-dim", "0"], "--latent-dim must be > 0, got 0"),
        (["train", "--out", "{tmp}/x", "--dataset", "{tmp}/missing.npy"], "missing.npy: no such file"),
        (["evaluate", "{tmp}/nowhere"], "nowhere: no such run directory"),
        (["train", "--out", "{tmp}/x", "--config", "{tmp}/bad.toml"], "unknown key 'latnt_dim'; did you mean 'latent_dim'?"),
    ],
)
def test_errors_are_one_line(tmp_path, args, message):
    (tmp_path / "bad.toml").write_text("[model]\nlatnt_dim = 3\n")
    proc = vaekit(*[a.format(tmp=tmp_path) for a in args], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_tensorboard_logs_scalars_and_sample_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    vaekit("--quiet", "train", "--latent-dim", "2", "--hidden", "16", "--epochs", "2", "--tensorboard", "--out", tmp_path / "r")
    acc = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    acc.Reload()
    metrics = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    got = [e.value for e in acc.Scalars("val/elbo")]
    assert got == pytest.approx([m["val/elbo"] for m in metrics], rel=1e-6)  # the same numbers as metrics.jsonl
    assert {"train/elbo", "train/kl", "val/reconstruction"} <= set(acc.Tags()["scalars"])
    images = acc.Images("samples")
    assert [i.step for i in images] == [1, 2] and images[0].width > 8


def test_flags_are_never_abbreviated(tmp_path):
    """`--epoch 1` is a typo, not `--epochs 1`: argparse's prefix matching is off (issue 27)."""
    from run_cli import vaekit_cli

    proc = vaekit_cli("train", "--out", tmp_path / "r", "--epoch", "1", check=False)
    assert proc.returncode == 2 and "unrecognized arguments: --epoch 1" in proc.stderr
    assert not (tmp_path / "r").exists()
