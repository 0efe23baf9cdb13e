"""The VampPrior (Tomczak & Welling 2018): its density against a float64 logsumexp written out over the
encoder's posteriors at the pseudo-inputs, the Monte Carlo ELBO it forces, gradients through the prior
term, one copy of the encoder's weights, and a run trained with it through the command line."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from pngread import read_png
from run_cli import vaekit_cli
from safetensors.torch import load_file
from torch.distributions import Categorical, MultivariateNormal

import vaekit
from vaekit.objectives.estimators import analytic_kl
from vaekit.parts.distributions import diagonal_normal
from vaekit.parts.posteriors import POSTERIORS
from vaekit.parts.priors import PRIORS, Mixture, VampPrior
from vaekit.runs.checkpoint import load_run

D = torch.float64


def small_model(posterior="diagonal", components=5, data_dim=6, latent_dim=3):
    model = vaekit.VAE(data_dim=data_dim, latent_dim=latent_dim, hidden=(8,), prior={"name": "vampprior", "components": components},
                       posterior=posterior).double()
    with torch.no_grad():  # pseudo-inputs spread over [0, 1], a few outside it (the clamp acts there)
        model.prior.pseudo_inputs.uniform_(-0.2, 1.2)
    return model


def diagonal_mixture_log_density(z, loc, scale):
    """log (1/K) Σ_c Π_j N(z_j; μ_cj, σ_cj), written out in float64: z [..., k], loc and scale [K, k]."""
    z, loc, scale = (t.detach().to(D) for t in (z, loc, scale))
    r = (z.unsqueeze(-2) - loc) / scale  # [..., K, k]
    log_normal = (-0.5 * r**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)  # [..., K]
    return torch.logsumexp(log_normal, -1) - math.log(loc.shape[0])


def by_hand(model, z):
    """log p(z) from the encoder's loc and scale at the clamped pseudo-inputs, written out."""
    q_u = model.encoder(model.prior.pseudo_inputs.clamp(0, 1))
    return diagonal_mixture_log_density(z, q_u.base_dist.loc, q_u.base_dist.scale)


def test_log_prob_equals_explicit_logsumexp_over_the_encoder_posteriors():
    torch.manual_seed(0)
    model = small_model()
    prior = PRIORS.build("vampprior", latent_dim=3, components=5, encoder=model.encoder, data_dim=6)
    assert isinstance(model.prior, VampPrior) and isinstance(prior, VampPrior)
    assert model.prior.pseudo_inputs.shape == (5, 6) and model.prior.encoder is model.encoder
    z = torch.cat([torch.randn(4, 7, 3, dtype=D), 4 * torch.randn(1, 7, 3, dtype=D)])  # far tails included
    p_z = model.prior()
    assert isinstance(p_z, Mixture) and p_z.event_shape == (3,) and p_z.component_distribution.batch_shape == (5,)
    got = p_z.log_prob(z)
    assert got.shape == (5, 7) and got.dtype == D
    torch.testing.assert_close(got, by_hand(model, z), atol=1e-10, rtol=0)
    # the clamp matters: the encoder's posteriors at the raw pseudo-inputs give another density
    q_raw = model.encoder(model.prior.pseudo_inputs)
    unclamped = diagonal_mixture_log_density(z, q_raw.base_dist.loc, q_raw.base_dist.scale)
    assert (got - unclamped).abs().max() > 1e-3


@pytest.mark.parametrize("posterior", POSTERIORS.names())
def test_every_posterior_family_mixes_its_posteriors_at_the_pseudo_inputs(posterior):
    """(1/K) Σ_k Q(z|u_k) with Q(z|u_k) from the encoder on one pseudo-input at a time, for every
    registered Q (a full covariance goes through MixtureSameFamily's own log_prob)."""
    torch.manual_seed(1)
    model = small_model(posterior, components=4)
    z = 2 * torch.randn(6, 5, 3, dtype=D)
    u = model.prior.pseudo_inputs.clamp(0, 1)
    each = torch.stack([model.encoder(u[c]).log_prob(z) for c in range(4)], -1)  # [6, 5, K]
    want = torch.logsumexp(each, -1) - math.log(4)
    torch.testing.assert_close(model.prior().log_prob(z), want, atol=1e-9, rtol=0)


