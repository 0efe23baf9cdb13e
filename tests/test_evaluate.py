import math

import torch

from vaekit import VAE, LinearGaussian, evaluate_elbo
from vaekit.evaluation.checks import bound_check, ess_warning, evaluation_warnings
from vaekit.evaluation.estimates import (
    bits_per_dim,
    delta_method_variance,
    evaluate_all,
    latent_statistics,
    log_likelihood,
)
from vaekit.parts.distributions import diagonal_normal

D = torch.float64


def test_active_units_and_kl_per_dim():
    torch.manual_seed(0)
    vae = VAE(data_dim=10, latent_dim=4, hidden=())
    lin = vae.encoder.net[0]
    with torch.no_grad():  # means of units 1 and 3 ignore x; units 0, 2 vary with it by construction
        lin.weight[[1, 3]] = 0.0
        lin.weight[[0, 2]] *= 5
    x = torch.bernoulli(torch.full((500, 10), 0.5))
    stats = latent_statistics(vae, x, batch_size=128)
    assert stats["active_units"] == 2
    assert stats["unit_activity"][1] == stats["unit_activity"][3] == 0.0
    # the per-dimension KLs add up to the KL term of the ELBO
    assert abs(sum(stats["kl_per_dim"]) - evaluate_elbo(vae, x)["kl"]) < 1e-4


def test_bits_per_dim():
    assert abs(bits_per_dim(-784 * math.log(2), 784) - 1.0) < 1e-12


def test_evaluation_is_seeded_and_leaves_the_callers_rng_alone():
    torch.manual_seed(0)
    model = VAE(16, latent_dim=2, hidden=(8,))
    x = (torch.rand(50, 16) < 0.5).float()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = evaluate_elbo(model, x, seed=4).terms(), log_likelihood(model, x, k=20, seed=4).mean
    assert torch.equal(torch.get_rng_state(), before)  # training noise after a validation pass is unchanged
    torch.manual_seed(999)
    assert (evaluate_elbo(model, x, seed=4).terms(), log_likelihood(model, x, k=20, seed=4).mean) == first
    assert log_likelihood(model, x, k=20, seed=5).mean != first[1]


# --- two kinds of error, against the linear-Gaussian model whose log p(x) is exact --------------


def linear_gaussian(n=200, seed=1):
    """A float64 VAE with a linear decoder (exact p(x) and p(z|x)), data drawn from it, and the best
    mean-field Q of each example (the posterior's mean, the precision's diagonal): close, not exact."""
    torch.manual_seed(seed)
    vae = VAE(data_dim=5, latent_dim=2, hidden=(), likelihood={"name": "gaussian", "sigma": 0.7}).double()
    with torch.no_grad():
        vae.decoder.net[0].weight.mul_(3.0)
    lg = LinearGaussian.from_model(vae)
    x = lg.marginal().sample((n,))
    post = lg.posterior(x)
    prec_diag = torch.linalg.inv(post.covariance_matrix).diagonal(dim1=-2, dim2=-1)
    return vae, lg, x, post, diagonal_normal(post.loc, prec_diag.rsqrt())


def test_exact_q_gives_log_marginal_full_ess_and_no_monte_carlo_error():
    vae, lg, x, post, _ = linear_gaussian()
    # q_z over all 200 examples, cut into batches of 64 (a MultivariateNormal with a shared covariance)
    ll = log_likelihood(vae, x, k=50, batch_size=64, q_z=post)
    torch.testing.assert_close(ll.per_example, lg.log_marginal(x), atol=1e-8, rtol=0)  # every w_i = p(x)
    torch.testing.assert_close(ll.ess, torch.full((200,), 50.0, dtype=D), atol=1e-6, rtol=0)
    assert ll.mc_stderr < 1e-6
    # the other error is the spread of log p(x) over the examples: the standard error of their mean
    assert abs(ll.stderr - float(lg.log_marginal(x).std() / math.sqrt(200))) < 1e-8
    assert ll.stderr > 0.1


