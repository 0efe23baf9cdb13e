"""Gradient estimators against closed forms and finite differences; β leaves the reported ELBO alone."""

import math

import pytest
import torch

import vaekit
from vaekit import VAE, elbo
from vaekit.objectives import estimators
from vaekit.objectives.estimators import expectation
from vaekit.parts.distributions import diagonal_normal

D = torch.float64
A = torch.tensor([1.0, -2.0, 0.5], dtype=D)
C = torch.tensor([0.3, 1.0, -0.7], dtype=D)


def f(z):  # a quadratic: E_Q[f] = Σ_j A_j((μ_j − C_j)² + σ_j²)
    return (A * (z - C) ** 2).sum(-1)


def grads(estimator, n):
    mu = torch.tensor([[0.2, -0.4, 1.0]], dtype=D, requires_grad=True)
    log_sigma = torch.tensor([[-0.5, 0.1, 0.3]], dtype=D, requires_grad=True)
    q = diagonal_normal(mu, log_sigma.exp())
    _, sur = expectation(q, f, n, estimator)
    g_mu, g_ls = torch.autograd.grad(sur.sum(), (mu, log_sigma))
    return mu, log_sigma, torch.cat([g_mu, g_ls], -1)[0]


def closed_form(mu, log_sigma):
    s2 = (2 * log_sigma).exp()
    return torch.cat([2 * A * (mu - C), 2 * A * s2], -1)[0].detach()


@pytest.mark.parametrize("estimator", ["reparameterization", "score-function"])
def test_gradient_estimators_match_closed_form(estimator):
    reps = torch.stack([grads(estimator, 2000)[2] for _ in range(100)])  # 100 × 2000 samples
    mu, log_sigma, _ = grads(estimator, 1)
    want = closed_form(mu, log_sigma)
    mean, se = reps.mean(0), reps.std(0) / math.sqrt(len(reps))
    assert ((mean - want).abs() < 4 * se + 1e-12).all(), (mean, want, se)


def test_reparameterization_has_lower_variance():
    var = {e: torch.stack([grads(e, 1)[2] for _ in range(2000)]).var(0) for e in ("reparameterization", "score-function")}
    assert (var["reparameterization"] < var["score-function"]).all(), var


def test_elbo_gradient_matches_finite_difference():
    vae = VAE(data_dim=6, latent_dim=2, hidden=(5,), activation="tanh", likelihood="bernoulli").double()
    x = torch.bernoulli(torch.full((4, 6), 0.4, dtype=D))

    def value():
        torch.manual_seed(11)  # the same ξ every call: the reparameterized ELBO is a smooth function of the weights
        return elbo(vae, x, num_samples=3).elbo.sum()

    params = {"θ (decoder)": vae.decoder.net[0].weight, "φ,ψ (encoder)": vae.encoder.net[0].weight}
    grads_ = torch.autograd.grad(value(), list(params.values()))
    eps = 1e-6
    for (name, p), g in zip(params.items(), grads_):
        for idx in [(0, 0), (1, 1), (2, 0)]:
            with torch.no_grad():
                p[idx] += eps
                up = value()
                p[idx] -= 2 * eps
                down = value()
                p[idx] += eps
            fd = (up - down) / (2 * eps)
            assert abs(float(fd) - float(g[idx])) < 1e-6, (name, idx, float(fd), float(g[idx]))


def test_beta_changes_objective_not_reported_elbo():
    vae = VAE(data_dim=6, latent_dim=2, hidden=(5,)).double()
    x = torch.bernoulli(torch.full((4, 6), 0.5, dtype=D))
    runs = {}
    for beta in (1.0, 4.0):
        torch.manual_seed(3)
        runs[beta] = elbo(vae, x, beta=beta)
    torch.testing.assert_close(runs[1.0].elbo, runs[4.0].elbo)
    torch.testing.assert_close(runs[1.0].surrogate, runs[1.0].elbo)
    torch.testing.assert_close(runs[4.0].surrogate, runs[4.0].reconstruction - 4.0 * runs[4.0].kl)