def test_full_covariance_components_by_their_cholesky_factors():
    torch.manual_seed(2)
    model = small_model("full", components=4)
    q_u = model.encoder(model.prior.pseudo_inputs.clamp(0, 1))
    assert isinstance(model.prior().component_distribution, MultivariateNormal)
    z = 2 * torch.randn(9, 3, dtype=D)
    loc, tril = q_u.loc.detach(), q_u.scale_tril.detach()  # [K, k], [K, k, k]
    r = torch.linalg.solve_triangular(tril, (z[:, None] - loc).unsqueeze(-1), upper=False).squeeze(-1)  # [9, K, k]
    log_normal = -0.5 * (r**2).sum(-1) - tril.diagonal(dim1=-2, dim2=-1).log().sum(-1) - 1.5 * math.log(2 * math.pi)
    want = torch.logsumexp(log_normal, -1) - math.log(4)
    torch.testing.assert_close(model.prior().log_prob(z), want, atol=1e-10, rtol=0)


def test_float32_log_density_of_500_sharp_components_is_the_float64_value_rounded():
    """The expanded square cancels large terms at VampPrior-like sizes (K = 500, k = 40, σ ≈ 0.1): in
    float32 that would be 1e-3 nats off; it is computed in float64, so only the result is rounded."""
    g = torch.Generator().manual_seed(3)
    loc, scale = torch.randn(500, 40, generator=g), 0.05 + 0.1 * torch.rand(500, 40, generator=g)
    z = loc[torch.randint(500, (3000,), generator=g)] + 0.1 * torch.randn(3000, 40, generator=g)
    got = Mixture(Categorical(logits=torch.zeros(500)), diagonal_normal(loc, scale)).log_prob(z)
    want = diagonal_mixture_log_density(z, loc, scale)
    assert got.dtype == torch.float32 and want.abs().max() > 20
    error = got.double() - want
    assert (error.abs() <= 2**-23 * want.abs() + 1e-9).all(), error.abs().max()  # within one float32 ulp


@pytest.mark.parametrize("family", ["diagonal", "full"])
def test_mixture_draws_come_from_the_components_in_their_proportions(family):
    loc = torch.tensor([[-20.0, 0.0], [0.0, 20.0], [20.0, 0.0]])
    tril = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[0.5, 0.0], [0.3, 1.0]], [[2.0, 0.0], [-1.0, 0.5]]])
    if family == "diagonal":
        tril = torch.diag_embed(tril.diagonal(dim1=-2, dim2=-1))
        comp = diagonal_normal(loc, tril.diagonal(dim1=-2, dim2=-1))
    else:
        comp = MultivariateNormal(loc, scale_tril=tril)
    weights = torch.tensor([1.0, 2.0, 3.0]) / 6
    torch.manual_seed(4)
    z = Mixture(Categorical(probs=weights), comp).sample((60_000,))
    assert z.shape == (60_000, 2)
    c = torch.cdist(z, loc).argmin(1)  # components 20 apart: the nearest mean is the one drawn from
    counts = torch.bincount(c, minlength=3).double()
    assert ((counts - 60_000 * weights).abs() < 4 * (60_000 * weights * (1 - weights)).sqrt()).all(), counts
    for j in range(3):
        zj = z[c == j].double()
        cov = torch.cov(zj.T)
        torch.testing.assert_close(zj.mean(0), loc[j].double(), atol=0.06, rtol=0)
        torch.testing.assert_close(cov, (tril[j] @ tril[j].T).double(), atol=0.1, rtol=0.05)


