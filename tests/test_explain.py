"""Each `vaekit explain` topic: the claims it prints hold for the numbers it computed."""

import json
import math
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


def test_every_topic_writes_a_figure_and_states_its_claims(results):
    for topic, r in results.items():
        assert r["topic"] == topic and r["claims"]
        png = Path(r["figure"]).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
        text = format_result(r)
        assert all(c in text for c in r["claims"])
        json.dumps(r)  # plain numbers only


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
