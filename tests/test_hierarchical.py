"""Hierarchical VAEs (`--latent-dim 100 --latent-dim 50`, Burda et al. 2016): the ELBO against the five
log-densities written out in float64, L_k against the closed-form marginal of a linear-Gaussian stack,
DReG, a VampPrior over the top layer, per-layer statistics, and training, resume and two processes
from the command line."""

import itertools
import json
import math

import pytest
import torch
from dreg_check import check_dreg
from run_cli import straight_and_resumed, vaekit_cli
from safetensors.torch import load_file

import vaekit
from vaekit import Config
from vaekit.errors import VaekitError
from vaekit.evaluation.estimates import evaluate_all, latent_statistics, log_likelihood
from vaekit.objectives.estimators import elbo, iwae_bound
from vaekit.runs.checkpoint import load_run
from vaekit.runs.experiment import load_data

D = torch.float64
LOG_2PI = math.log(2 * math.pi)


def normal_log_density(z, h):
    """Σ_j log N(z_j; μ_j, exp(log σ²_j)) with h = (μ, log σ²), written out."""
    loc, log_var = h.chunk(2, -1)
    return (-0.5 * (LOG_2PI + log_var + (z - loc) ** 2 / log_var.exp())).sum(-1)


def two_layers(**settings):
    torch.manual_seed(0)
    return vaekit.VAE(data_dim=12, latent_dim=(4, 2), hidden=(8,), activation="tanh", **settings).to(D)


def binary(n, d=12, seed=1):
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=D) < 0.4).to(D)


def test_burda_architecture_has_the_papers_layers():
    """784–200–200–z₁(100)–100–100–z₂(50) both ways, tanh: the parameter count of those layers."""
    model = vaekit.VAE(data_dim=784, latent_dim=(100, 50), hidden=(200, 200), activation="tanh")

    def linear(*sizes):  # weights and biases of a chain of dense layers
        return sum(a * b + b for a, b in itertools.pairwise(sizes))

    expected = (linear(784, 200, 200, 200) + linear(100, 100, 100, 100)  # Q(z₁|x): μ, log σ² → 200 outputs
                + linear(50, 100, 100, 200) + linear(100, 200, 200, 784))  # p(z₁|z₂), p(x|z₁)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.latent_dim == 150 and isinstance(model.encoder.first.net[1], torch.nn.Tanh)


def test_elbo_equals_the_five_log_densities_by_hand():
    model, x = two_layers(), binary(5)
    torch.manual_seed(3)
    z = model.posterior(x).rsample((7,))  # [S, B, 6]
    z1, z2 = z[..., :4], z[..., 4:]
    log_q1 = normal_log_density(z1, model.encoder.first.net(x))
    log_q2 = normal_log_density(z2, model.encoder.upper[0].net(z1))
    log_p2 = (-0.5 * (LOG_2PI + z2**2)).sum(-1)
    log_p1 = normal_log_density(z1, model.prior.lower[0].net(z2))
    logits = model.decoder.net.net(z1)
    log_px = (x * logits - torch.log1p(logits.exp())).sum(-1)
    by_hand = (log_px + log_p1 + log_p2 - log_q1 - log_q2).mean(0)
    result = elbo(model, x, z=z, num_samples=7)
    torch.testing.assert_close(result.elbo, by_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.posterior(x).log_prob(z), log_q1 + log_q2, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.prior().log_prob(z), log_p1 + log_p2, rtol=0, atol=1e-12)


