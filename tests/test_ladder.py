"""The ladder VAE (`--inference ladder`, Sønderby et al. 2016): Q drawn top-down, each Q(z_l|z_{l+1}, x) the
normalized product of the prior's step and a bottom-up Gaussian, checked against the Gaussian product
identity; the exact posterior of a linear-Gaussian stack (orthogonal decoder columns) is a ladder Q, so
every bound equals the closed-form log p(x); DReG over the shared networks; the command line. (Its
detached Q is tested with the bottom-up one's in test_hierarchical.py.)"""

import json
import math

import pytest
import torch
from dreg_check import check_dreg
from run_cli import assert_resumed_equals_straight, straight_and_resumed, vaekit_cli
from test_hierarchical import assert_exact_until_perturbed, linear_stack

import vaekit
from vaekit.errors import VaekitError
from vaekit.evaluation.estimates import evaluate_all
from vaekit.objectives.estimators import elbo
from vaekit.runs.checkpoint import load_run
from vaekit.runs.experiment import load_data

D = torch.float64
LOG_2PI = math.log(2 * math.pi)


def log_normal(z, loc, var):
    return (-0.5 * (LOG_2PI + var.log() + (z - loc) ** 2 / var)).sum(-1)


def ladder(**settings):
    torch.manual_seed(0)
    return vaekit.VAE(data_dim=12, latent_dim=(4, 2), hidden=(8,), activation="tanh", **{"inference": "ladder",
                                                                                         **settings}).to(D)


def binary(n, seed=1):
    return (torch.rand(n, 12, generator=torch.Generator().manual_seed(seed), dtype=D) < 0.4).to(D)


def test_q_is_the_prior_step_times_the_bottom_up_gaussian_renormalized():
    """log Q(z₁|z₂, x) = log p(z₁|z₂) + log N(z₁; μ̂₁, σ̂₁²) − log N(μ̂₁; μ_p, σ_p² + σ̂₁²): the product of
    two Gaussians written as its normalizer, not as the precision-weighted form the code uses; and the
    ELBO is the five log-densities on the same draws."""
    model, x = ladder(), binary(5)
    torch.manual_seed(3)
    z = model.posterior(x).rsample((7,))
    z1, z2 = z[..., :4], z[..., 4:]
    mu1, log_var1 = model.encoder.first.net(x).chunk(2, -1)  # bottom-up: x → N(μ̂₁, σ̂₁²)
    mu2, log_var2 = model.encoder.upper[0].net(mu1).chunk(2, -1)  # μ̂₁ → N(μ̂₂, σ̂₂²) = Q(z₂|x)
    mu_p, log_var_p = model.prior.lower[0].net(z2).chunk(2, -1)  # p(z₁|z₂)
    log_p1 = log_normal(z1, mu_p, log_var_p.exp())
    log_q1 = log_p1 + log_normal(z1, mu1, log_var1.exp()) - log_normal(mu1, mu_p, log_var_p.exp() + log_var1.exp())
    log_q2 = log_normal(z2, mu2, log_var2.exp())
    torch.testing.assert_close(model.posterior(x).log_prob(z), log_q1 + log_q2, rtol=0, atol=1e-12)
    logits = model.decoder.net.net(z1)
    log_px = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)
    log_p2 = (-0.5 * (LOG_2PI + z2**2)).sum(-1)
    by_hand = (log_px + log_p1 + log_p2 - log_q1 - log_q2).mean(0)
    torch.testing.assert_close(elbo(model, x, z=z, num_samples=7).elbo, by_hand, rtol=0, atol=1e-12)
    # the same parameters as the bottom-up model: only the way Q is drawn differs
    torch.manual_seed(0)
    bottom_up = vaekit.VAE(data_dim=12, latent_dim=(4, 2), hidden=(8,), activation="tanh").to(D)
    assert bottom_up.state_dict().keys() == model.state_dict().keys()


