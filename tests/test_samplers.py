"""Post-hoc samplers and sample quality: the mixture's EM against scikit-learn's from one start, the Fréchet
distance against scipy's matrix square root and the 1-D closed form, precision/recall against a brute-force
count, and the fit-sampler / sample / evaluate --samples commands against the library on the same draws."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vaekit import load
from vaekit.cli import main
from vaekit.evaluation.features import RECIPE, cache_root, feature_space, grey_levels
from vaekit.evaluation.latents import posterior_summary
from vaekit.evaluation.mixture import Mixture, fit_mixture
from vaekit.evaluation.quality import frechet_distance, precision_recall
from vaekit.runs.checkpoint import load_config
from vaekit.runs.experiment import load_data
from vaekit.runs.samplers import draw_codes, sample_quality

scipy_linalg = pytest.importorskip("scipy.linalg")
mixture_sklearn = pytest.importorskip("sklearn.mixture")


def blobs(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 3.0, 1.0]], dtype=torch.float64)
    z = centres[torch.randint(3, (n,), generator=g)] + torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.7
    return z @ torch.tensor([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_mixture_em_equals_scikit_learn_from_the_same_start():
    z = blobs()
    start = Mixture(torch.full((3,), 1 / 3, dtype=torch.float64), z[:3].clone(),
                    torch.eye(3, dtype=torch.float64).expand(3, 3, 3).clone())
    ours, mean_log_lik = fit_mixture(z, 3, iterations=25, tol=0.0, start=start)
    theirs = mixture_sklearn.GaussianMixture(3, covariance_type="full", max_iter=25, tol=0.0, reg_covar=1e-6,
                                             weights_init=start.weights.numpy(), means_init=start.means.numpy(),
                                             precisions_init=np.linalg.inv(start.covariances.numpy()))
    with pytest.warns(Warning):  # scikit-learn says it did not converge: tol 0 runs every iteration, as ours
        theirs.fit(z.numpy())
    np.testing.assert_allclose(ours.weights.numpy(), theirs.weights_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.means.numpy(), theirs.means_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours.covariances.numpy(), theirs.covariances_, rtol=1e-8, atol=1e-10)
    assert abs(mean_log_lik - theirs.score(z.numpy())) < 1e-9


def test_mixture_density_is_torchs_and_recovers_the_blobs():
    z = blobs(1500, seed=1)
    mixture, mean_log_lik = fit_mixture(z, 3, seed=0)
    d = mixture.distribution()
    assert abs(float(d.log_prob(z).mean()) - mean_log_lik) < 1e-10
    fitted = sorted(mixture.means[:, 0].tolist())
    truth = sorted((torch.tensor([[0.0, 0, 0], [4, 1, -2], [-3, 3, 1]], dtype=torch.float64)
                    @ torch.tensor([[1.0, 0.3, 0], [0, 1, 0.5], [0, 0, 1]], dtype=torch.float64))[:, 0].tolist())
    assert np.allclose(fitted, truth, atol=0.1)


def test_frechet_distance_against_scipy_and_the_one_dimensional_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(300, 6, generator=g, dtype=torch.float64) * 1.5 + 0.4
    mu_a, mu_b, ca, cb = a.mean(0).numpy(), b.mean(0).numpy(), np.cov(a.T.numpy()), np.cov(b.T.numpy())
    root = scipy_linalg.sqrtm(ca @ cb).real  # pytorch-fid's formula
    want = ((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(root)
    assert abs(frechet_distance(a, b) - want) < 1e-8 * max(1.0, want)
    x, y = torch.tensor([[0.0], [2.0]], dtype=torch.float64), torch.tensor([[1.0], [7.0]], dtype=torch.float64)
    sd_x, sd_y = x.std().item(), y.std().item()
    assert abs(frechet_distance(x, y) - ((1.0 - 4.0) ** 2 + (sd_x - sd_y) ** 2)) < 1e-12


def test_precision_recall_against_a_brute_force_count():
    g = torch.Generator().manual_seed(3)
    real = torch.randn(150, 4, generator=g, dtype=torch.float64)
    fake = torch.randn(120, 4, generator=g, dtype=torch.float64) * 1.3 + 0.5

    def covered(points, centres):
        radii = [sorted(float((c - o).norm()) for o in centres)[3] for c in centres]  # k = 3, itself at 0
        return np.mean([any(float((p - c).norm()) <= r for c, r in zip(centres, radii)) for p in points])

    assert precision_recall(real, fake, chunk=37) == (covered(fake, real), covered(real, fake))
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("samplers") / "run"
    assert main(["--quiet", "train", "--out", str(out), "--epochs", "30", "--latent-dim", "4", "--hidden", "64",
                 "--binarize", "none", "--likelihood", "continuous-bernoulli", "--lr", "3e-3"]) == 0
    return out


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_fit_sampler_gmm_is_the_mixture_of_the_training_means_and_sample_decodes_its_draws(run, tmp_path):
    assert main(["--quiet", "fit-sampler", str(run), "--sampler", "gmm", "--components", "5"]) == 0
    saved = load_file(run / "samplers" / "gmm.safetensors")
    model = load(run)
    means = posterior_summary(model, load_data(load_config(run), run).eval_split("train"))[0]
    want, _ = fit_mixture(means, 5, seed=0)
    assert torch.equal(saved["means"], want.means) and torch.equal(saved["covariances"], want.covariances)
    assert main(["--quiet", "sample", str(run), "--sampler", "gmm", "--n", "16", "--seed", "2",
                 "--out", str(tmp_path / "s.npy")]) == 0
    z = draw_codes(run, "gmm", 16, seed=2)
    assert np.array_equal(np.load(tmp_path / "s.npy").reshape(16, -1), model.decode(z).numpy())
    # the mixture is closer to the codes than the prior is (latent space, same number of draws)
    prior = torch.randn(means.shape[0], 4, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(means, draw_codes(run, "gmm", means.shape[0])) < 0.2 * frechet_distance(means, prior)


def test_two_stage_is_a_run_of_its_own_and_draws_its_means(run):
    assert main(["--quiet", "fit-sampler", str(run), "--sampler", "two-stage", "--epochs", "2", "--hidden", "32"]) == 0
    stage2 = load(run / "samplers" / "two-stage")
    assert (stage2.data_dim, stage2.latent_dim) == (4, 4)
    torch.manual_seed(7)
    assert torch.equal(draw_codes(run, "two-stage", 10, seed=7), stage2.sample(10, mean=False))
    assert stage2.decoder.head.log_sigma.shape == (4,)  # a σ per dimension (module docstring of runs.samplers)


def test_a_second_fit_of_the_same_runs_sampler_waits_its_turn(run, capsys):
    """A fit in progress (its lock held, its two-stage.fitting half written) is refused to a second fit-sampler, in
    one line, and its folder kept (the second removed it as an interrupted fit's leftovers and trained there)."""
    import os

    from vaekit.files import RunLock

    (run / "samplers").mkdir(exist_ok=True)
    with RunLock(run):  # the lock a fit-sampler (or a training) of this run holds
        (run / "samplers" / "two-stage.fitting").mkdir()
        (run / "samplers" / "two-stage.fitting" / "half.bin").write_bytes(b"being written")
        for sampler in ("two-stage", "gmm"):
            code = main(["--quiet", "fit-sampler", str(run), "--sampler", sampler, "--epochs", "1"])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2 and err == [(f"vaekit: error: {run}: another vaekit process (pid {os.getpid()}) holds this "
                                         "run (training it, or fitting a sampler of it); wait for it to finish or stop it")]
        assert (run / "samplers" / "two-stage.fitting" / "half.bin").read_bytes() == b"being written"
    (run / "samplers" / "two-stage.fitting" / "half.bin").unlink()
    (run / "samplers" / "two-stage.fitting").rmdir()
    assert main(["--quiet", "fit-sampler", str(run), "--sampler", "gmm", "--components", "2"]) == 0  # released


def test_a_crafted_mixture_is_refused_in_one_line(run, capsys):
    main(["--quiet", "fit-sampler", str(run), "--sampler", "gmm", "--components", "2"])
    path = run / "samplers" / "gmm.safetensors"
    t = load_file(path)
    t["covariances"][0] = -t["covariances"][0]
    save_file(t, path)
    assert main(["--quiet", "sample", str(run), "--sampler", "gmm"]) == 2
    assert "not symmetric positive definite" in capsys.readouterr().err
    save_file({**t, "means": torch.zeros(2, 9, dtype=torch.float64)}, path)
    assert main(["--quiet", "sample", str(run), "--sampler", "gmm"]) == 2
    assert "do not make a mixture over this run's 4 latents" in capsys.readouterr().err
    path.unlink()


def test_evaluate_samples_is_the_librarys_measure_in_the_stored_classifiers_space(run, capsys):
    assert main(["--quiet", "evaluate", str(run), "--k", "4", "--elbo-samples", "2", "--n", "20", "--samples", "150",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["sample_quality"]
    stored = list(cache_root().glob("digits-*.safetensors"))
    assert len(stored) == 1 and "classifier of digits" in got["features"] and "not Inception" in got["features"]
    assert got == sample_quality(run, 150)  # the second time from the stored classifier: the same features
    dataset = load_data(load_config(run), run)
    space = feature_space(dataset)
    real, train = grey_levels(dataset, "test")[:150], grey_levels(dataset, "train")[:150]
    assert got["reference_frechet_distance"] == frechet_distance(space.features(real), space.features(train))
    accuracy = float(space.name.split("test accuracy ")[1].split(";")[0])
    assert accuracy > 0.9  # a classifier whose features mean something on these digits
    stored[0].write_bytes(b"damaged")
    assert sample_quality(run, 150) == got  # retrained, seeded: the same classifier again


def test_sampler_files_that_are_not_what_they_claim_are_refused_in_one_line(run, tmp_path, capsys):
    import os
    import shutil
    import subprocess
    import sys

    bad = tmp_path / "bad"
    shutil.copytree(run, bad, ignore=shutil.ignore_patterns("samplers"))
    (tmp_path / "elsewhere").mkdir()
    (bad / "samplers").symlink_to(tmp_path / "elsewhere")  # a link in a run from someone else: nothing through it
    assert main(["--quiet", "fit-sampler", str(bad), "--sampler", "gmm"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err and not any((tmp_path / "elsewhere").iterdir())
    (bad / "samplers").unlink()
    (bad / "samplers").mkdir()
    os.mkfifo(bad / "samplers" / "gmm.safetensors")  # would block a reader for ever
    proc = subprocess.run([sys.executable, "-m", "vaekit", "sample", str(bad), "--sampler", "gmm"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and proc.stderr.count("\n") == 1
    (bad / "samplers" / "gmm.safetensors").unlink()
    with open(bad / "samplers" / "gmm.safetensors", "wb") as f:
        f.truncate(300 << 20)  # sparse: claims 300 MB on no disk; a reader would allocate what it claims
    assert main(["--quiet", "sample", str(bad), "--sampler", "gmm"]) == 2
    assert "more than the 268,435,456 such a file can hold" in capsys.readouterr().err
    save_file({"weights": torch.ones(1), "means": torch.zeros(1, 4), "covariances": torch.eye(4)[None]},
              bad / "samplers" / "gmm.safetensors")
    assert main(["--quiet", "sample", str(bad), "--sampler", "gmm"]) == 2
    assert "vaekit writes float64" in capsys.readouterr().err


def test_bad_sampler_and_quality_requests_are_one_line(run, capsys):
    cases = [(["fit-sampler", str(run), "--sampler", "two-stage", "--hidden", "-3"], "--hidden must be widths"),
             (["fit-sampler", str(run), "--sampler", "gmm", "--components", "0"], "--components must be"),
             (["evaluate", str(run), "--samples", "2", "--k", "2", "--n", "5"], "needs at least 4 samples"),
             (["evaluate", str(run), "--sampler", "gmm", "--k", "2"], "give --samples too"),
             (["sample", str(run), "--sampler", "gmm", "--label", "3"], "--label 3: this model is not conditioned"),
             (["fit-sampler", str(run), "--sampler", "two-stage", "--epochs", "0"], "--epochs must be a number of epochs from 1 to 1,099,511,627,776, got 0")]
    for argv, said in cases:
        assert main(["--quiet", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err


def test_a_mixture_of_more_components_than_distinct_codes_is_refused():
    with pytest.raises(Exception, match="take 1 distinct values: fewer than the 2 components"):
        fit_mixture(torch.zeros(50, 3), 2)


def test_the_classifier_cache_is_measured_on_load_and_optional(run, tmp_path, monkeypatch, caplog):
    import logging

    want = sample_quality(run, 150)
    (path,) = cache_root().glob("digits-*.safetensors")
    zeros = {k: torch.zeros_like(v) for k, v in load_file(path).items()}
    save_file(zeros, path, metadata={"recipe": RECIPE})  # the right recipe, weights that no longer classify
    assert sample_quality(run, 150) == want  # a classifier that no longer classifies: trained again, the same
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    with caplog.at_level(logging.WARNING):
        assert sample_quality(run, 150) == want  # not stored, but measured all the same
    assert "will be trained again next time" in caplog.text


def test_the_largest_seed_evaluates(run, capsys):
    assert main(["--quiet", "evaluate", str(run), "--seed", str(2**63 - 1), "--k", "2", "--n", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["protocol"]["seed"] == 2**63 - 1


def test_fit_sampler_finds_data_that_moved(tmp_path, capsys):
    import numpy as np

    data = tmp_path / "v.npy"
    np.save(data, np.random.default_rng(0).random((200, 6)).astype(np.float32))
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--dataset", str(data), "--likelihood", "gaussian", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--out", str(run)]) == 0
    data.rename(tmp_path / "moved.npy")
    assert main(["--quiet", "fit-sampler", str(run), "--sampler", "gmm", "--components", "2"]) == 2
    assert "the run's data are gone (moved or removed)" in capsys.readouterr().err
    assert main(["--quiet", "fit-sampler", str(run), "--sampler", "gmm", "--components", "2",
                 "--dataset", str(tmp_path / "moved.npy")]) == 0
    assert (run / "samplers" / "gmm.safetensors").is_file()


def test_a_fit_repeats_to_the_byte_and_a_sampler_of_older_weights_is_refused(run, tmp_path, capsys):
    """The same --seed gives the same files (the second stage's first weights came from the process's unseeded
    generator; the mixture's header order varied); after `train --resume` the fitted sampler is of another encoder,
    and sample/evaluate refuse it (they used it without a word)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "samplers", ignore_errors=True)
    files = {"gmm": copy / "samplers" / "gmm.safetensors", "two-stage": copy / "samplers" / "two-stage" / "model.safetensors"}
    for name, path in files.items():
        fitted = []
        for _ in range(2):
            torch.rand(7)  # the process's generator moves between fits; the fit must not depend on it
            assert main(["--quiet", "fit-sampler", str(copy), "--sampler", name, "--epochs", "2", "--hidden", "16",
                         "--components", "3", "--seed", "5"]) == 0
            fitted.append(path.read_bytes())
        assert fitted[0] == fitted[1], name
    capsys.readouterr()
    assert main(["--quiet", "train", "--out", str(copy), "--resume", "--epochs", "31"]) == 0
    for name, where in (("gmm", files["gmm"]), ("two-stage", files["two-stage"].parent)):
        code = main(["--quiet", "sample", str(copy), "--sampler", name, "--n", "4", "--out", str(tmp_path / "s.npy")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == [(f"vaekit: error: {where}: fitted on other weights than {copy / 'model.safetensors'} "
                                     f"has now (trained further since?); fit it again: vaekit fit-sampler RUN --sampler "
                                     f"{name}")]
    assert main(["--quiet", "fit-sampler", str(copy), "--sampler", "gmm", "--components", "3"]) == 0
    assert main(["--quiet", "sample", str(copy), "--sampler", "gmm", "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
