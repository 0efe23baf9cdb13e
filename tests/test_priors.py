"""The mixture-of-Gaussians prior: its density against a hand-written float64 formula, the Monte Carlo
ELBO it forces, and a run trained with it through the command line."""

import json
import math

import pytest
import torch
from pngread import read_png
from run_cli import vaekit_cli
from safetensors.torch import load_file

import vaekit
from vaekit.evaluation.diagnostics import collapse_warning
from vaekit.evaluation.estimates import batch_seed, evaluate_elbo, latent_statistics
from vaekit.objectives.estimators import analytic_kl
from vaekit.parts.priors import PRIORS, MixtureOfGaussians
from vaekit.runs.checkpoint import load_config

D = torch.float64


def mixture_log_density(z, means, log_scales, logits):
    """log p(z) = logsumexp_c [log softmax(logits)_c + Σ_j log N(z_j; μ_cj, σ_cj)], written out: z [..., k]."""
    z, means, log_scales, logits = (t.detach().to(D) for t in (z, means, log_scales, logits))
    r = (z.unsqueeze(-2) - means) / log_scales.exp()  # [..., K, k]
    log_normal = (-0.5 * r**2 - log_scales - 0.5 * math.log(2 * math.pi)).sum(-1)  # [..., K]
    log_weights = logits - torch.logsumexp(logits, 0)
    return torch.logsumexp(log_weights + log_normal, -1)


def perturb(prior, scale=0.5):
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(scale * torch.randn_like(p))


def test_mixture_log_prob_equals_explicit_logsumexp():
    prior = PRIORS.build("mog", {"components": 5}, latent_dim=3).double()
    assert isinstance(prior, MixtureOfGaussians) and prior.means.shape == (5, 3) and prior.logits.shape == (5,)
    perturb(prior)
    z = torch.cat([torch.randn(4, 6, 3, dtype=D), 4 * torch.randn(1, 6, 3, dtype=D)])  # far tails included
    got = prior().log_prob(z)
    assert got.shape == (5, 6) and got.dtype == D
    want = mixture_log_density(z, prior.means, prior.log_scales, prior.logits)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_mixture_elbo_is_monte_carlo_and_equals_the_draws_by_hand():
    model = vaekit.VAE(data_dim=6, latent_dim=2, hidden=(8,), prior={"name": "mog", "components": 3}).double()
    assert isinstance(model.prior, MixtureOfGaussians) and model.prior.means.shape == (3, 2), type(model.prior)
    perturb(model.prior)
    x = torch.bernoulli(torch.full((5, 6), 0.4, dtype=D))
    q = model.posterior(x)
    assert analytic_kl(q, model.prior()) is None  # no closed form against a mixture
    torch.manual_seed(11)
    z = q.rsample((7,))  # [S, B, k]
    r = vaekit.elbo(model, x, q_z=q, kl="mc", z=z)

    log_px = model.p_x_given_z(z).log_prob(x)  # [S, B]
    log_q = q.log_prob(z)
    log_p = mixture_log_density(z, model.prior.means, model.prior.log_scales, model.prior.logits)
    torch.testing.assert_close(r.elbo, (log_px - (log_q - log_p)).mean(0), atol=1e-10, rtol=0)
    torch.testing.assert_close(r.kl, (log_q - log_p).mean(0), atol=1e-10, rtol=0)
    torch.testing.assert_close(r.elbo, r.reconstruction - r.kl, atol=1e-12, rtol=0)
    # kl="auto" has no closed form to use, so it is the Monte Carlo KL of the same draws
    auto = vaekit.elbo(model, x, q_z=q, z=z)
    assert torch.equal(auto.kl, r.kl) and torch.equal(auto.elbo, r.elbo)
    with pytest.raises(ValueError, match="no closed-form KL"):
        vaekit.elbo(model, x, q_z=q, kl="analytic", z=z)