def test_a_conditional_two_layer_elbo_is_its_five_conditionals_given_y_by_hand():
    """--condition label with two layers: y (one-hot c) enters Q(z₁|x, y), p(x|z₁, y) and, with --prior
    label, p(z₂|y); Q(z₂|z₁) and p(z₁|z₂) do not see it. The ELBO of `given(y)` against the five
    log-densities written out on the same draws."""
    model = two_layers(condition="label", condition_classes=3, prior="label")
    x, y = binary(5), torch.tensor([0, 2, 1, 2, 0])
    with torch.no_grad():
        model.prior.top.means.normal_()
        model.prior.top.log_scales.normal_(0, 0.3)
    given = model.given(y)
    torch.manual_seed(3)
    z = given.posterior(x).rsample((7,))
    z1, z2 = z[..., :4], z[..., 4:]
    c = torch.eye(3, dtype=D)[y]
    log_q1 = normal_log_density(z1, model.encoder.first.net(torch.cat([x, c], -1)))
    log_q2 = normal_log_density(z2, model.encoder.upper[0].net(z1))
    mean, log_scale = c @ model.prior.top.means, c @ model.prior.top.log_scales
    log_p2 = (-0.5 * (LOG_2PI + 2 * log_scale + (z2 - mean) ** 2 / (2 * log_scale).exp())).sum(-1)
    log_p1 = normal_log_density(z1, model.prior.lower[0].net(z2))
    logits = model.decoder.net.net(torch.cat([z1, c.expand(7, 5, 3)], -1))
    log_px = (x * logits - torch.log1p(logits.exp())).sum(-1)
    by_hand = (log_px + log_p1 + log_p2 - log_q1 - log_q2).mean(0)
    torch.testing.assert_close(elbo(given, x, z=z, num_samples=7).elbo, by_hand, rtol=0, atol=1e-12)
    assert model.latent_dim == 6 and given.sample(5).shape == (5, 12)


def linear_stack(sigma: float, **q):
    """A two-layer VAE (x 5, z₁ 3, z₂ 1) whose every network is one linear layer, float64, seeded; Q's
    settings from q. Returns it and its layers (p(z₁|z₂), p(x|z₁), Q(z₁|x), Q(z₂|z₁)), to be set by hand."""
    torch.manual_seed(4)
    model = vaekit.VAE(data_dim=5, latent_dim=(3, 1), hidden=(), layer_hidden=(), likelihood={"name": "gaussian", "sigma": sigma}, **q).to(D)
    return model, (model.prior.lower[0].net[0], model.decoder.net.net[0], model.encoder.first.net[0],
                   model.encoder.upper[0].net[0])


def linear_gaussian_stack(sigma=0.5):
    """Every layer linear-Gaussian: p(z₂) = N(0, 1), z₁|z₂ = N(A z₂ + a, diag v), x|z₁ = N(B z₁ + b, σ² I), and
    Q its exact posterior: Q(z₁|x) = p(z₁|x), a full covariance, and Q(z₂|z₁) = p(z₂|z₁, x) = p(z₂|z₁), one-
    dimensional. Returns the model and the closed-form marginal p(x)."""
    model, (lower, dec, enc, upper) = linear_stack(sigma, posterior="full")
    with torch.no_grad():
        lower.weight[3:] = 0  # log v independent of z₂
        a_mat, a, v = lower.weight[:3].clone(), lower.bias[:3].clone(), lower.bias[3:].exp()
        b_mat, b = dec.weight.clone(), dec.bias.clone()
        cov_z1 = a_mat @ a_mat.T + torch.diag(v)
        cov_post = torch.linalg.inv(torch.linalg.inv(cov_z1) + b_mat.T @ b_mat / sigma**2)
        # E[z₁|x] = Σ (Bᵀ(x − b)/σ² + C⁻¹ a): a linear map of x; Σ by its Cholesky factor, as biases
        enc.weight.zero_()
        enc.weight[:3] = cov_post @ b_mat.T / sigma**2
        enc.bias.zero_()
        enc.bias[:3] = cov_post @ (torch.linalg.solve(cov_z1, a) - b_mat.T @ b / sigma**2)
        model.encoder.first.head.gate.fill_(1.0)
        enc.bias[3:] = model.encoder.first.head.outputs_for(enc.bias[:3], torch.linalg.cholesky(cov_post))[3:]
        # p(z₂|z₁): precision 1 + Aᵀ V⁻¹ A, mean var · Aᵀ V⁻¹ (z₁ − a)
        var = 1 / (1 + (a_mat[:, 0] ** 2 / v).sum())
        upper.weight.zero_()
        upper.weight[0] = var * a_mat[:, 0] / v
        upper.bias.copy_(torch.stack([-(var * a_mat[:, 0] / v * a).sum(), var.log()]))
    marginal = torch.distributions.MultivariateNormal(b_mat @ a + b, b_mat @ cov_z1 @ b_mat.T
                                                      + sigma**2 * torch.eye(5, dtype=D))
    return model, marginal