def test_log_likelihood_mc_stderr_matches_the_spread_of_repeated_seeds():
    vae, lg, x, _, best = linear_gaussian()
    loc, scale = best.base_dist.loc, best.base_dist.scale
    q = diagonal_normal(loc + 0.5 * scale, 1.3 * scale)  # a worse Q: ESS ≈ 2/3 of k, like a trained model's
    k, seeds = 20, 60
    runs = [log_likelihood(vae, x, k=k, batch_size=64, seed=s, q_z=q) for s in range(seeds)]
    means = torch.tensor([r.mean for r in runs], dtype=D)
    reported = sum(r.mc_stderr for r in runs) / seeds
    empirical = float(means.std())  # its own relative error ≈ 1/sqrt(2·59) ≈ 9%
    assert 0.75 < reported / empirical < 1.25, (reported, empirical)
    # per example too: the delta method's variance against the variance over seeds, in the median
    per_example = torch.stack([r.per_example for r in runs])
    delta = torch.stack([delta_method_variance(r.ess, k) for r in runs]).mean(0)
    ratio = (delta / per_example.var(0)).median()
    assert 0.8 < ratio < 1.2, ratio
    # the Monte Carlo error is far below the spread over examples, and the estimate sits at L_k < log p(x)
    assert runs[0].stderr > 5 * reported
    gap = float(lg.log_marginal(x).mean()) - float(means.mean())
    assert 0 < gap < 0.05, gap
    ess = torch.stack([r.ess for r in runs])
    assert 1 <= ess.min() and ess.max() <= k and 0.5 < float(ess.median()) / k < 0.8


def test_delta_method_understates_the_error_of_a_too_narrow_q():
    # Q narrower than p(z|x) gives heavy-tailed weights, whose sample variance runs low: the reported
    # Monte Carlo error is then an underestimate (here by ≈ 25%); the ESS warning is for the worst cases
    vae, _, x, _, best = linear_gaussian()
    q = diagonal_normal(best.base_dist.loc + 0.5 * best.base_dist.scale, 0.8 * best.base_dist.scale)
    runs = [log_likelihood(vae, x, k=20, batch_size=64, seed=s, q_z=q) for s in range(60)]
    ratio = sum(r.mc_stderr for r in runs) / len(runs) / float(torch.tensor([r.mean for r in runs]).std())
    assert 0.55 < ratio < 0.95, ratio


def test_delta_method_variance_is_the_unbiased_weight_variance():
    w = torch.tensor([[0.5, 2.0, 1.0, 4.0]], dtype=D).T  # [k = 4, B = 1]
    ess = w.sum(0) ** 2 / (w**2).sum(0)
    want = w.var(0) / (4 * w.mean(0) ** 2)  # Var(w)/(k·mean(w)²), unbiased Var
    torch.testing.assert_close(delta_method_variance(ess, 4), want, atol=1e-12, rtol=0)
    assert delta_method_variance(torch.ones(3, dtype=D), 1).isnan().all()  # k = 1: no spread to measure


def test_elbo_mc_stderr_matches_repeated_seeds_and_the_closed_form():
    vae, lg, x, _, _ = linear_gaussian(n=100)
    with torch.no_grad():
        q = vae.posterior(x)  # the untrained encoder's Q: its ELBO in closed form
    exact = float(lg.elbo(x, q.base_dist.loc, torch.diag_embed(q.base_dist.scale**2)).mean())
    runs = [evaluate_elbo(vae, x, num_samples=10, batch_size=32, seed=s) for s in range(40)]
    values = torch.tensor([r.elbo for r in runs], dtype=D)
    reported = sum(r.mc_stderr for r in runs) / len(runs)
    assert 0.7 < reported / float(values.std()) < 1.3, (reported, float(values.std()))
    assert abs(float(values.mean()) - exact) < 4 * reported / math.sqrt(len(runs))
    assert all(abs(r.elbo - (r.reconstruction - r.kl)) < 1e-9 for r in runs)
    assert math.isnan(evaluate_elbo(vae, x, num_samples=1).mc_stderr)
    # more draws, less error: 1/sqrt(S)
    assert abs(evaluate_elbo(vae, x, num_samples=40).mc_stderr / runs[0].mc_stderr - 0.5) < 0.1