@pytest.mark.parametrize("kl", ["analytic", "mc"])
def test_elbo_terms_and_kl_modes(kl):
    vae = VAE(data_dim=6, latent_dim=3, hidden=(8,)).double()
    x = torch.bernoulli(torch.full((5, 6), 0.3, dtype=D))
    r = elbo(vae, x, num_samples=50_000, kl=kl)
    torch.testing.assert_close(r.elbo, r.reconstruction - r.kl)
    q = vae.posterior(x)
    exact_kl = torch.distributions.kl_divergence(q, vae.prior())
    tol = 1e-10 if kl == "analytic" else 0.05
    torch.testing.assert_close(r.kl, exact_kl, atol=tol, rtol=0)


def test_score_function_elbo_gradient_is_unbiased_for_decoder_and_encoder():
    torch.manual_seed(0)
    vae = VAE(data_dim=4, latent_dim=2, hidden=(), likelihood={"name": "gaussian", "sigma": 1.0}).double()
    x = torch.randn(2, 4, dtype=D)
    params = list(vae.parameters())
    reference = torch.autograd.grad(elbo(vae, x, num_samples=200_000).surrogate.sum(), params)
    score = torch.autograd.grad(elbo(vae, x, num_samples=200_000, estimator="score-function").surrogate.sum(), params)
    for r, s in zip(reference, score):
        torch.testing.assert_close(s, r, atol=0.15 * (1 + r.abs().max()), rtol=0)


def _iwae_grads(vae, x, k, dreg, reps):
    from vaekit.objectives.estimators import iwae

    params = [vae.encoder.net[0].weight, vae.decoder.net[0].weight]
    out = []
    for _ in range(reps):
        g = torch.autograd.grad(iwae(vae, x, k, dreg=dreg).surrogate.sum(), params)
        out.append(torch.cat([t.flatten() for t in g]))
    return torch.stack(out), params[0].numel()


def test_dreg_is_unbiased_and_lowers_encoder_variance():
    from vaekit.objectives.estimators import iwae

    torch.manual_seed(0)
    vae = VAE(data_dim=6, latent_dim=2, hidden=(4,), activation="tanh").double()
    x = torch.bernoulli(torch.full((3, 6), 0.4, dtype=D))
    torch.manual_seed(1)
    plain_value = iwae(vae, x, 10).bound
    torch.manual_seed(1)
    torch.testing.assert_close(iwae(vae, x, 10, dreg=True).bound, plain_value)  # same reported L_k
    plain, n_enc = _iwae_grads(vae, x, 10, False, 3000)
    dreg, _ = _iwae_grads(vae, x, 10, True, 3000)
    se = (plain.var(0) / len(plain) + dreg.var(0) / len(dreg)).sqrt()
    assert ((plain.mean(0) - dreg.mean(0)).abs() < 4.5 * se + 1e-9).all()
    # the encoder's gradient variance drops (Tucker et al. 2018), summed over its weights
    assert dreg[:, :n_enc].var(0).sum() < 0.7 * plain[:, :n_enc].var(0).sum()


def _linear_gaussian():
    from vaekit import LinearGaussian

    torch.manual_seed(1)
    vae = VAE(data_dim=5, latent_dim=2, hidden=(), likelihood={"name": "gaussian", "sigma": 0.7}).double()
    lg = LinearGaussian.from_model(vae)
    return vae, lg, lg.marginal().sample((6,))