def test_an_unshared_ladder_meets_the_bottom_up_gaussian_with_its_own_top_down_step():
    """--inference ladder-unshared (the authors' code): log Q(z₁|z₂, x) is the same Gaussian product with Q's own
    network in place of p(z₁|z₂); the ELBO still scores z₁ under the prior's p(z₁|z₂); Q's extra networks are its own."""
    model, x = ladder(inference="ladder-unshared"), binary(5)
    torch.manual_seed(3)
    z = model.posterior(x).rsample((7,))
    z1, z2 = z[..., :4], z[..., 4:]
    mu1, log_var1 = model.encoder.first.net(x).chunk(2, -1)
    mu2, log_var2 = model.encoder.upper[0].net(mu1).chunk(2, -1)
    mu_t, log_var_t = model.encoder.down[0].net(z2).chunk(2, -1)  # Q's own top-down step
    mu_p, log_var_p = model.prior.lower[0].net(z2).chunk(2, -1)  # p(z₁|z₂)
    assert not torch.allclose(mu_t, mu_p)
    log_q1 = (log_normal(z1, mu_t, log_var_t.exp()) + log_normal(z1, mu1, log_var1.exp())
              - log_normal(mu1, mu_t, log_var_t.exp() + log_var1.exp()))
    log_q2 = log_normal(z2, mu2, log_var2.exp())
    torch.testing.assert_close(model.posterior(x).log_prob(z), log_q1 + log_q2, rtol=0, atol=1e-12)
    logits = model.decoder.net.net(z1)
    log_px = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)
    by_hand = (log_px + log_normal(z1, mu_p, log_var_p.exp()) + (-0.5 * (LOG_2PI + z2**2)).sum(-1)
               - log_q1 - log_q2).mean(0)
    torch.testing.assert_close(elbo(model, x, z=z, num_samples=7).elbo, by_hand, rtol=0, atol=1e-12)
    shared = ladder().state_dict().keys()
    assert set(model.state_dict()) - set(shared) == {f"encoder.down.0.net.{i}.{w}" for i in (0, 2, 4)
                                                     for w in ("weight", "bias")}


def test_draws_follow_q_top_down():
    """Moments of z₁ given a fixed z₂ (through Q's own sampler) against the precision-weighted closed form."""
    model, x = ladder(), binary(1)
    q = model.posterior(x)
    torch.manual_seed(4)
    z = q.sample((200_000,))
    z1, z2 = z[:, 0, :4], z[:, 0, 4:]
    mu1, log_var1 = model.encoder.first.net(x).chunk(2, -1)
    mu2, log_var2 = model.encoder.upper[0].net(mu1).chunk(2, -1)
    se = (log_var2.exp() / 200_000).sqrt()
    assert ((z2.mean(0) - mu2[0]).abs() < 5 * se[0]).all()
    mu_p, log_var_p = model.prior.lower[0].net(z2).chunk(2, -1)
    var_p, var1 = log_var_p.exp(), log_var1.exp()
    cond_mean = (mu_p / var_p + mu1 / var1) / (1 / var_p + 1 / var1)
    resid = (z1 - cond_mean) / (1 / (1 / var_p + 1 / var1)).sqrt()  # standard normal if Q is right
    assert (resid.mean(0).abs() < 5 / math.sqrt(200_000)).all() and ((resid.var(0) - 1).abs() < 0.02).all()


