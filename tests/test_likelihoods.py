"""Log-densities against independent float64 closed forms; closed-form KL against torch and Monte Carlo."""

import math

import pytest
import torch
from torch.distributions import kl_divergence

from vaekit.model import GenerativeModel
from vaekit.parts.distributions import diagonal_normal, kl_diagonal_normal
from vaekit.parts.likelihoods import BernoulliObservation, GaussianObservation, LearnedGaussianObservation

D = torch.float64


def gaussian_logpdf(x, mu, sigma):
    return (-0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)


@pytest.mark.parametrize("sigma", [0.05, 1.0, 3.0])
def test_known_sigma_gaussian_keeps_all_constants(sigma):
    h, x = torch.randn(5, 7, dtype=D), torch.randn(5, 7, dtype=D)
    got = GaussianObservation(sigma)(h).log_prob(x)
    # written out by hand: -d/2 log(2πσ²) - |x-μ|²/(2σ²)
    want = -0.5 * ((x - h) ** 2).sum(-1) / sigma**2 - 7 / 2 * math.log(2 * math.pi * sigma**2)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("per_dimension", [False, True])
def test_learned_sigma_gaussian(per_dimension):
    obs = LearnedGaussianObservation(7, per_dimension=per_dimension).double()
    with torch.no_grad():
        obs.log_sigma.copy_(torch.linspace(-1, 1, 7, dtype=D) if per_dimension else torch.tensor(-0.3, dtype=D))
    h, x = torch.randn(4, 7, dtype=D), torch.randn(4, 7, dtype=D)
    sigma = obs.log_sigma.exp().expand(4, 7)
    torch.testing.assert_close(obs(h).log_prob(x), gaussian_logpdf(x, h, sigma), atol=1e-6, rtol=0)


def test_bernoulli_logits_closed_form_and_extremes():
    logits = torch.tensor([[-50.0, -3.0, 0.0, 2.5, 50.0]], dtype=D)
    for x in ([0.0, 1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 0.0]):
        xt = torch.tensor([x], dtype=D)
        got = BernoulliObservation()(logits).log_prob(xt)
        # log σ(l) = -log(1 + e^{-l}), log(1-σ(l)) = -log(1 + e^{l}); log1p(exp) is exact in float64 here
        want = (xt * -torch.log1p(torch.exp(-logits)) + (1 - xt) * -torch.log1p(torch.exp(logits))).sum(-1)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # the wrong label at logit ±50 costs exactly 50 nats, not inf
    one = BernoulliObservation()(torch.tensor([[50.0]], dtype=D)).log_prob(torch.tensor([[0.0]], dtype=D))
    assert abs(float(one) + 50.0) < 1e-6


def test_prior_and_joint():
    g = GenerativeModel(data_dim=3, latent_dim=2, hidden=(), likelihood={"name": "gaussian", "sigma": 0.5}).double()
    z, x = torch.randn(6, 2, dtype=D), torch.randn(6, 3, dtype=D)
    want_pz = -0.5 * (z**2).sum(-1) - math.log(2 * math.pi)
    torch.testing.assert_close(g.prior().log_prob(z), want_pz, atol=1e-6, rtol=0)
    mu = g.decode(z)
    want_px = gaussian_logpdf(x, mu, torch.full_like(mu, 0.5))
    torch.testing.assert_close(g.log_joint(x, z), want_pz + want_px, atol=1e-6, rtol=0)


@pytest.mark.parametrize("standard_prior", [True, False])
def test_closed_form_kl_matches_torch_and_monte_carlo(standard_prior):
    q = diagonal_normal(torch.randn(4, 3, dtype=D), torch.rand(4, 3, dtype=D) + 0.2)
    if standard_prior:
        p = diagonal_normal(torch.zeros(3, dtype=D), torch.ones(3, dtype=D))
    else:
        p = diagonal_normal(torch.tensor([0.5, -1.0, 2.0], dtype=D), torch.tensor([0.3, 2.0, 1.5], dtype=D))
    kl = kl_diagonal_normal(q, p)
    torch.testing.assert_close(kl, kl_divergence(q, p), atol=1e-10, rtol=0)
    n = 200_000
    z = q.sample((n,))
    samples = q.log_prob(z) - p.log_prob(z)
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(n)
    assert ((mc - kl).abs() < 4 * se).all(), (mc, kl, se)


HEADS = ["bernoulli", "gaussian", "gaussian-learned", "gaussian-learned-per-dim", "continuous-bernoulli",
         "discretized-logistic", "categorical", "poisson", "negative-binomial"]


@pytest.mark.parametrize("name", HEADS)
def test_every_head_is_one_distribution_per_example_over_its_d_values(name):
    """Decoder output [S, B, out] → batch shape [S, B], event shape [D]: `log_prob` gives one value per example."""
    from vaekit.parts.likelihoods import LIKELIHOODS

    head = LIKELIHOODS.build(name, data_dim=4)
    p = head(torch.zeros(2, 3, head.out_features(4)))
    assert (tuple(p.batch_shape), tuple(p.event_shape)) == ((2, 3), (4,))
    assert p.log_prob(torch.zeros(2, 3, 4)).shape == (2, 3)


def test_gaussian_heads_default_to_sigma_one_tenth():
    from vaekit.errors import VaekitError
    from vaekit.parts.likelihoods import LIKELIHOODS

    for name in ("gaussian", "gaussian-learned", "gaussian-learned-per-dim"):
        p = LIKELIHOODS.build(name, data_dim=4)(torch.zeros(2, 4))
        torch.testing.assert_close(p.base_dist.scale, torch.full((2, 4), 0.1))
    assert LIKELIHOODS.build("gaussian-learned", data_dim=4).log_sigma.shape == ()  # one σ
    assert LIKELIHOODS.build("gaussian-learned-per-dim", data_dim=4).log_sigma.shape == (4,)  # one per dimension
    assert float(LearnedGaussianObservation(4).log_sigma.detach()) == 0.0  # the class itself starts at σ = 1
    for name in ("gaussian", "gaussian-learned", "gaussian-learned-per-dim"):  # σ = 0 is refused as a setting
        with pytest.raises(VaekitError, match="must be >= 1e-06, got 0"):
            LIKELIHOODS.build({"name": name, "sigma": 0.0}, data_dim=4)
    with pytest.raises(ValueError, match="sigma must be > 0, got 0.0"):  # and by the class itself
        GaussianObservation(0.0)