def test_iwae_bound_and_log_weights_use_the_draws_they_are_given():
    from vaekit import iwae_bound
    from vaekit.objectives.estimators import iwae, log_weights

    vae, lg, x = _linear_gaussian()
    post = lg.posterior(x)
    # with Q = p(z|x), log p(x, z) − log Q(z) = log p(x) at every z, drawn from Q or not
    z = torch.randn(3, 6, 2, dtype=D) * 4
    torch.testing.assert_close(log_weights(vae, x, 3, q_z=post, z=z), lg.log_marginal(x).expand(3, 6), atol=1e-8, rtol=0)
    torch.testing.assert_close(iwae_bound(vae, x, 3, q_z=post, z=z), lg.log_marginal(x), atol=1e-8, rtol=0)
    # any Q: the log-weights at the given z by hand, and the same bound as `iwae` on the same draws
    q = vae.posterior(x)
    z = q.rsample((4,))
    by_hand = vae.prior().log_prob(z) + vae.p_x_given_z(z).log_prob(x) - q.log_prob(z)
    torch.testing.assert_close(log_weights(vae, x, 4, z=z), by_hand, atol=1e-12, rtol=0)
    torch.testing.assert_close(iwae_bound(vae, x, 4, z=z), iwae(vae, x, 4, z=z).bound, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match=r"z must hold draws \[S, 6, 2\] \(S = k = 5: q_z.rsample\(\(S,\)\)\), got \(4, 6, 2\)"):
        iwae_bound(vae, x, 5, z=z)  # the public bound (`evaluation.bounds`)
    with pytest.raises(ValueError, match="z holds 4 draws per example"):
        log_weights(vae, x, 5, z=z)  # the estimator the objectives call


def test_elbo_draws_average_to_the_elbo():
    from vaekit.objectives.estimators import elbo_draws

    vae, _, x = _linear_gaussian()
    q = vae.posterior(x)
    z = q.rsample((7,))
    for kl in ("analytic", "mc"):
        log_px, kl_term = elbo_draws(vae, x, z, kl=kl)
        assert log_px.shape == (7, 6) and kl_term.shape == ((6,) if kl == "analytic" else (7, 6))
        torch.testing.assert_close((log_px - kl_term).mean(0), elbo(vae, x, q_z=q, kl=kl, z=z).elbo, atol=1e-12, rtol=0)


def test_mc_kl_surrogate_is_the_per_example_mean_over_draws():
    """kl="mc": KL and surrogate are (1/S) Σ_s of log Q(z_s) − log p(z_s) and of log p(x|z_s) − β(…), one
    value per example, by hand on given draws (S = 4 ≠ B = 6, so a mean over the wrong axis fails)."""
    vae, _, x = _linear_gaussian()
    q = vae.posterior(x)
    z = q.rsample((4,))
    r = elbo(vae, x, q_z=q, kl="mc", beta=2.5, z=z)
    log_px, kl_s = vae.p_x_given_z(z).log_prob(x), q.log_prob(z) - vae.prior().log_prob(z)
    torch.testing.assert_close(r.kl, kl_s.mean(0), atol=1e-12, rtol=0)
    torch.testing.assert_close(r.surrogate, (log_px - 2.5 * kl_s).mean(0), atol=1e-12, rtol=0)
    for kl in ("mc", "analytic"):  # β = 1 by default: the surrogate is the ELBO itself
        r = elbo(vae, x, q_z=q, kl=kl, z=z)
        torch.testing.assert_close(r.surrogate, r.elbo, atol=1e-12, rtol=0)


def test_dreg_surrogate_is_the_weighted_sum_of_log_weights_per_example():
    """DReG's surrogate, one value per example: Σ_i w̃_i log w_i with w̃ = softmax(log w) over the k draws
    (its gradient is the test above), by hand on given draws (k = 4 ≠ B = 6)."""
    from vaekit.objectives.estimators import iwae, log_weights

    vae, _, x = _linear_gaussian()
    z = vae.posterior(x).rsample((4,))
    lw = log_weights(vae, x, 4, z=z).detach()
    r = iwae(vae, x, 4, dreg=True, z=z)
    torch.testing.assert_close(r.surrogate, (torch.softmax(lw, 0) * lw).sum(0), atol=1e-12, rtol=0)
    torch.testing.assert_close(r.bound, torch.logsumexp(lw, 0) - math.log(4), atol=1e-12, rtol=0)
    plain = iwae(vae, x, 4, z=z)  # the default is the plain estimator, whose surrogate is L_k itself
    assert torch.equal(plain.surrogate, plain.bound)


