"""The full-covariance Gaussian Q: its density against the explicit formula, the exact posterior of a
linear-Gaussian model represented by the encoder (ELBO = log p(x)), training, DReG and latent statistics."""

import math

import torch
from dreg_check import check_dreg
from torch.distributions import MultivariateNormal

import vaekit
from vaekit import Config, LinearGaussian, train_run
from vaekit.evaluation.estimates import evaluate_elbo, latent_statistics
from vaekit.parts.posteriors import POSTERIORS, FullCovarianceGaussian
from vaekit.runs.experiment import load_data, resolve

D = torch.float64
LOG_2PI = math.log(2 * math.pi)


def mvn_log_density(z, loc, scale_tril):
    """−½ rᵀΣ⁻¹r − ½ log det(2πΣ), Σ = LLᵀ, written out in float64: z [..., k], loc [..., k], L [..., k, k]."""
    cov = scale_tril @ scale_tril.transpose(-1, -2)
    r = (z - loc).unsqueeze(-1)
    k = z.shape[-1]
    cov = cov.expand(*r.shape[:-2], k, k)
    quad = (r.transpose(-1, -2) @ torch.linalg.solve(cov, r))[..., 0, 0]
    return -0.5 * quad - 0.5 * (k * LOG_2PI + torch.linalg.slogdet(cov)[1])


def full_vae(**settings):
    model = vaekit.VAE(data_dim=6, latent_dim=3, hidden=(8,), posterior="full", **settings).double()
    with torch.no_grad():
        model.encoder.head.gate.fill_(1.0)  # correlated from the start (a trained model's Q)
    return model


def test_full_covariance_head_gives_a_cholesky_factor_and_the_mvn_density():
    k = 4
    head = POSTERIORS.build("full", latent_dim=k)
    assert isinstance(head, FullCovarianceGaussian)
    n_out = head.out_features(k)
    assert n_out == 2 * k + k * (k - 1) // 2
    h = 0.7 * torch.randn(5, n_out, dtype=D)
    head = head.double()
    q = head(h)
    assert isinstance(q, MultivariateNormal) and q.batch_shape == (5,) and q.event_shape == (k,)
    # the gate starts at 0: Q starts as the diagonal Gaussian N(μ, diag σ²)
    torch.testing.assert_close(q.scale_tril, torch.diag_embed(torch.exp(0.5 * h[:, k : 2 * k])), atol=0, rtol=0)
    with torch.no_grad():
        head.gate.fill_(0.8)
    q = head(h)
    L = q.scale_tril
    assert torch.equal(L, L.tril()) and (L.diagonal(dim1=-2, dim2=-1) > 0).all()
    # the layout h = (μ, log σ², below-diagonal of B, row by row) and L = diag(σ)(I + g·B)
    sigma = torch.exp(0.5 * h[:, k : 2 * k])
    torch.testing.assert_close(q.loc, h[:, :k], atol=0, rtol=0)
    torch.testing.assert_close(L.diagonal(dim1=-2, dim2=-1), sigma, atol=1e-15, rtol=0)
    rows, cols = torch.tril_indices(k, k, offset=-1)
    torch.testing.assert_close(L[:, rows, cols], 0.8 * sigma[:, rows] * h[:, 2 * k :], atol=1e-15, rtol=0)
    z = q.loc + torch.randn(3, 5, k, dtype=D)  # [S, B, k]
    torch.testing.assert_close(q.log_prob(z), mvn_log_density(z, q.loc, L), atol=1e-10, rtol=0)
    with torch.no_grad():
        head.gate.fill_(1.0)
    torch.testing.assert_close(head(head.outputs_for(q.loc, L)).scale_tril, L, atol=1e-14, rtol=0)


def test_full_covariance_q_trains_on_digits():
    cfg = Config().replace(model={"posterior": "full", "latent_dim": 3, "hidden": [32]},
                           train={"epochs": 2, "batch_size": 64, "lr": 3e-3})
    data = load_data(cfg)
    torch.manual_seed(cfg.train.seed)
    untrained = vaekit.build_model(resolve(cfg, data).model)
    val = data.eval_split("val")
    before = evaluate_elbo(untrained, val, seed=cfg.train.seed)["elbo"]
    result = train_run(cfg)
    vals = [r["val/elbo"] for r in result.history]
    assert all(math.isfinite(v) for v in vals), vals
    assert vals[1] > vals[0] > before, (before, vals)
    assert vals[1] - before > 5, (before, vals)  # measured: −44.5 untrained, −35.0 and −30.7 after epochs 1, 2
    q = result.model.posterior(val[:50])
    assert isinstance(q, MultivariateNormal)
    assert q.scale_tril.tril(-1).abs().max() > 1e-3  # the off-diagonal outputs are in use