def test_elbo_is_monte_carlo_and_equals_the_draws_by_hand():
    torch.manual_seed(5)
    model = small_model(components=3)
    x = torch.bernoulli(torch.full((5, 6), 0.4, dtype=D))
    q = model.posterior(x)
    assert analytic_kl(q, model.prior()) is None  # no closed form against a mixture
    z = q.rsample((7,))  # [S, B, k]
    r = vaekit.elbo(model, x, q_z=q, kl="mc", z=z)
    log_px = model.p_x_given_z(z).log_prob(x)  # [S, B]
    log_q, log_p = q.log_prob(z), by_hand(model, z)
    torch.testing.assert_close(r.elbo, (log_px - (log_q - log_p)).mean(0), atol=1e-10, rtol=0)
    torch.testing.assert_close(r.kl, (log_q - log_p).mean(0), atol=1e-10, rtol=0)
    auto = vaekit.elbo(model, x, q_z=q, z=z)  # kl="auto" has no closed form: the same Monte Carlo KL
    assert torch.equal(auto.kl, r.kl) and torch.equal(auto.elbo, r.elbo)


def test_gradients_reach_pseudo_inputs_and_encoder_through_the_prior_term():
    torch.manual_seed(6)
    model = small_model(components=4)
    with torch.no_grad():
        model.prior.pseudo_inputs[1, 5] = 1.5  # clamped: hardtanh passes no gradient there
    z = torch.randn(10, 3, dtype=D)  # fixed draws: only the prior term log p(z) depends on the weights

    def log_p(tensor, index, value):
        with torch.no_grad():
            old = tensor[index].item()
            tensor[index] = value
            out = model.prior().log_prob(z).sum().item()
            tensor[index] = old
        return out

    model.prior().log_prob(z).sum().backward()
    eps = 1e-6
    for tensor, index in ((model.prior.pseudo_inputs, (2, 3)), (model.encoder.net[0].weight, (0, 1))):
        value = tensor[index].item()
        numeric = (log_p(tensor, index, value + eps) - log_p(tensor, index, value - eps)) / (2 * eps)
        assert abs(tensor.grad[index].item()) > 1e-4, index
        assert abs(tensor.grad[index].item() - numeric) < 1e-7 * max(1.0, abs(numeric)), (index, numeric)
    assert model.prior.pseudo_inputs.grad[1, 5] == 0
    assert model.decoder.net[0].weight.grad is None  # the prior term does not touch the decoder


def test_encoder_weights_are_held_once():
    model = vaekit.VAE(data_dim=64, latent_dim=3, hidden=(16,), prior={"name": "vampprior", "components": 7})

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(model) == count(model.encoder) + count(model.decoder) + 7 * 64
    named = [name for name, _ in model.named_parameters(remove_duplicate=False)]  # a second owner would list it twice
    assert len(named) == len(set(named)) == len(list(model.parameters()))
    assert [k for k in model.state_dict() if k.startswith("prior.")] == ["prior.pseudo_inputs"]
    keys = list(model.state_dict())
    assert [k for k in keys if "encoder" in k] == [k for k in keys if k.startswith("encoder.")]
    # .to() moves the shared encoder with the VAE, and a copy of the VAE shares the copy's encoder
    model.double()
    assert model.prior().component_distribution.base_dist.loc.dtype == D and model.prior.encoder is model.encoder
    twin = copy.deepcopy(model)
    assert twin.prior.encoder is twin.encoder and twin.encoder is not model.encoder


def test_save_load_gives_the_same_elbo_on_the_same_draws(tmp_path):
    torch.manual_seed(7)
    model = vaekit.VAE(data_dim=64, latent_dim=3, hidden=(16,), prior={"name": "vampprior", "components": 7})
    with torch.no_grad():
        model.prior.pseudo_inputs.uniform_(0, 1)
    vaekit.save(model, tmp_path / "m")
    loaded = vaekit.load(tmp_path / "m")
    assert isinstance(loaded.prior, VampPrior) and loaded.prior.encoder is loaded.encoder
    x = torch.bernoulli(torch.full((9, 64), 0.3))
    z = model.posterior(x).sample((5,))
    a, b = vaekit.elbo(model, x, z=z), vaekit.elbo(loaded, x, z=z)
    assert torch.equal(a.elbo, b.elbo) and torch.equal(a.kl, b.kl) and a.elbo.isfinite().all()


