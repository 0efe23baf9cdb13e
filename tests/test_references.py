"""The linear-Gaussian model, where log p(x) and p(z|x) are exact: every estimator is held to them."""

import math

import pytest
import torch

from vaekit import VAE, LinearGaussian, elbo, iwae_bound, log_likelihood
from vaekit.evaluation import estimates
from vaekit.objectives.estimators import log_weights
from vaekit.parts.distributions import diagonal_normal
from vaekit.rng import batch_seed

D = torch.float64


@pytest.fixture
def setup():
    torch.manual_seed(1)
    vae = VAE(data_dim=5, latent_dim=2, hidden=(), likelihood={"name": "gaussian", "sigma": 0.7}).double()
    with torch.no_grad():  # a decoder with some scale, so the posterior is far from the prior
        vae.decoder.net[0].weight.mul_(3.0)
    lg = LinearGaussian.from_model(vae)
    x = lg.marginal().sample((8,))
    return vae, lg, x


def test_exact_posterior_gives_elbo_equal_to_log_marginal(setup):
    vae, lg, x = setup
    log_px = lg.log_marginal(x)
    post = lg.posterior(x)
    # With Q = p(z|x), log p(x,z) − log Q(z) = log p(x) for every z: the Monte Carlo ELBO is exact.
    r_mc = elbo(vae, x, q_z=post, num_samples=3, kl="mc")
    torch.testing.assert_close(r_mc.elbo, log_px, atol=1e-5, rtol=0)
    # Analytic KL (full-covariance Q vs the diagonal prior) with Monte Carlo reconstruction.
    r_an = elbo(vae, x, q_z=post, num_samples=200_000, kl="analytic")
    torch.testing.assert_close(r_an.elbo, log_px, atol=2e-2, rtol=0)
    # The closed-form ELBO of a Gaussian Q.
    torch.testing.assert_close(lg.elbo(x, post.loc, post.covariance_matrix), log_px, atol=1e-5, rtol=0)


def test_any_other_q_is_strictly_lower_by_its_kl_to_the_posterior(setup):
    _, lg, x = setup
    log_px, post = lg.log_marginal(x), lg.posterior(x)
    for shift, scale in [(0.3, 1.0), (0.0, 1.5), (0.0, 0.6)]:
        loc = post.loc + shift
        cov = post.covariance_matrix * scale
        bound = lg.elbo(x, loc, cov)
        assert (bound < log_px).all()
        q = torch.distributions.MultivariateNormal(loc, covariance_matrix=cov)
        gap = torch.distributions.kl_divergence(q, post)
        torch.testing.assert_close(log_px - bound, gap, atol=1e-8, rtol=0)


def test_encoder_elbo_matches_closed_form(setup):
    vae, lg, x = setup
    q = vae.posterior(x)  # an arbitrary (untrained) mean-field Q
    cov = torch.diag_embed(q.base_dist.scale**2)
    exact = lg.elbo(x, q.base_dist.loc, cov)
    n = 100_000
    r = elbo(vae, x, num_samples=n)
    assert (exact < lg.log_marginal(x)).all()
    # the reconstruction term is Monte Carlo: compare within 5 standard errors per example
    z = q.sample((n,))
    se = vae.p_x_given_z(z).log_prob(x).std(0) / math.sqrt(n)
    assert ((r.elbo - exact).abs() < 5 * se).all()


def test_iwae_bound_grows_with_k_towards_log_marginal(setup):
    vae, lg, x = setup
    post = lg.posterior(x)
    # the best mean-field Q has the posterior's mean and the precision's diagonal: not exact
    prec_diag = torch.linalg.inv(post.covariance_matrix).diagonal(dim1=-2, dim2=-1)
    q = diagonal_normal(post.loc, prec_diag.rsqrt())
    log_px = lg.log_marginal(x)
    means, ses = [], []
    with torch.no_grad():
        for k in (1, 10, 100, 1000):
            reps = torch.stack([iwae_bound(vae, x, k, q_z=q) for _ in range(200)])
            means.append(reps.mean(0))
            ses.append(reps.std(0) / math.sqrt(200))
    gaps = torch.stack([log_px - m for m in means])  # [4, B]
    assert (gaps[:-1].mean(1) > gaps[1:].mean(1)).all(), gaps.mean(1)
    # at k = 1 the gap is the KL from the mean-field Q to the true posterior, in closed form
    q_full = torch.distributions.MultivariateNormal(q.base_dist.loc, covariance_matrix=torch.diag_embed(q.base_dist.scale**2))
    kl = torch.distributions.kl_divergence(q_full, post)
    assert ((gaps[0] - kl).abs() < 4 * ses[0]).all()
    assert (gaps[-1] < 0.1 * kl).all()  # and k = 1000 closes most of it


def test_log_likelihood_estimator_against_exact(setup):
    vae, lg, x = setup
    log_px = lg.log_marginal(x)
    ll = log_likelihood(vae, x, k=2000, seed=3)
    # per-example error within 3 standard errors of the mean: use the spread over repeated seeds
    reps = torch.stack([log_likelihood(vae, x, k=2000, seed=s).per_example for s in range(5)])
    se = reps.std(0).clamp_min(1e-6)
    assert ((ll.per_example - log_px).abs() < 3 * se + 1e-3).all()
    # k = 1 is the single-sample ELBO with the same noise
    torch.manual_seed(0)
    one = log_likelihood(vae, x, k=1, seed=7).per_example
    with torch.random.fork_rng():
        torch.manual_seed(batch_seed(7, 0))
        single = elbo(vae, x, kl="mc").elbo
    torch.testing.assert_close(one, single, atol=1e-10, rtol=0)


def test_chunking_does_not_change_the_estimate(setup, monkeypatch):
    """vaekit's chunked combination of the k log-weights (running logaddexp of per-chunk logsumexps,
    minus log k) equals one float64 logsumexp over all k of the very log-weights it drew, and the ESS
    equals (Σw)²/Σw² of those weights: a dropped chunk or a wrong normalizer fails."""
    vae, _, x = setup
    full = log_likelihood(vae, x, k=300, chunk_size=300, seed=5).per_example
    drawn = []  # every chunk of log-weights the estimator combines, recorded as it draws them

    def recording(*args, **kwargs):
        lw = log_weights(*args, **kwargs)
        drawn.append(lw.detach().clone())
        return lw

    monkeypatch.setattr(estimates, "log_weights", recording)
    # the default chunk size under a small budget: 7 draws × 8 examples × 5 dimensions per chunk
    monkeypatch.setattr(estimates, "CPU_CHUNK_ELEMENTS", 7 * x.shape[0] * x.shape[1])
    chunked = log_likelihood(vae, x, k=300, seed=5)
    assert [c.shape[0] for c in drawn] == [7] * 42 + [6]  # 300 draws in chunks, the last one short
    lw = torch.cat(drawn).double()  # [300, 8]
    torch.testing.assert_close(chunked.per_example, torch.logsumexp(lw, 0) - math.log(300), atol=1e-10, rtol=0)
    w = (lw - lw.max(0).values).exp()
    torch.testing.assert_close(chunked.ess, w.sum(0) ** 2 / (w**2).sum(0), atol=1e-8, rtol=1e-10)
    assert (chunked.per_example - full).abs().max() < 0.05  # different draws, same estimand, k = 300