def test_encoder_can_represent_the_exact_linear_gaussian_posterior():
    k, d, sigma = 3, 7, 0.6
    model = vaekit.VAE(data_dim=d, latent_dim=k, hidden=(), likelihood={"name": "gaussian", "sigma": sigma}, posterior="full").double()
    with torch.no_grad():  # a decoder with some scale, so the posterior is far from the prior and correlated
        model.decoder.net[0].weight.mul_(3.0)
    lg = LinearGaussian.from_model(model)
    x = lg.marginal().sample((6,))
    exact = lg.posterior(x)
    # p(z|x) = N(A(x − b), Σ) with A = Σ Wᵀ/σ²: an affine mean and a constant covariance, which a
    # linear encoder with the full head produces exactly: h = (A x − A b, log diag(L)², below-diagonal of
    # L in units of its row's σ), with the head's gate at 1
    cov = exact.covariance_matrix[0]
    A = cov @ lg.W.T / sigma**2
    L = torch.linalg.cholesky(cov)
    (linear,) = list(model.encoder.net)
    with torch.no_grad():
        model.encoder.head.gate.fill_(1.0)
        linear.weight.zero_()
        linear.weight[:k] = A
        linear.bias.copy_(model.encoder.head.outputs_for(-A @ lg.b, L))
    q = model.posterior(x)
    torch.testing.assert_close(q.loc, exact.loc, atol=1e-10, rtol=0)
    torch.testing.assert_close(q.covariance_matrix, exact.covariance_matrix, atol=1e-10, rtol=0)

    log_px = lg.log_marginal(x)
    # the closed-form ELBO of the encoder's own Q is log p(x)
    torch.testing.assert_close(lg.elbo(x, q.loc, q.covariance_matrix), log_px, atol=1e-5, rtol=0)
    # log p(x, z) − log Q(z|x) = log p(x) at every z: the Monte Carlo KL makes each draw exact
    torch.testing.assert_close(vaekit.elbo(model, x, kl="mc", num_samples=4).elbo, log_px, atol=1e-8, rtol=0)
    # kl="auto": the closed-form KL(N(μ, Σ) ‖ N(0, I)) with a sampled reconstruction term
    n = 20_000
    torch.manual_seed(5)
    z = q.rsample((n,))
    r = vaekit.elbo(model, x, q_z=q, z=z)
    kl = 0.5 * (q.covariance_matrix.diagonal(dim1=-2, dim2=-1).sum(-1) + q.loc.pow(2).sum(-1) - k
                - torch.logdet(q.covariance_matrix))
    torch.testing.assert_close(r.kl, kl, atol=1e-10, rtol=0)
    se = model.p_x_given_z(z).log_prob(x).std(0) / math.sqrt(n)
    assert ((r.elbo - log_px).abs() < 5 * se).all(), ((r.elbo - log_px) / se)


def test_dreg_with_a_full_covariance_q():
    model = full_vae()
    x = torch.bernoulli(torch.full((4, 6), 0.4, dtype=D))

    reps = check_dreg(model, x, copies=64, repeats=40)
    assert (reps[True].var(0).sum() < reps[False].var(0).sum())  # and DReG's encoder gradient is less noisy


def test_latent_statistics_of_a_full_covariance_q_are_the_marginal_kls():
    model = full_vae()
    with torch.no_grad():  # correlated, non-unit posteriors
        model.encoder.net[-1].bias.add_(0.7 * torch.randn_like(model.encoder.net[-1].bias))
    x = torch.bernoulli(torch.full((30, 6), 0.5, dtype=D))
    stats = latent_statistics(model, x, batch_size=7)
    q = model.posterior(x)
    var = q.covariance_matrix.diagonal(dim1=-2, dim2=-1)  # Σ_jj: the marginal Q(z_j|x) = N(μ_j, Σ_jj)
    want = (0.5 * (var + q.loc.pow(2) - 1 - var.log())).mean(0)
    torch.testing.assert_close(torch.tensor(stats["kl_per_dim"], dtype=D), want.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.tensor(stats["unit_activity"], dtype=D), q.loc.var(0, unbiased=False).detach(),
                               atol=1e-12, rtol=0)
    # the marginals' KLs do not add up to the KL of a correlated Q: it exceeds their sum (by the total correlation)
    assert stats["kl_per_dim_sums_to_kl"] is False
    joint = vaekit.elbo(model, x, kl="analytic").kl.mean()
    assert joint > sum(stats["kl_per_dim"]) + 1e-3
