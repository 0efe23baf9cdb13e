"""Each `vaekit explain` topic: the claims it prints hold for the numbers it computed."""

import functools
import json
import math
import re
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from vaekit.cli import main, parser
from vaekit.errors import VaekitError
from vaekit.evaluation.references import gauss_hermite_elbo
from vaekit.explain import TOPICS, explain, format_result, linear_problem, toy_problem
from vaekit.parts.distributions import diagonal_normal

pytest.importorskip("matplotlib")  # the figures; the numbers alone would not need it


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain")
    return {topic: explain(topic, out) for topic in TOPICS}


NUMBER = r"(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"


def stated(claim, before):
    """The number printed right after `before` in a claim, as printed."""
    found = re.search(re.escape(before) + r"\s*" + NUMBER, claim)
    assert found, (before, claim)
    return found.group(1)


def agrees(text, exact, tol=0.0):
    """The number printed as `text` is `exact` (computed in the test) to the digits printed, within tol."""
    mantissa, _, exponent = text.lower().partition("e")
    unit = 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))
    return abs(float(text) - exact) <= unit / 2 + tol + 1e-12 * abs(exact)


@functools.cache
def toy_grid():
    """The toy problem integrated here on a grid of its own ([−8, 8]², step 0.02; the posterior's std is
    ≈ 1): Bernoulli log p(x|z) from the decoder's logits, log p(z) = N(0, I), and log p(x)."""
    model, x = toy_problem()
    axis = torch.arange(-400, 401, dtype=torch.float64) * 0.02
    z = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)

    def log_lik(z):
        h = model.decoder.net(z)
        return (x * h - torch.nn.functional.softplus(h)).sum(-1)

    with torch.no_grad():
        log_joint = log_lik(z) - 0.5 * (z**2).sum(-1) - math.log(2 * math.pi)
    log_cell = 2 * math.log(0.02)
    return log_lik, z, log_joint, float(torch.logsumexp(log_joint, 0) + log_cell), log_cell