class OffByOne(torch.distributions.Independent):
    """A diagonal Gaussian whose log_prob is 1 nat too high: the bug the bound check is for."""

    def log_prob(self, z):
        return super().log_prob(z) + 1.0


def test_bound_check_flags_an_elbo_above_the_log_likelihood():
    vae, lg, x, _, _ = linear_gaussian(n=100)

    def best_mean_field(xb):
        post = lg.posterior(xb)
        prec_diag = torch.linalg.inv(post.covariance_matrix).diagonal(dim1=-2, dim2=-1)
        return diagonal_normal(post.loc, prec_diag.rsqrt())

    vae.posterior = best_mean_field
    good = evaluate_all(vae, x, k=100, elbo_samples=50)
    assert good["bound_check"] == "ok" and good["elbo"] < good["log_likelihood"]
    assert evaluation_warnings(good) == []
    # the ELBO takes Q's closed-form KL, the log-weights its (wrong) log_prob: L_k drops by 1 nat
    vae.posterior = lambda xb: OffByOne(best_mean_field(xb).base_dist, 1)
    bad = evaluate_all(vae, x, k=100, elbo_samples=50)
    assert abs(bad["log_likelihood"] - (good["log_likelihood"] - 1.0)) < 1e-9  # same draws, weights / e
    assert bad["bound_check"] == "violated"
    assert any(w.startswith("BUG: the ELBO") for w in evaluation_warnings(bad))
    assert evaluate_all(vae, x, k=100, elbo_samples=1)["bound_check"] == "unchecked"


def test_bound_check_and_ess_warning_thresholds():
    assert bound_check(-10.0, 0.01, -9.5, 0.01) == "ok"
    assert bound_check(-9.95, 0.01, -10.0, 0.01) == "ok"  # 0.05 above: within 4 × 0.0141
    assert bound_check(-9.9, 0.01, -10.0, 0.01) == "violated"  # 0.1 above: beyond
    assert bound_check(-9.0, float("nan"), -10.0, 0.01) == "unchecked"
    assert ess_warning({"k": 1000, "ess_median": 50.0, "ess_min": 1.0}) is None
    assert "median ESS 49.9 of k = 1000" in ess_warning({"k": 1000, "ess_median": 49.9, "ess_min": 1.0})


def test_evaluation_leaves_the_models_mode_as_it_was():
    torch.manual_seed(0)
    model = VAE(16, latent_dim=2, hidden=(8,))
    x = (torch.rand(30, 16) < 0.5).float()
    for training in (True, False):
        model.train(training)
        model.decoder.train(not training)  # a mixed state is restored module by module
        evaluate_elbo(model, x)
        log_likelihood(model, x, k=5)
        latent_statistics(model, x)
        evaluate_all(model, x, k=5, elbo_samples=2)
        assert model.training is training and model.encoder.training is training
        assert model.decoder.training is (not training)


def test_labels_give_each_batch_its_conditional_model_and_its_seed():
    """y: batch b is evaluated by model.given(y_b) under the seed (seed, b): the per-example estimate is
    logsumexp of the k log-weights drawn so, minus log k, by hand; labels of another length are refused."""
    import pytest

    from vaekit.errors import VaekitError
    from vaekit.objectives.estimators import log_weights
    from vaekit.rng import batch_seed

    torch.manual_seed(0)
    model = VAE(data_dim=12, latent_dim=3, hidden=(8,), condition="label", condition_classes=4).double()
    g = torch.Generator().manual_seed(1)
    x, y = (torch.rand(10, 12, generator=g, dtype=D) < 0.4).to(D), torch.randint(0, 4, (10,), generator=g)
    ll = log_likelihood(model, x, k=7, batch_size=4, seed=2, y=y)
    by_hand = []
    for b, (xb, yb) in enumerate(zip(x.split(4), y.split(4))):
        torch.manual_seed(batch_seed(2, b))
        by_hand.append(torch.logsumexp(log_weights(model.given(yb), xb, 7), 0) - math.log(7))
    torch.testing.assert_close(ll.per_example, torch.cat(by_hand), atol=1e-10, rtol=0)
    with pytest.raises(VaekitError, match="9 labels for 10 examples"):
        log_likelihood(model, x, k=7, y=y[:9])