def test_closed_form_kl_of_a_laplace_q_against_a_diagonal_gaussian_prior():
    """Neither both diagonal Gaussians nor a full-covariance Q: torch's registered KL, against the closed
    form per dimension −(1 + log 2b) + log(σ√(2π)) + (2b² + (m − μ)²)/(2σ²), and `elbo` takes it."""
    from torch.distributions import Independent, Laplace

    from vaekit.objectives.estimators import analytic_kl

    m = torch.tensor([[0.3, -1.0], [2.0, 0.5]], dtype=D)
    b = torch.tensor([[0.5, 1.2], [0.1, 2.0]], dtype=D)
    mu, sigma = torch.tensor([0.2, -0.3], dtype=D), torch.tensor([1.5, 0.7], dtype=D)
    q, p = Independent(Laplace(m, b), 1), diagonal_normal(mu.expand(2, 2), sigma.expand(2, 2))
    want = (-(1 + torch.log(2 * b)) + torch.log(sigma * math.sqrt(2 * math.pi)) + (2 * b**2 + (m - mu) ** 2) / (2 * sigma**2))
    torch.testing.assert_close(analytic_kl(q, p), want.sum(-1), atol=1e-12, rtol=0)


def test_expectation_value_is_the_per_example_monte_carlo_mean():
    """The first value `expectation` returns is E_Q[f] itself, one per example: the quadratic's closed
    form Σ_j A_j((μ_j − C_j)² + σ_j²), within 5 standard errors, for B = 2 examples and S = 20 000 draws."""
    mu = torch.tensor([[0.2, -0.4, 1.0], [-1.0, 0.5, 0.0]], dtype=D)
    sigma = torch.tensor([[0.6, 1.1, 1.3], [0.2, 0.4, 2.0]], dtype=D)
    q = diagonal_normal(mu, sigma)
    value, _ = expectation(q, f, 20_000)
    want = (A * ((mu - C) ** 2 + sigma**2)).sum(-1)
    se = f(q.sample((20_000,))).std(0) / math.sqrt(20_000)
    assert value.shape == (2,) and ((value - want).abs() < 5 * se).all(), (value, want, se)


def test_data_of_the_wrong_shape_or_dtype_is_refused_before_torch_sees_it():
    from vaekit.errors import VaekitError

    vae = VAE(data_dim=6, latent_dim=2, hidden=(5,)).double()
    x = torch.bernoulli(torch.full((4, 6), 0.5, dtype=D))
    for bad in (x[0], x[:, :5], x[None]):  # 1-D, the wrong D, 3-D
        with pytest.raises(VaekitError, match=r"^x holds examples of shape \(\w*,?\d*,?\s?\d*\) \(\d+ values\); the model takes 6$"):
            vaekit.elbo(vae, bad)
    torch.manual_seed(0)
    as_ints = vaekit.elbo(vae, x.long(), num_samples=3).elbo  # integers are the model's floats, as encode takes them
    torch.manual_seed(0)
    assert torch.equal(as_ints, vaekit.elbo(vae, x, num_samples=3).elbo)
    for bad in (x[0], x[:, :5], x.long(), x[None]):  # the estimator the objectives call: its own cheap check
        with pytest.raises(VaekitError, match=r"the model expects floats of shape \[B, 6\]"):
            estimators.elbo(vae, bad)


def test_given_draws_carry_the_gradient_as_drawn():
    """z given to `elbo` (reparameterized draws of Q) is used as it was drawn: the same value and the same
    encoder gradient as drawing it inside under the same seed."""
    vae = VAE(data_dim=6, latent_dim=2, hidden=(5,)).double()
    x = torch.bernoulli(torch.full((4, 6), 0.5, dtype=D))
    encoder = list(vae.encoder.parameters())
    torch.manual_seed(5)
    inside = elbo(vae, x, num_samples=3)
    torch.manual_seed(5)
    q = vae.posterior(x)
    given = elbo(vae, x, q_z=q, z=q.rsample((3,)))
    torch.testing.assert_close(given.elbo, inside.elbo, atol=1e-12, rtol=0)
    for a, b in zip(torch.autograd.grad(given.elbo.sum(), encoder), torch.autograd.grad(inside.elbo.sum(), encoder)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