def test_exact_posterior_of_a_linear_gaussian_stack_gives_log_p_x_from_every_bound():
    """With Q the exact posterior every importance weight is p(x): the ELBO, L_k and the estimate all
    equal the closed-form marginal, whatever the draws."""
    assert_every_bound_is_exact(*linear_gaussian_stack())


def assert_every_bound_is_exact(model, marginal):
    torch.manual_seed(5)
    x = marginal.sample((6,))
    exact = marginal.log_prob(x)
    torch.testing.assert_close(elbo(model, x, num_samples=3).elbo, exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(iwae_bound(model, x, 7), exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_likelihood(model, x, k=50, seed=0).per_example, exact, rtol=0, atol=1e-10)


def assert_exact_until_perturbed(model, marginal, perturb):
    """Every bound equals log p(x); after `perturb(model)` (a nudge to Q's weights) the ELBO falls below it, by
    more than rounding and Monte Carlo error: the exactness is Q's, not the estimator's."""
    assert_every_bound_is_exact(model, marginal)
    torch.manual_seed(5)
    x = marginal.sample((6,))
    with torch.no_grad():
        perturb(model)
        assert (elbo(model, x, num_samples=4000).elbo < marginal.log_prob(x) - 0.01).all()


def test_bounds_of_a_perturbed_q_increase_in_k_toward_the_marginal():
    model, marginal = linear_gaussian_stack()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))  # Q no longer exact
    torch.manual_seed(5)
    x = marginal.sample((6,))
    exact = marginal.log_prob(x)
    with torch.no_grad():  # means over 400 repeats: L_1 < L_4 < L_32 ≤ log p(x), far beyond their noise
        bounds = torch.stack([torch.stack([iwae_bound(model, x, k) for _ in range(400)]).mean(0) for k in (1, 4, 32)])
    gaps = exact - bounds
    assert (gaps[0] > gaps[1]).all() and (gaps[1] > gaps[2]).all() and (gaps[2] > -0.01).all(), gaps
    ll = log_likelihood(model, x, k=20_000, seed=0)
    assert ((ll.per_example - exact).abs() < 0.02).all(), (ll.per_example - exact, gaps[0], ll.ess)


def test_dreg_is_unbiased_and_leaves_the_decoder_gradient_unchanged():
    model = two_layers()
    check_dreg(model, binary(2), copies=16, repeats=40)


@pytest.mark.parametrize("inference", ["bottom-up", "ladder"])
def test_detached_q_has_the_same_density_and_reaches_only_z(inference):
    model, x = two_layers(inference=inference), binary(3)
    q = model.posterior(x)
    z = q.rsample((2,))
    cut = q.detach()
    torch.testing.assert_close(cut.log_prob(z), q.log_prob(z), rtol=0, atol=0)
    z_free = z.detach().requires_grad_(True)
    cut.log_prob(z_free).sum().backward()
    assert all(p.grad is None for p in model.parameters()) and z_free.grad.abs().sum() > 0


def test_draws_of_the_expanded_q_are_those_of_the_whole_batch():
    """What torchrun's ranks do (loss.py): Q expanded to [2, B] draws as one process would."""
    model, x = two_layers(), binary(3)
    q = model.posterior(x)
    torch.manual_seed(6)
    z = q.expand(torch.Size((2, 3))).rsample((4,))
    torch.testing.assert_close(q.expand(torch.Size((2, 3))).log_prob(z), q.log_prob(z), rtol=0, atol=1e-12)