def linear_gaussian_ladder(sigma=0.5, inference="ladder"):
    """p(z₂) = N(0, 1), z₁|z₂ = N(A z₂ + a, diag v), x|z₁ = N(B z₁ + b, σ² I) with B's columns orthogonal: then
    μ̂₁ = (BᵀB)⁻¹Bᵀ(x − b) ~ N(z₁, diag σ²/BᵀB) is sufficient, p(z₁|z₂, x) ∝ p(z₁|z₂) N(μ̂₁; z₁, ·) is a ladder
    step, and p(z₂|x) a Gaussian linear in μ̂₁: the exact posterior is a ladder Q. Returns it and p(x)."""
    model, (lower, dec, enc, upper) = linear_stack(sigma, inference=inference)
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(5, 3, dtype=D))
        b_mat, b = q * torch.tensor([1.5, 0.7, 1.1], dtype=D), torch.randn(5, dtype=D)
        dec.weight.copy_(b_mat)
        dec.bias.copy_(b)
        lower.weight[3:] = 0
        a_mat, a, v = lower.weight[:3, 0].clone(), lower.bias[:3].clone(), lower.bias[3:].exp()
        gram = (b_mat * b_mat).sum(0)  # diag(BᵀB)
        s2 = sigma**2 / gram
        enc.weight.zero_()
        enc.weight[:3] = b_mat.T / gram[:, None]
        enc.bias.zero_()
        enc.bias[:3] = -(b_mat.T @ b) / gram
        enc.bias[3:] = s2.log()
        precision = 1 + (a_mat**2 / (v + s2)).sum()  # p(z₂|x): μ̂₁|z₂ ~ N(A z₂ + a, diag(v + s²))
        w = a_mat / (v + s2) / precision
        upper.weight.zero_()
        upper.weight[0] = w
        upper.bias.copy_(torch.stack([-(w * a).sum(), -precision.log()]))
    marginal = torch.distributions.MultivariateNormal(
        b_mat @ a + b, b_mat @ (torch.outer(a_mat, a_mat) + torch.diag(v)) @ b_mat.T + sigma**2 * torch.eye(5, dtype=D))
    return model, marginal


def test_the_exact_posterior_of_a_linear_gaussian_stack_is_a_ladder_q():
    """Every importance weight is p(x): the ELBO, L_k and the estimate equal the closed form whatever the draws."""
    assert_exact_until_perturbed(*linear_gaussian_ladder(), lambda m: m.encoder.first.net[0].bias.add_(0.3))
    # unshared: Q's own top-down step set to p's is the same exact posterior; moved off it, it is not
    model, marginal = linear_gaussian_ladder(inference="ladder-unshared")
    with torch.no_grad():
        model.encoder.down.load_state_dict(model.prior.lower.state_dict())
    assert_exact_until_perturbed(model, marginal, lambda m: m.encoder.down[0].net[0].bias.add_(1.0))


def test_dreg_is_unbiased_over_the_networks_q_shares_with_the_prior():
    model = ladder()
    check_dreg(model, binary(2), copies=16, repeats=40, of_q=("encoder.", "prior.lower."))
    check_dreg(ladder(inference="ladder-unshared"), binary(2), copies=16, repeats=40, of_q=("encoder.",))


def test_a_ladder_needs_layers_and_diagonal_gaussians():
    with pytest.raises(VaekitError, match="needs two or more stochastic layers"):
        vaekit.VAE(data_dim=12, latent_dim=4, inference="ladder")
    model = vaekit.VAE(data_dim=12, latent_dim=(4, 2), hidden=(8,), inference="ladder", posterior="iaf")
    with pytest.raises(VaekitError, match="needs diagonal Gaussians bottom-up"):
        model.posterior(binary(2).float())


TRAIN = ["--quiet", "train", "--dataset", "digits", "--latent-dim", "4", "--latent-dim", "2", "--inference", "ladder",
         "--hidden", "64", "--lr", "3e-3", "--seed", "2"]


def test_cli_resumes_bit_identical_and_evaluates_as_python(tmp_path):
    root = straight_and_resumed(TRAIN, tmp_path)
    assert "prior.lower.0.net.0.weight" in assert_resumed_equals_straight(root)
    run = root / "straight"
    assert json.loads((run / "config.json").read_text())["model"]["inference"] == "ladder"
    result = json.loads(vaekit_cli("evaluate", run, "--k", "100", "--json").stdout)
    cfg, model = load_run(run)
    again = evaluate_all(model, load_data(cfg).eval_split("test"), k=100, seed=0)
    for key in ("elbo", "log_likelihood", "kl_per_layer", "active_units_per_layer"):
        assert again[key] == result[key], key
    proc = vaekit_cli("train", "--dataset", "digits", "--inference", "ladder", "--epochs", "1", "--out", tmp_path / "one",
                      check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == ("vaekit: error: inference = 'ladder' needs two or more stochastic layers "
                                            "(--latent-dim twice)")