def test_collapse_warning_for_a_mixture_prior_has_no_nan_kl():
    model = vaekit.VAE(data_dim=6, latent_dim=3, hidden=(8,), prior={"name": "mog", "components": 2})
    with torch.no_grad():  # Q(z|x) ignores x: every unit inactive
        model.encoder.net[-1].weight.zero_()
    stats = latent_statistics(model, torch.bernoulli(torch.full((50, 6), 0.5)))
    assert stats["active_units"] == 0 and stats["kl_per_dim"] is None
    warning = collapse_warning(stats)
    assert warning is not None and "0 of 3" in warning
    # the KL does not split by dimension: the warning must not print "KL nan nats"
    assert "nan" not in warning, warning


def test_evaluate_elbo_accumulates_the_per_example_terms_in_float64():
    # Why the run-level check below can ask for elbo = reconstruction − kl to 1e-6: the per-example
    # float32 terms are summed in float64 (a float32 sum of 1000 values near −45 is off by ~1e-3).
    model = vaekit.VAE(data_dim=64, latent_dim=2, hidden=(16,), prior={"name": "mog", "components": 3})
    x = torch.bernoulli(torch.full((1000, 64), 0.3))
    got = evaluate_elbo(model, x, batch_size=1000, seed=4)
    with torch.random.fork_rng():
        torch.manual_seed(batch_seed(4, 0))  # the noise evaluate_elbo draws for batch 0
        r = vaekit.elbo(model, x)
    for key in ("elbo", "reconstruction", "kl"):
        want = getattr(r, key).detach().double().mean().item()
        assert abs(got[key] - want) < 1e-9, (key, got[key] - want)


# --- a run trained with the mixture prior through the command line ------------------------------

FLAGS = ["--dataset", "digits", "--prior", "mog", "--prior-components", "4", "--latent-dim", "2", "--hidden", "32"]


@pytest.fixture(scope="module")
def mog_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mog") / "run"
    vaekit_cli("--quiet", "train", *FLAGS, "--epochs", "2", "--out", out)
    return out


def test_mog_run_evaluates_consistently(mog_run):
    m = json.loads(vaekit_cli("evaluate", mog_run, "--k", "50", "--json").stdout)
    assert m["n"] == 297 and m["k"] == 50 and m["latent_dim"] == 2
    # means of float32 per-example terms summed in float64: rounding is ~1e-7 nats
    assert abs(m["elbo"] - (m["reconstruction"] - m["kl"])) < 1e-6
    assert m["log_likelihood"] >= m["elbo"] - 3 * m["log_likelihood_stderr"]
    assert m["kl_per_dim"] is None and m["kl_per_dim_sums_to_kl"] is False  # a mixture: no split by dimension
    assert isinstance(m["active_units"], int) and 0 <= m["active_units"] <= 2


def test_mog_run_pictures_and_report(mog_run):
    vaekit_cli("plot", mog_run)
    for name in ("samples", "manifold", "traversals", "latent_map"):
        assert (mog_run / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    manifold = read_png(mog_run / "manifold.png")  # vaekit's own grid writer: chunks and CRCs checked
    assert min(manifold.shape[:2]) >= 15 * 48 and manifold.std() > 0  # 15×15 decoded 8×8 digits, each ≥ 48 px
    assert read_png(mog_run / "samples.png").std() > 0
    vaekit_cli("report", mog_run, "--k", "20")
    page = (mog_run / "report.html").read_text(encoding="utf-8")
    assert "does not split by dimension" in page and '"name": "mog"' in page


def test_mog_prior_is_learned_and_saved(mog_run):
    cfg = load_config(mog_run)
    assert cfg.model.prior.as_dict() == {"name": "mog", "components": 4}
    torch.manual_seed(cfg.train.seed)  # what train_run does before building the model
    initial = vaekit.build_model(cfg.model).state_dict()
    saved = load_file(mog_run / "model.safetensors")
    assert saved.keys() == initial.keys()
    for name in ("prior.means", "prior.log_scales", "prior.logits"):
        assert saved[name].shape == initial[name].shape
    assert saved["prior.means"].shape == (4, 2)
    assert (saved["prior.means"] - initial["prior.means"]).abs().max() > 1e-3  # Adam moved them
    assert not torch.equal(saved["prior.logits"], initial["prior.logits"])