def test_vampprior_over_the_top_layer_mixes_q_of_z2_along_the_pseudo_inputs_means():
    model = two_layers(prior={"name": "vampprior", "components": 5})
    z2 = torch.randn(9, 2, dtype=D)
    u = model.prior.top.inputs()
    h1 = model.encoder.first.net(u)
    h2 = model.encoder.upper[0].net(h1[:, :4])  # Q(z₂ | z₁ = E_Q[z₁|u_k])
    by_hand = torch.logsumexp(normal_log_density(z2[:, None], h2[None]), 1) - math.log(5)
    torch.testing.assert_close(model.prior.top().log_prob(z2), by_hand, rtol=0, atol=1e-10)
    names = [n for n, _ in model.named_parameters()]
    assert names.count("encoder.first.net.0.weight") == 1 and "prior.top.pseudo_inputs" in names


def test_vampprior_over_an_iaf_first_layer_is_refused_in_one_line():
    model = vaekit.VAE(data_dim=12, latent_dim=(4, 2), hidden=(8,), posterior="iaf", prior="vampprior")
    with pytest.raises(VaekitError, match="closed-form mean"):
        model.prior()


def test_latent_statistics_per_layer_sum_to_the_monte_carlo_kl():
    model, x = two_layers(), binary(400)
    torch.manual_seed(7)
    stats = latent_statistics(model, x)
    assert stats["layer_sizes"] == [4, 2] and len(stats["kl_per_dim"]) == 6 and not stats["kl_per_dim_sums_to_kl"]
    assert sum(stats["active_units_per_layer"]) == stats["active_units"]
    assert math.isclose(sum(stats["kl_per_dim"]), sum(stats["kl_per_layer"]), rel_tol=1e-9)
    kl = elbo(model, x, num_samples=200).kl.mean().item()  # the ELBO's own Monte Carlo KL, 200 draws
    assert abs(sum(stats["kl_per_layer"]) - kl) < 0.1 * kl, (stats["kl_per_layer"], kl)


def test_config_takes_one_latent_dim_per_layer():
    cfg = Config().replace(model={"latent_dim": [100, 50]})
    assert cfg.model.latent_dim == (100, 50) and cfg.model.latent_size == 150
    assert Config.from_dict({"model": {"latent_dim": 20}}).model.latent_dim == (20,)  # a run saved as one size
    with pytest.raises(VaekitError, match="latent_dim must be > 0, got 0"):
        Config().replace(model={"latent_dim": [4, 0]})


TRAIN = ["--quiet", "train", "--dataset", "digits", "--latent-dim", "4", "--latent-dim", "2", "--hidden", "64",
         "--activation", "tanh", "--lr", "3e-3", "--seed", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return straight_and_resumed(TRAIN, tmp_path_factory.mktemp("hierarchical"))


def test_cli_trains_and_evaluates_per_layer(runs):
    run = runs / "straight"
    assert json.loads((run / "config.json").read_text())["model"]["latent_dim"] == [4, 2]
    assert {"encoder.upper.0.net.0.weight", "prior.lower.0.net.0.weight"} <= load_file(run / "model.safetensors").keys()
    result = json.loads(vaekit_cli("evaluate", run, "--k", "100", "--json").stdout)
    assert result["layer_sizes"] == [4, 2] and len(result["active_units_per_layer"]) == 2
    err = 3 * math.hypot(result["elbo_mc_stderr"], result["log_likelihood_mc_stderr"])
    assert result["log_likelihood"] > result["elbo"] - err and result["bound_check"] == "ok"
    cfg, model = load_run(run)
    again = evaluate_all(model, load_data(cfg).eval_split("test"), k=100, seed=0)  # from Python
    for key in ("elbo", "log_likelihood", "kl_per_layer", "active_units_per_layer"):
        assert again[key] == result[key], key
