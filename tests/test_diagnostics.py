"""The amortization gap (Cremer et al. 2018) against its definition and a closed-form optimum."""

import json

import pytest
import torch

import vaekit
from vaekit import VAE, LinearGaussian
from vaekit.cli import main
from vaekit.evaluation.diagnostics import amortization_gap, collapse_warning, fit_diagonal_q, gap_summary
from vaekit.evaluation.references import gauss_hermite_elbo
from vaekit.parts.distributions import diagonal_normal


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("diag") / "run"
    cfg = vaekit.Config().replace(model={"latent_dim": 4, "hidden": [32]}, train={"epochs": 3, "batch_size": 64})
    vaekit.train_run(cfg, out)
    return out


def test_gap_is_non_negative_on_a_trained_model(digits_run):
    _, model = vaekit.runs.checkpoint.load_run(digits_run)
    x = vaekit.load_dataset("digits").eval_split("test")[:100]
    before = [p.detach().clone() for p in model.parameters()]
    r = amortization_gap(model, x, steps=100)
    assert r.gap.shape == r.encoder_elbo.shape == (100,) and r.q_star.batch_shape == (100,)
    torch.testing.assert_close(r.gap, r.optimized_elbo - r.encoder_elbo)
    assert r.gap.mean() > 0 and r.optimized_elbo.mean() > r.encoder_elbo.mean()
    assert (r.gap > -0.05).all()  # per example only scoring noise can make it negative
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, model.parameters()))
    again = amortization_gap(model, x, steps=100)  # seeded
    torch.testing.assert_close(again.gap, r.gap)


def test_optimum_of_the_linear_gaussian_model():
    """The best diagonal Q of N(m, Λ⁻¹) is N(m, diag(1/Λ_jj)); its ELBO is known in closed form."""
    torch.manual_seed(0)
    model = VAE(6, 3, hidden=(), likelihood={"name": "gaussian", "sigma": 0.5}).double()
    lg = LinearGaussian.from_model(model)
    x = lg.marginal().sample((20,))
    post = lg.posterior(x)
    var = 1 / torch.linalg.inv(post.covariance_matrix[0]).diagonal()
    best = lg.elbo(x, post.loc, torch.diag_embed(var.expand(20, 3)))
    r = amortization_gap(model, x)
    reached = lg.elbo(x, r.q_star.mean, torch.diag_embed(r.q_star.variance))  # exact ELBO of the Q found
    assert (best - reached).abs().max() < 1e-2
    assert abs(float(r.optimized_elbo.mean() - best.mean())) < 0.05  # the 256-sample Monte Carlo score
    with torch.no_grad():
        q_enc = model.posterior(x)
    encoder = lg.elbo(x, q_enc.mean, torch.diag_embed(q_enc.variance))
    assert r.gap.mean() > 1.0 and abs(float(r.encoder_elbo.mean() - encoder.mean())) < 0.1  # untrained encoder


def test_fit_diagonal_q_on_a_deterministic_elbo():
    """L-BFGS from the prior on the Gauss–Hermite ELBO (exact here: log p(x|z) is quadratic in z) through
    the model: the closed-form best diagonal Q per example, and the model's .grad left alone."""
    torch.manual_seed(0)
    model = VAE(6, 2, hidden=(), likelihood={"name": "gaussian", "sigma": 0.5}).double()
    lg = LinearGaussian.from_model(model)
    x = lg.marginal().sample((5,))
    post = lg.posterior(x)
    var = 1 / torch.linalg.inv(post.covariance_matrix[0]).diagonal()
    zeros = torch.zeros(5, 2, dtype=torch.float64)

    def elbo_of(loc, scale):
        return gauss_hermite_elbo(model, x, diagonal_normal(loc, scale), nodes=4)[0]

    q = fit_diagonal_q(elbo_of, zeros, zeros)
    torch.testing.assert_close(q.mean, post.loc, rtol=0, atol=1e-6)
    torch.testing.assert_close(q.variance, var.expand(5, 2), rtol=0, atol=1e-6)
    assert not q.mean.requires_grad and all(p.grad is None for p in model.parameters())
    with pytest.raises(vaekit.VaekitError, match="steps"):
        fit_diagonal_q(elbo_of, zeros, zeros, steps=0)


def test_summary_and_bad_steps():
    model = VAE(5, 2, hidden=(8,))
    x = torch.bernoulli(torch.full((7, 5), 0.5))
    s = gap_summary(amortization_gap(model, x, steps=5, batch_size=3))
    assert set(s) == {"encoder_elbo", "optimized_elbo", "amortization_gap"}
    assert abs(s["amortization_gap"] - (s["optimized_elbo"] - s["encoder_elbo"])) < 1e-9
    with pytest.raises(vaekit.VaekitError, match="steps"):
        amortization_gap(model, x, steps=0)


def test_collapse_warning():
    stats = {"active_units": 1, "unit_activity": [0.5] + [0.0] * 7, "kl_per_dim": [2.0, 0.01] + [0.0] * 6}
    assert "1 of 8" in collapse_warning(stats) and "2.01 nats" in collapse_warning(stats)
    assert collapse_warning({**stats, "active_units": 4}) is None
    assert collapse_warning({"active_units": 0, "unit_activity": [], "kl_per_dim": []}) is None
    # a mixture prior: no KL per dimension, the total KL is named instead
    mixture = {**stats, "kl_per_dim": None, "kl": 3.5}
    assert "1 of 8" in collapse_warning(mixture) and "3.50 nats" in collapse_warning(mixture)


def test_evaluate_amortization_gap_flag(digits_run, capsys):
    assert main(["evaluate", str(digits_run), "--k", "10", "--json", "--amortization-gap"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["amortization_gap"] > 0
    assert abs(result["amortization_gap"] - (result["optimized_elbo"] - result["encoder_elbo"])) < 1e-9
    assert abs(result["encoder_elbo"] - result["elbo"]) < 0.5  # the same Q, scored with other samples
    assert main(["evaluate", str(digits_run), "--k", "10", "--amortization-gap"]) == 0
    assert "amortization gap" in capsys.readouterr().out
    assert main(["evaluate", str(digits_run), "--k", "10", "--json"]) == 0
    assert "amortization_gap" not in json.loads(capsys.readouterr().out)