def diagonal_log_q(r, z):
    """log Q(z) of the best diagonal Q the posterior topic reports (the elbo and reparameterization topics
    use the same fitted Q of the same toy problem)."""
    m, s = torch.tensor(r["q_mean"], dtype=torch.float64), torch.tensor(r["q_std"], dtype=torch.float64)
    return (-0.5 * ((z - m) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum(-1), m, s


def check_posterior(r, results):
    c = r["claims"]
    _, z, log_joint, log_px, log_cell = toy_grid()
    assert agrees(stated(c[0], "log p(x) ="), log_px, 1e-6)
    w = (log_joint + log_cell - log_px).exp()  # p(z|x) × cell area
    mean = (w[:, None] * z).sum(0)
    cov = (w[:, None, None] * (z - mean)[:, :, None] * (z - mean)[:, None, :]).sum(0)
    assert agrees(stated(c[1], "correlation"), float(cov[0, 1] / cov.diagonal().prod().sqrt()), 1e-6)
    log_q, _, _ = diagonal_log_q(r, z)
    kl = float(((log_q + log_cell).exp() * (log_q - log_joint)).sum()) + log_px  # E_Q[log Q − log p(x, z)] + log p(x)
    assert agrees(stated(c[2], "KL(Q ‖ p(z|x)) ="), kl, 1e-6)
    # "best diagonal Q (max ELBO)": the grid ELBO is flat there in (μ, log σ) (Q was fitted by Gauss–Hermite,
    # which this grid matches to ~10⁻⁶ nats, so not exactly 0; at the grid posterior's own moments it is 0.45)
    loc = torch.tensor(r["q_mean"], dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(r["q_std"], dtype=torch.float64).log().requires_grad_(True)
    log_q = (-0.5 * ((z - loc) / log_scale.exp()) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
    grads = torch.autograd.grad(((log_q + log_cell).exp() * (log_joint - log_q)).sum(), [loc, log_scale])
    assert max(float(g.abs().max()) for g in grads) < 1e-3
    W = torch.tensor([[1.0, 0.5], [-0.4, 1.2], [0.8, -0.6]], dtype=torch.float64)  # the topic's linear decoder, σ = 0.7
    _, _, x_lin = linear_problem(W, 0.7)
    cov_x = W @ W.T + 0.49 * torch.eye(3, dtype=torch.float64)  # x ~ N(0, WWᵀ + σ²I)
    exact = float(torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov_x).log_prob(x_lin))
    assert agrees(stated(c[3], "grid log p(x) ="), exact, 1e-6) and agrees(stated(c[3], "closed form"), exact)
    assert abs(float(stated(c[3], "gives KL ="))) < 1e-9


def check_elbo(r, results):
    c = r["claims"]
    log_lik, z, log_joint, log_px, log_cell = toy_grid()
    log_q, _, _ = diagonal_log_q(results["posterior"], z)
    q = (log_q + log_cell).exp()
    elbo_q = float((q * (log_joint - log_q)).sum())  # the ELBO as a sum over the grid, not Gauss–Hermite
    assert agrees(stated(c[0], "log p(x) ="), log_px, 1e-6) and agrees(stated(c[0], "ELBO(Q) ="), elbo_q, 1e-5)
    assert agrees(stated(c[1], "log p(x) − ELBO ="), log_px - elbo_q, 1e-5)
    assert agrees(stated(c[1], "KL(Q ‖ p(z|x)) ="), log_px - elbo_q, 1e-5)
    with torch.no_grad():
        rec = log_lik(z)
    se = math.sqrt(float((q * (rec - (q * rec).sum()) ** 2).sum()) / 100_000)  # of a 100,000-draw mean
    mc, mc_se = stated(c[2], "samples:"), stated(c[2], "±")
    assert abs(float(mc) - elbo_q) < 4 * se and agrees(mc_se, se, 0.02 * se)
    bounds = [float(stated(c[3], f"L_{k} =")) for k in r["iwae_k"]]
    assert abs(bounds[0] - elbo_q) < 4 * r["iwae_stderr"][0]  # L_1 is the ELBO, in expectation
    assert all(a < b for a, b in pairwise(bounds)) and bounds[-1] < log_px + 4 * r["iwae_stderr"][-1]


def check_mean_field(r, results):
    from vaekit.explain.mean_field import CORRELATED_W

    c = r["claims"]
    W, sigma = torch.tensor(CORRELATED_W, dtype=torch.float64), 0.5
    _, _, x = linear_problem(W, sigma)
    precision = torch.eye(2, dtype=torch.float64) + W.T @ W / sigma**2  # Λ of p(z|x) = N(Λ⁻¹Wᵀx/σ², Λ⁻¹)
    cov = torch.linalg.inv(precision)
    assert agrees(stated(c[0], "posterior correlation"), float(cov[0, 1] / cov.diagonal().prod().sqrt()))
    q_var = re.search(r"1/Λ_jj = \[(.*?)\]", c[0]).group(1).split(", ")
    marginal = re.search(r"marginal posterior variances \[(.*?)\]", c[0]).group(1).split(", ")
    assert all(agrees(t, v) for t, v in zip(q_var, (1 / precision.diagonal()).tolist(), strict=True))
    assert all(agrees(t, v) for t, v in zip(marginal, cov.diagonal().tolist(), strict=True))
    kl = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))
    kls = re.findall(r"= " + NUMBER, c[1])
    assert len(kls) == 3 and all(agrees(t, kl) for t in kls)
    assert float(stated(c[2], "max difference")) < 1e-6
    torch.testing.assert_close(torch.tensor(r["fitted_q_mean"], dtype=torch.float64),
                               cov @ W.T @ x[0] / sigma**2, atol=1e-6, rtol=0)


def check_reparameterization(r, results):
    """The exact variances, from a quadrature over ε ~ N(0, I) (z = μ + σε): per draw, the score function's
    f(z)·(ε/σ, ε² − 1) and the reparameterized (∇f(z), ∇f(z)·σε), f = log p(x|z); a mean of S draws has
    1/S of it. The stated values are means over 2000 repeats: within 4 of their relative standard errors
    (from the same quadrature's fourth moments, at S = 1, the largest)."""
    log_lik, _, _, _, _ = toy_grid()
    axis = torch.arange(-300, 301, dtype=torch.float64) * 0.025
    eps = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    w = (-0.5 * (eps**2).sum(-1)).exp() * 0.025**2 / (2 * math.pi)
    _, m, s = diagonal_log_q(results["posterior"], eps)
    z = (m + s * eps).requires_grad_(True)
    f = log_lik(z)
    (grad,) = torch.autograd.grad(f.sum(), z)
    f = f.detach()[:, None]
    exact, tol = {}, {}
    for name, g in (("sf", torch.cat([f * eps / s, f * (eps**2 - 1)], 1)), ("rep", torch.cat([grad, grad * s * eps], 1))):
        d2 = ((g - (w[:, None] * g).sum(0)) ** 2).sum(1)  # squared deviation, summed over (μ, log σ)
        exact[name] = float((w * d2).sum())
        tol[name] = 4 * math.sqrt(float((w * (d2 - exact[name]) ** 2).sum()) / 2000) / exact[name]
    pairs = re.findall(r"S=(\d+): (\S+) vs ([^,\s]+)", r["claims"][0])
    assert [int(n) for n, _, _ in pairs] == r["num_samples"]
    for n, sf, rep in pairs:
        assert abs(float(sf) * int(n) / exact["sf"] - 1) < tol["sf"], (n, sf, exact["sf"] / int(n))
        assert abs(float(rep) * int(n) / exact["rep"] - 1) < tol["rep"], (n, rep, exact["rep"] / int(n))
    low, high = (float(v) for v in re.search(r"by (\d+)× to (\d+)×", r["claims"][1]).groups())
    ratio = exact["sf"] / exact["rep"]
    assert ratio * (1 - tol["sf"] - tol["rep"]) - 0.5 < low <= high < ratio * (1 + tol["sf"] + tol["rep"]) + 0.5
    assert float(stated(r["claims"][2], "at most")) < 4


def check_beta(r, results):
    """The five VAEs trained again (seeded: the same weights): the rate in closed form, mean over the test
    split of Σ_j KL(N(μ_j, σ_j²) ‖ N(0, 1)); the distortion from 256 draws of z per example, within 4
    Monte Carlo standard errors of the topic's one draw per example."""
    from vaekit.runs.config import Config
    from vaekit.runs.experiment import load_data, train_run

    stated_pairs = re.findall(r"([\d.]+): ([\d.]+)/([\d.]+)", r["claims"][0])
    assert [float(b) for b, _, _ in stated_pairs] == r["beta"]
    rates = []
    for beta, rate, distortion in stated_pairs:
        cfg = Config().replace(model={"latent_dim": 8, "hidden": [64]},
                               train={"epochs": 8, "batch_size": 64, "lr": 3e-3, "objective": {"name": "elbo", "beta": float(beta)}})
        model = train_run(cfg, progress=False).model
        x = load_data(cfg).eval_split("test")
        with torch.no_grad():
            q = model.posterior(x).base_dist
            rates.append(float((0.5 * (q.loc**2 + q.scale**2 - 1) - q.scale.log()).sum(-1).double().mean()))
            torch.manual_seed(0)
            h = model.decoder.net(q.loc + q.scale * torch.randn(256, *q.loc.shape))
            log_lik = (x * h - torch.nn.functional.softplus(h)).sum(-1).double()  # [256, N]
        se = float(log_lik.var(0).sum().sqrt()) / x.shape[0]
        assert agrees(rate, rates[-1], 1e-6) and agrees(distortion, -float(log_lik.mean()), 4 * se), beta
    assert ("the rate falls as β grows" in r["claims"]) == all(a > b for a, b in pairwise(rates))
    elbos = [-(float(rate) + float(d)) for _, rate, d in stated_pairs]
    assert agrees(stated(r["claims"][2], "at β ="), r["beta"][elbos.index(max(elbos))])


CHECKS = {"posterior": check_posterior, "elbo": check_elbo, "mean-field": check_mean_field,
          "reparameterization": check_reparameterization, "beta": check_beta}


def test_every_topic_writes_a_figure_and_states_its_claims(results):
    """Each topic's figure is written and its claims printed; every number a claim states is checked
    against one computed here by other means (its own grid, closed forms, quadrature, the models again)."""
    assert set(results) == set(CHECKS)
    for topic, r in results.items():
        assert r["topic"] == topic and r["claims"]
        png = Path(r["figure"]).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
        text = format_result(r)
        assert all(c in text for c in r["claims"])
        json.dumps(r)  # plain numbers only
        CHECKS[topic](r, results)


def test_posterior(results):
    r = results["posterior"]
    assert r["kl_q_posterior"] > 0.05  # the nonlinear posterior is not a diagonal Gaussian
    assert abs(r["posterior_correlation"]) > 0.2
    assert abs(r["linear_kl_exact_q"]) < 1e-9  # Q = the exact posterior of the linear-Gaussian model
    assert abs(r["linear_log_px_grid"] - r["linear_log_px_exact"]) < 1e-6  # the grid integration itself


def test_elbo_gap_is_the_kl_to_the_posterior(results):
    r = results["elbo"]
    assert r["elbo"] < r["log_px_grid"]
    assert abs(r["gap"] - r["kl_q_posterior_grid"]) <= 1e-3 * r["kl_q_posterior_grid"]
    assert abs(r["elbo"] - (r["reconstruction"] - r["kl_q_prior"])) < 1e-12
    assert abs(r["elbo_monte_carlo"] - r["elbo"]) < 4 * r["elbo_monte_carlo_stderr"]  # vaekit.elbo agrees
    bounds, ses = r["iwae_bound"], r["iwae_stderr"]
    assert all(a < b for a, b in pairwise(bounds))  # L_k grows with k …
    assert bounds[-1] <= r["log_px_grid"] + 3 * ses[-1]  # … and stays below log p(x)
    assert r["log_px_grid"] - bounds[-1] < 0.1 * (r["log_px_grid"] - r["elbo"])  # closing 90% of the gap


def test_gauss_hermite_elbo_is_exact_for_a_quadratic_log_likelihood():
    """With a Gaussian linear decoder E_Q[log p(x|z)] is quadratic in z: the rule is exact."""
    model, lg, x = linear_problem(torch.tensor([[1.0, 0.5], [-0.4, 1.2], [0.8, -0.6]], dtype=torch.float64), 0.7)
    q = diagonal_normal(torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor([[0.5, 0.8]], dtype=torch.float64))
    with torch.no_grad():
        value = gauss_hermite_elbo(model, x, q, nodes=4)[0]
    torch.testing.assert_close(value, lg.elbo(x, q.mean, torch.diag_embed(q.variance)), rtol=0, atol=1e-10)


def test_mean_field(results):
    r = results["mean-field"]
    assert abs(r["posterior_correlation"]) > 0.5
    assert r["kl_q_posterior"] > 0.1
    assert math.isclose(r["kl_q_posterior"], r["kl_closed_form"], rel_tol=1e-9)
    assert math.isclose(r["kl_q_posterior"], r["elbo_gap"], rel_tol=1e-9)
    rho = r["posterior_correlation"]
    assert math.isclose(r["kl_closed_form"], -0.5 * math.log(1 - rho**2), rel_tol=1e-9)  # k = 2
    assert r["fitted_vs_closed_form"] < 1e-6
    assert all(q < p for q, p in zip(r["q_var"], r["posterior_var"]))  # mean field is too narrow


def test_reparameterization(results):
    r = results["reparameterization"]
    sf, rep = r["variance_score_function"], r["variance_reparameterization"]
    assert all(b < a for a, b in zip(sf, rep))  # lower at every sample count
    for v in (sf, rep):  # ∝ 1/S: the slope on log-log axes is −1
        slope = (math.log(v[-1]) - math.log(v[0])) / (math.log(r["num_samples"][-1]) - math.log(r["num_samples"][0]))
        assert -1.15 < slope < -0.85
    assert max(r["mean_difference_z"]) < 4  # both unbiased for the same gradient


def test_beta_rate_falls_as_beta_grows(results):
    r = results["beta"]
    assert r["beta"] == sorted(r["beta"])
    assert all(a > b for a, b in zip(r["rate"], r["rate"][1:]))
    assert r["distortion"][-1] > r["distortion"][0]
    assert "the rate falls as β grows" in r["claims"]


def test_toy_problem_is_seeded():
    (m1, x1), (m2, x2) = toy_problem(), toy_problem()
    assert torch.equal(x1, x2) and all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def test_cli_explain(tmp_path, capsys):
    assert main(["explain", "mean-field", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vaekit explain mean-field") and "KL(Q ‖ p(z|x))" in out
    assert (tmp_path / "explain_mean_field.png").exists()
    assert main(["explain", "mean-field", "--out", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kl_q_posterior"] > 0
    with pytest.raises(VaekitError, match="unknown topic"):
        explain("nope", tmp_path)
    explain_parser = parser()._subparsers._group_actions[0].choices["explain"]
    assert tuple(explain_parser._positionals._group_actions[0].choices) == TOPICS
