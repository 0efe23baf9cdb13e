"""The inverse autoregressive flow posterior (`--posterior iaf`): its density against the change of
variables with the full Jacobian and against a grid integral, MADE's autoregressive masks, gradients,
ELBO/IWAE/DReG, and training, evaluation, resume and two processes from the command line."""

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
from vaekit.evaluation.estimates import latent_statistics
from vaekit.parts.flows import IAFDistribution
from vaekit.parts.posteriors import POSTERIORS, InverseAutoregressiveFlow

D = torch.float64
LOG_2PI = math.log(2 * math.pi)


def iaf_head(k, steps=2, gain=2.0):
    """A float64 IAF head whose MADE weights are scaled up by `gain`: a clearly non-Gaussian Q."""
    head = POSTERIORS.build("iaf", {"flow_steps": steps}, latent_dim=k).double()
    with torch.no_grad():
        for name, p in head.flow.named_parameters():
            if name.endswith("weight"):
                p.mul_(gain)
    return head


def random_q(head, batch, k, spread=0.5):
    h = spread * torch.randn(batch, head.out_features(k), dtype=D)
    return head(h)


def test_log_prob_is_the_change_of_variables_with_the_full_jacobian():
    k, steps = 4, 3
    head = iaf_head(k, steps)
    assert isinstance(head, InverseAutoregressiveFlow) and head.out_features(k) == 2 * k + 16
    q = random_q(head, 3, k)
    assert isinstance(q, IAFDistribution) and q.batch_shape == (3,) and q.event_shape == (k,)
    eps = torch.randn(3, k, dtype=D)
    z0 = q.loc + q.scale * eps
    for b in range(3):
        def f(z, b=b):
            return head.flow(z, q.context[b])[0]

        jac = torch.autograd.functional.jacobian(f, z0[b])  # [k, k], ∂z_T/∂z₀
        assert jac.triu(1).abs().max() > 1e-3 and jac.tril(-1).abs().max() > 1e-3  # order reversed between steps
        log_base = (-0.5 * eps[b].pow(2) - q.scale[b].log() - 0.5 * LOG_2PI).sum()
        want = log_base - torch.linalg.slogdet(jac)[1]
        z_t = f(z0[b])
        # the sequential inverse, at a z that rsample did not draw
        torch.testing.assert_close(q.log_prob(z_t.expand(3, k))[b], want, atol=1e-10, rtol=0)
        torch.testing.assert_close(head.flow(z_t, q.context[b], inverse=True)[0], z0[b], atol=1e-10, rtol=0)
    # the value remembered by rsample for its own draws equals the inverse's
    z = q.rsample((5,))
    torch.testing.assert_close(q.log_prob(z), q.log_prob(z.detach().clone()), atol=1e-10, rtol=0)


def test_density_integrates_to_one_on_a_grid_and_matches_its_draws():
    k = 2
    head = iaf_head(k, steps=2, gain=3.0)
    q = head(torch.tensor([[0.3, -0.2, -0.5, 0.4, *(0.8 * torch.randn(16, dtype=D))]], dtype=D))
    axis = torch.linspace(-9, 9, 721, dtype=D)
    cell = (axis[1] - axis[0]) ** 2
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 1, 2)  # [G, 1, 2]
    with torch.no_grad():
        density = q.log_prob(grid)[:, 0].exp()
        mass = float(density.sum() * cell)
        assert abs(mass - 1) < 1e-3, mass
        grid_mean = (density[:, None] * grid[:, 0]).sum(0) * cell
        draws = q.sample((200_000,))[:, 0]
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - grid_mean).abs() < 5 * se).all(), ((draws.mean(0) - grid_mean) / se)
    # not a Gaussian: its log-density is not a quadratic in z (the third moment of the draws is not 0)
    skew = ((draws - draws.mean(0)) / draws.std(0)).pow(3).mean(0)
    assert skew.abs().max() > 0.1, skew


def test_made_is_autoregressive():
    k = 5
    head = iaf_head(k, steps=1)
    made = head.flow.steps[0]
    z, c = torch.randn(k, dtype=D), torch.randn(head.context_dim, dtype=D)
    for i in (0, 1):  # m, then s
        jac = torch.autograd.functional.jacobian(lambda z, i=i: made(z, c)[i], z)
        # ∂out_i/∂z_j = 0 for j ≥ i, and nonzero for every j < i
        assert torch.equal(jac.triu(), torch.zeros_like(jac))
        assert (jac.tril(-1)[torch.tril_indices(k, k, -1).unbind()].abs() > 0).all()
        assert torch.autograd.functional.jacobian(lambda c: made(z, c)[0], c).abs().sum() > 0  # the context enters
    # one step: ∂z_1/∂z₀ is lower triangular with diagonal σ_1 = sigmoid(s + 2)
    jac = torch.autograd.functional.jacobian(lambda z: head.flow(z, c)[0], z)
    assert torch.equal(jac.triu(1), torch.zeros_like(jac))
    torch.testing.assert_close(jac.diagonal(), torch.sigmoid(made(z, c)[1] + 2.0), atol=1e-12, rtol=0)