# --- a run trained with the VampPrior through the command line -----------------------------------

FLAGS = ["--dataset", "digits", "--prior", "vampprior", "--prior-components", "20", "--latent-dim", "3",
         "--hidden", "32", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def vamp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vamp") / "run"
    vaekit_cli("--quiet", "train", *FLAGS, "--epochs", "2", "--out", out)
    return out


def test_run_evaluates_consistently(vamp_run):
    m = json.loads(vaekit_cli("evaluate", vamp_run, "--k", "50", "--json").stdout)
    assert m["n"] == 297 and m["k"] == 50 and m["latent_dim"] == 3 and m["bound_check"] == "ok"
    assert abs(m["elbo"] - (m["reconstruction"] - m["kl"])) < 1e-6
    # the importance-sampled bound is above the ELBO up to their Monte Carlo errors
    assert m["log_likelihood"] >= m["elbo"] - 3 * (m["elbo_mc_stderr"] + m["log_likelihood_mc_stderr"])
    assert m["kl_per_dim"] is None and m["kl"] > 0


def test_run_learned_its_pseudo_inputs_and_samples_from_them(vamp_run):
    cfg, model = load_run(vamp_run)
    torch.manual_seed(cfg.train.seed)  # what train_run does before building the model
    initial = vaekit.build_model(cfg.model).state_dict()
    saved = load_file(vamp_run / "model.safetensors")
    assert saved.keys() == initial.keys() and saved["prior.pseudo_inputs"].shape == (20, 64)
    assert (saved["prior.pseudo_inputs"] - initial["prior.pseudo_inputs"]).abs().max() > 1e-2  # Adam moved them
    vaekit_cli("sample", vamp_run, "--n", "16", "--seed", "3")
    drawn = np.load(vamp_run / "samples.npy")
    torch.manual_seed(3)
    want = model.sample(16).numpy().reshape(16, 1, 8, 8)
    assert drawn.shape == (16, 1, 8, 8) and np.allclose(drawn, want, atol=1e-6) and drawn.std() > 0


def test_run_pictures_show_the_pseudo_inputs(vamp_run):
    vaekit_cli("plot", vamp_run)
    grid = read_png(vamp_run / "pseudo_inputs.png")  # vaekit's own grid writer: chunks and CRCs checked
    # 20 tiles of 8×8 in 5 columns and 4 rows, 1-pixel borders, each pixel drawn 6×6
    assert grid.shape == (6 * (4 * 9 + 1), 6 * (5 * 9 + 1), 1)
    u = load_file(vamp_run / "model.safetensors")["prior.pseudo_inputs"].clamp(0, 1)
    for i in (0, 7, 19):
        r, c = divmod(i, 5)
        tile = grid[6 * (1 + 9 * r) : 6 * (9 + 9 * r) : 6, 6 * (1 + 9 * c) : 6 * (9 + 9 * c) : 6, 0]
        assert np.array_equal(tile, (u[i] * 255).round().to(torch.uint8).reshape(8, 8).numpy()), i
    vaekit_cli("report", vamp_run, "--k", "20")
    page = (vamp_run / "report.html").read_text(encoding="utf-8")
    assert 'alt="pseudo_inputs"' in page and "learned pseudo-inputs u_k (of K = 20)" in page


def test_standard_prior_runs_have_no_pseudo_input_picture(tmp_path):
    run = tmp_path / "std"
    vaekit.train_run(vaekit.Config().replace(model={"latent_dim": 2, "hidden": [16]}, train={"epochs": 1}), run)
    from vaekit.pictures.report import part_pictures

    assert part_pictures(load_run(run)[1]) == {}