def test_default_k_single_example_and_the_smallest_k_with_a_spread():
    """k = 1000, batches of 100 and seed 0 by default (every weight of the exact Q is p(x): ESS = k); one example has no spread over
    examples (stderr NaN), two have; k = 2 is the smallest k with a Monte Carlo variance: Var(w)/(k·mean(w)²)."""
    vae, lg, x, post, _ = linear_gaussian(n=3)
    ll = log_likelihood(vae, x, q_z=post)
    torch.testing.assert_close(ll.ess, torch.full((3,), 1000.0, dtype=D), atol=1e-6, rtol=0)
    one = log_likelihood(vae, x[:1], k=5, q_z=lg.posterior(x[:1]))
    assert math.isnan(one.stderr) and one.per_example.shape == (1,)
    two = log_likelihood(vae, x[:2], k=5, q_z=lg.posterior(x[:2]))
    assert abs(two.stderr - float(two.per_example.std() / math.sqrt(2))) < 1e-12 and two.stderr > 0
    vae, _, x, _, best = linear_gaussian(n=150)  # batches of 100 and seed 0 by default
    default = log_likelihood(vae, x, k=3, q_z=best).per_example
    assert torch.equal(default, log_likelihood(vae, x, k=3, q_z=best, batch_size=100, seed=0).per_example)
    assert not torch.equal(default, log_likelihood(vae, x, k=3, q_z=best, batch_size=101).per_example)
    w = torch.tensor([[1.0], [3.0]], dtype=D)  # [k = 2, B = 1]: unbiased Var = 2, mean 2
    torch.testing.assert_close(delta_method_variance(w.sum(0) ** 2 / (w**2).sum(0), 2),
                               torch.tensor([2 / (2 * 4)], dtype=D), atol=1e-12, rtol=0)


def test_the_smallest_memory_budget_still_draws_one_sample_per_chunk(monkeypatch):
    """A budget below one draw's decoder output (B × D elements) gives chunks of one draw, never none,
    and the estimate is still logsumexp over all k draws minus log k."""
    from vaekit.evaluation import estimates

    vae, _, x, _, best = linear_gaussian(n=4)
    drawn = []
    unrecorded = estimates.log_weights

    def recording(*args, **kwargs):
        lw = unrecorded(*args, **kwargs)
        drawn.append(lw.detach().clone())
        return lw

    monkeypatch.setattr(estimates, "log_weights", recording)
    monkeypatch.setattr(estimates, "CPU_CHUNK_ELEMENTS", 1)
    chunked = log_likelihood(vae, x, k=5, q_z=best, seed=1)
    assert [c.shape[0] for c in drawn] == [1] * 5
    torch.testing.assert_close(chunked.per_example, torch.logsumexp(torch.cat(drawn), 0) - math.log(5), atol=1e-10, rtol=0)


def test_log_likelihood_reports_its_progress_only_when_asked(monkeypatch, capsys):
    """progress=False by default: nothing on stderr; progress=True: examples done of N, batch by batch."""
    from vaekit.training import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # a plain line at every update, not every 10 s
    vae, _, x, _, best = linear_gaussian(n=150)
    log_likelihood(vae, x, k=3, q_z=best)
    assert capsys.readouterr().err == ""
    log_likelihood(vae, x, k=3, q_z=best, progress=True)
    assert "log-likelihood (k = 3): 100/150 ex" in capsys.readouterr().err