def iaf_vae(**settings):
    torch.manual_seed(0)
    return vaekit.VAE(data_dim=6, latent_dim=3, hidden=(8,), posterior={"name": "iaf", "flow_steps": 2}, **settings).double()


X = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 1, 1], [1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 0, 1]], dtype=D)


@pytest.mark.parametrize("estimator", ["reparameterization", "score-function"])
def test_gradients_reach_the_encoder_and_every_made(estimator):
    model = iaf_vae()
    vaekit.elbo(model, X, estimator=estimator).surrogate.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert any(name.startswith("encoder.head.flow.steps.1.") for name, _ in model.named_parameters())


def test_elbo_with_the_monte_carlo_kl_and_iwae_bounds_increase_in_k():
    model = iaf_vae()
    with torch.no_grad():
        r = vaekit.elbo(model, X, num_samples=20_000)
        assert r.kl.min() > 0  # a Monte Carlo KL (no closed form): KL(Q ‖ p) ≥ 0
        x = X.repeat(4000, 1)
        bounds = {k: vaekit.iwae_bound(model, x, k).view(4000, 4) for k in (1, 5, 50)}
    means = {k: b.mean(0) for k, b in bounds.items()}
    ses = {k: b.std(0) / math.sqrt(4000) for k, b in bounds.items()}
    torch.testing.assert_close(means[1], r.elbo, atol=float(5 * ses[1].max()), rtol=0)  # L_1 is the ELBO
    for small, large in ((1, 5), (5, 50)):
        assert (means[large] - means[small] > -3 * (ses[large] + ses[small])).all(), (small, large)
    assert (means[50] - means[1] > 5 * (ses[50] + ses[1])).all()


def test_dreg_evaluates_log_q_with_detached_made_weights_and_is_unbiased():
    model = iaf_vae()
    q = model.posterior(X)
    z = q.rsample((3,)).detach().requires_grad_()
    (live,) = torch.autograd.grad(q.log_prob(z).sum(), z)
    (through_z,) = torch.autograd.grad(q.detach().log_prob(z).sum(), z)
    torch.testing.assert_close(through_z, live, atol=1e-10, rtol=0)  # the same density, gradient through z
    assert not q.detach().log_prob(z.detach()).requires_grad  # and no path to φ (base, context, MADE weights)

    check_dreg(model, X, copies=32, repeats=20)


def test_latent_statistics_use_a_monte_carlo_mean_and_no_kl_per_dimension():
    model = iaf_vae()
    stats = latent_statistics(model, X.repeat(5, 1), batch_size=7)
    assert stats["latent_dim"] == 3 and stats["kl_per_dim"] is None and stats["kl_per_dim_sums_to_kl"] is False
    torch.manual_seed(1)
    mean = model.encode(X)
    with torch.no_grad():
        draws = model.posterior(X).sample((20_000,))
    se = draws.std(0) / math.sqrt(256)
    assert ((mean - draws.mean(0)).abs() < 5 * se).all()  # E_Q[z|x] from 256 draws


def test_flow_steps_setting():
    assert Config().replace(model={"posterior": "iaf"}).model.posterior["flow_steps"] == 2
    with pytest.raises(VaekitError, match=r"\[model.posterior\] flow_steps must be > 0 and <= 256, got 0"):
        Config.from_dict({"model": {"posterior": {"name": "iaf", "flow_steps": 0}}})
    model = vaekit.build_model(Config().replace(model={"posterior": {"name": "iaf", "flow_steps": 3},
                                                       "data_shape": [64]}).model)
    assert len(model.encoder.head.flow.steps) == 3


TRAIN = ["--quiet", "train", "--dataset", "digits", "--posterior", "iaf", "--flow-steps", "2", "--latent-dim", "4",
         "--hidden", "64", "--lr", "3e-3", "--seed", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return straight_and_resumed(TRAIN, tmp_path_factory.mktemp("iaf"))


def test_cli_trains_and_evaluates_an_iaf_q(runs):
    run = runs / "straight"
    assert json.loads((run / "config.json").read_text())["model"]["posterior"] == {"name": "iaf", "flow_steps": 2}
    weights = load_file(run / "model.safetensors")
    assert {"encoder.head.flow.steps.1.last.weight", "encoder.head.flow.steps.0.context.weight"} <= weights.keys()
    vals = [json.loads(line)["val/elbo"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(vals) == 2 and vals[1] > vals[0], vals
    result = json.loads(vaekit_cli("evaluate", run, "--k", "100", "--json").stdout)
    assert math.isfinite(result["elbo"]) and result["kl"] > 0 and result["kl_per_dim"] is None
    err = 3 * math.hypot(result["elbo_mc_stderr"], result["log_likelihood_mc_stderr"])
    assert result["log_likelihood"] > result["elbo"] - err and result["bound_check"] == "ok"
