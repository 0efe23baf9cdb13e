"""β-TCVAE, DIP-VAE and the capacity objective (`vaekit.objectives.disentangling`): the TC estimators against the
closed form of a Gaussian aggregate posterior, the KL decomposition against the KL, the DIP penalties
and the capacity surrogate by hand, the reported ELBO against `objectives.elbo` on the same draws, and
short runs (with a bit-identical resume) from the command line."""

import itertools
import json
import math

import pytest
import torch
from run_cli import vaekit_cli
from torch.distributions import MultivariateNormal

from vaekit import VAE, Config
from vaekit.data import load_dataset
from vaekit.errors import VaekitError
from vaekit.evaluation.estimates import evaluate_elbo
from vaekit.objectives import OBJECTIVES
from vaekit.objectives.disentangling import (
    aggregate_log_density,
    capacity_target,
    dip_penalties,
    kl_decomposition,
    log_importance_weights,
)
from vaekit.objectives.estimators import draw, elbo
from vaekit.parts.distributions import diagonal_normal
from vaekit.runs.checkpoint import load_run
from vaekit.runs.config import TrainConfig
from vaekit.runs.experiment import load_data
from vaekit.training.loss import VAEObjective

D = torch.float64

# ---- the TC estimators against a Gaussian aggregate posterior --------------------------------------
SIGMA = torch.tensor([[2.0, 1.2], [1.2, 1.0]], dtype=D)  # Cov of the aggregate posterior, correlation 0.85
S2 = 0.1  # each Q(z|x_n) = N(μ_n, s² I); below Σ's smallest eigenvalue 0.2, so Σ − s² I is a covariance


def gaussian_batch(m, g):
    """m examples of a population whose Q(z|x_n) = N(μ_n, s² I), μ_n ~ N(0, Σ − s² I): their aggregate
    posterior is exactly N(0, Σ) (Gaussian noise added to a Gaussian), its marginals N(0, Σ_dd).
    Returns (Q over the batch, one draw z_i ~ Q(z|x_i) each: [1, m, 2])."""
    mu = torch.randn(m, 2, dtype=D, generator=g) @ torch.linalg.cholesky(SIGMA - S2 * torch.eye(2, dtype=D)).T
    z = mu + math.sqrt(S2) * torch.randn(m, 2, dtype=D, generator=g)
    return diagonal_normal(mu, torch.full_like(mu, math.sqrt(S2))), z.unsqueeze(0)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_tc_estimate_approaches_the_closed_form_as_the_batch_grows(estimator):
    """TC of N(0, Σ) is −½ log det R, R the correlation matrix. Tolerance, from the construction:
    Monte Carlo: the estimand's integrand log q(z) − Σ_d log q(z_d) = const − ½ zᵀ(Σ⁻¹ − D⁻¹)z
    (D = diag Σ) has variance ½ tr((I − D⁻¹Σ)²) under N(0, Σ); R batches of m draws: 4 standard errors.
    Bias: q̂(z_i) = Σ_j w_ij q(z_i|x_j) errs by O(1/m). To first order log q̂ is off by (E r − 1)/(2m)
    (MWS: the own term's excess weight (r − 1)/m less Jensen's half of the relative variance; MSS: Jensen
    alone, −(E r − 1)/(2(m − 1))), r = q(z|x)/q(z) at z ~ Q(z|x). For these Gaussians E r = |Σ|/s⁴ for the
    joint and Σ_dd/s² for each marginal (Gaussian integrals), so |bias of TC| ≤ (E r + Σ_d E r_d)/(2(m − 1))."""
    tc_true = -0.5 * torch.logdet(SIGMA / SIGMA.diagonal().sqrt().outer(SIGMA.diagonal().sqrt()))
    inner = torch.eye(2, dtype=D) - SIGMA / SIGMA.diagonal().unsqueeze(-1)  # I − D⁻¹Σ
    sd = math.sqrt(0.5 * float(torch.trace(inner @ inner)))
    ratios = float(torch.linalg.det(SIGMA)) / S2**2 + float(SIGMA.diagonal().sum()) / S2
    g, reps = torch.Generator().manual_seed(0), 4
    for m in (256, 2048):
        estimates = []
        for _ in range(reps):
            q_z, z = gaussian_batch(m, g)
            log_qz, log_marginals = aggregate_log_density(q_z, z, dataset_size=10**9, estimator=estimator)
            estimates.append(float((log_qz - log_marginals.sum(-1)).mean()))  # N = 10⁹: a population
        tolerance = 4 * sd / math.sqrt(reps * m) + ratios / (2 * (m - 1))
        error = sum(estimates) / reps - float(tc_true)
        assert abs(error) < tolerance, (m, error, tolerance)
    assert tolerance < 0.1 * float(tc_true)  # at m = 2048 the test can tell TC from 0 or from a shifted estimate


def test_mws_over_the_whole_dataset_is_the_exact_aggregate_posterior():
    """With the batch = all N examples, w_ij = 1/N: q̂ is the aggregate (1/N) Σ_n q(z|x_n) itself."""
    q_z, z = gaussian_batch(7, torch.Generator().manual_seed(1))
    log_qz, log_marginals = aggregate_log_density(q_z, z, dataset_size=7, estimator="mws")
    loc, scale = q_z.base_dist.loc, q_z.base_dist.scale
    for i in range(7):
        dims = [sum(math.exp(-0.5 * ((z[0, i, d] - loc[n, d]) / scale[n, d]) ** 2) / (scale[n, d] * math.sqrt(2 * math.pi))
                    for n in range(7)) / 7 for d in range(2)]
        joint = sum(math.exp(float(q_z.log_prob(z[0, i])[n])) for n in range(7)) / 7
        assert math.isclose(float(log_qz[0, i]), math.log(joint), rel_tol=1e-12)
        for d in range(2):
            assert math.isclose(float(log_marginals[0, i, d]), math.log(dims[d]), rel_tol=1e-12)


def test_mss_weights_are_unbiased_for_the_aggregate_posterior():
    """Chen et al. 2018, App. C.2: for the example at any row i, over every way of filling the batch's
    other B − 1 places by draws without replacement from the other N − 1 examples, the mean of
    Σ_j w_ij q(z|x_j) is (1/N) Σ_n q(z|x_n), whatever the values q(z|x_n)."""
    n, b = 6, 4
    values = torch.tensor([3.0, 0.5, 1.25, 7.0, 0.1, 2.0], dtype=D)  # q(z|x_n) at one z, n = 0 … 5
    w = log_importance_weights(b, n, "mss", dtype=D).exp()
    assert torch.allclose(w.sum(-1), torch.ones(b, dtype=D), rtol=0, atol=1e-15)
    others = list(itertools.permutations(range(1, n), b - 1))
    for i in range(b):
        batches = [[*rest[:i], 0, *rest[i:]] for rest in others]  # example 0 at place i
        mean = sum(float(w[i] @ values[batch]) for batch in batches) / len(batches)
        assert math.isclose(mean, float(values.mean()), rel_tol=1e-13), i


# ---- the decomposition, DIP, capacity --------------------------------------------------------------
def small_vae(**settings):
    torch.manual_seed(0)
    return VAE(data_dim=6, latent_dim=3, hidden=(5,), activation="tanh", **settings).double()


X = torch.bernoulli(torch.full((8, 6), 0.4, dtype=D), generator=torch.Generator().manual_seed(2))


def test_decomposition_sums_to_the_kl():
    """MI + TC + dimension-wise KL telescope to log Q(z|x) − log p(z): on the same draws exactly the
    Monte Carlo KL term of the ELBO, and in expectation the closed form (4 standard errors over draws)."""
    vae = small_vae()
    q_z, p_z = vae.posterior(X), vae.prior()
    for estimator in ("mws", "mss"):
        z = draw(q_z, 3)
        d = kl_decomposition(q_z, p_z, z, dataset_size=50, estimator=estimator)
        total = (d.mutual_information + d.total_correlation + d.dimension_kl).mean(0)
        torch.testing.assert_close(total, elbo(vae, X, q_z=q_z, kl="mc", z=z).kl, rtol=1e-12, atol=1e-12)
    draws = kl_decomposition(q_z, p_z, draw(q_z, 4000), dataset_size=50, estimator="mss")
    total = draws.mutual_information + draws.total_correlation + draws.dimension_kl  # [S, B]
    closed = elbo(vae, X, q_z=q_z).kl
    assert ((total.mean(0) - closed).abs() < 4 * total.std(0) / math.sqrt(4000)).all()


MU = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 1.0]], dtype=D)
SCALE = torch.tensor([[1.0, 1.0], [0.5, 1.0], [1.0, 2.0]], dtype=D)


def test_dip_penalties_by_hand():
    """μ has mean (1, 1); centred rows (0, −1), (−1, 1), (1, 0): Cov[μ] = [[2, −1], [−1, 2]]/3, so
    Σ_{i≠j} C_ij² = 2/9 and Σ_i (C_ii − 1)² = 2/9. E[Σ(x)] = diag(0.75, 2): for II the diagonal is
    (17/12, 8/3), Σ (C_ii − 1)² = (5/12)² + (5/3)² = 425/144; a full-covariance Q adds its mean Σ."""
    q_z = diagonal_normal(MU, SCALE)
    for kind, want in (("i", (2 / 9, 2 / 9)), ("ii", (2 / 9, 425 / 144))):
        off, diag = dip_penalties(q_z, kind)
        assert math.isclose(float(off), want[0], rel_tol=1e-14) and math.isclose(float(diag), want[1], rel_tol=1e-14)
    cov = torch.tensor([[[1.0, 0.5], [0.5, 1.0]], [[0.25, 0.0], [0.0, 1.0]], [[1.0, -0.2], [-0.2, 4.0]]], dtype=D)
    off, diag = dip_penalties(MultivariateNormal(MU, covariance_matrix=cov), "ii")  # E[Σ] off-diagonal 0.1
    assert math.isclose(float(off), 2 * (-1 / 3 + 0.1) ** 2, rel_tol=1e-14)
    assert math.isclose(float(diag), 425 / 144, rel_tol=1e-14)


def test_capacity_target_rises_linearly_and_clamps():
    assert capacity_target(1.5, 25.0, 6.0) == 6.25 and capacity_target(9.0, 25.0, 6.0) == 25.0
    assert capacity_target(0.0, 25.0, 0.0) == 25.0  # no ramp: C_max from the start
    assert float(capacity_target(torch.tensor(3.0), 25.0, 6.0)) == 12.5  # a CUDA-graphed step's progress


def seeded(seed=5):
    """A `sample` callable whose draws repeat: the same ξ every call."""
    def sample(q_z, num_samples, estimator):
        torch.manual_seed(seed)
        return draw(q_z, num_samples, estimator)
    return sample


SETTINGS = {"beta-tcvae": {"beta": 4.0, "tc_estimator": "mss", "num_samples": 2},
            "dip-vae-1": {}, "dip-vae-2": {"lambda_d": 3.0},
            "capacity": {"gamma": 50.0, "capacity_max": 6.0, "capacity_epochs": 15.0}}


def objective_of(name, vae, **settings):
    """The registered objective `name` with `settings`, set up for `vae` on a training split of 50."""
    objective = OBJECTIVES.build({"name": name, **settings})
    objective.setup(vae, 50)
    return objective


def call(objective, vae, settings=None, progress=1.0):
    return objective_of(objective, vae, **(settings or {})).loss(vae, X, seeded(), progress)


def by_hand(objective, vae, r, q_z, z):
    """The loss each objective should minimize, from the same draws' ELBO terms: its paper's formula."""
    if objective == "beta-tcvae":
        tc_term = kl_decomposition(q_z, vae.prior(), z, 50, "mss").total_correlation.mean(0)
        return -(r.elbo - 3.0 * tc_term).mean()  # closed-form KL: the surrogate is the ELBO itself
    if objective.startswith("dip"):
        off, diag = dip_penalties(q_z, "i" if objective == "dip-vae-1" else "ii")
        weights = (10.0, 100.0) if objective == "dip-vae-1" else (10.0, 3.0)  # λ_d defaults to 10·λ_od for I
        return -r.elbo.mean() + weights[0] * off + weights[1] * diag
    # C(1 epoch) = 6 · 1/15 = 0.4 nats, amid these examples' KLs (0.16 … 0.68): the batch mean's |KL − C|
    # is not the mean of each example's
    return -(r.reconstruction.mean() - 50.0 * (r.kl.mean() - 0.4).abs())


@pytest.mark.parametrize("objective", list(SETTINGS))
def test_reported_elbo_is_that_of_the_same_draws_and_the_gradient_matches_finite_differences(objective):
    vae, settings = small_vae(), SETTINGS[objective]
    loss, metrics = call(objective, vae, settings)
    q_z = vae.posterior(X)
    z = seeded()(q_z, settings.get("num_samples", 1), "reparameterization")
    r = elbo(vae, X, q_z=q_z, z=z)
    for name in ("elbo", "reconstruction", "kl"):
        torch.testing.assert_close(metrics[name], getattr(r, name).mean(), rtol=1e-13, atol=0)
    torch.testing.assert_close(loss, by_hand(objective, vae, r, q_z, z), rtol=1e-12, atol=1e-12)
    params = {"encoder": vae.encoder.net[0].weight, "decoder": vae.decoder.net[0].weight}
    grads = torch.autograd.grad(loss, list(params.values()))
    for (name, p), g in zip(params.items(), grads):  # central differences: the draws are the same each call
        for idx in [(0, 0), (1, 2), (2, 1)]:
            with torch.no_grad():
                p[idx] += 1e-6
                up = call(objective, vae, settings)[0]
                p[idx] -= 2e-6
                down = call(objective, vae, settings)[0]
                p[idx] += 1e-6
            fd = float(up - down) / 2e-6
            assert abs(fd - float(g[idx])) < 1e-5 * max(1.0, abs(fd)) and g.abs().sum() > 0, (name, idx, fd, float(g[idx]))


def test_the_trained_loss_passes_progress_and_the_training_set_size():
    """VAEObjective gives `capacity` the epochs done and `beta-tcvae` N = the training split's size."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    vae = VAE(64, latent_dim=3, hidden=(16,))
    batch = data.split("train")[:32]
    for progress in (0.5, torch.tensor(7.0)):
        tc = TrainConfig(objective=OBJECTIVES.choose({"name": "capacity", "capacity_max": 4.0, "capacity_epochs": 2.0}))
        assert float(VAEObjective(vae, tc, data)(batch, progress)[1]["capacity"]) == (1.0 if progress == 0.5 else 4.0)
    tc = TrainConfig(objective=OBJECTIVES.choose({"name": "beta-tcvae", "beta": 3.0, "tc_estimator": "mss"}))
    with torch.no_grad():  # spread Q's means apart: the estimate then depends on N well above float32 rounding
        vae.encoder.net[-1].weight.mul_(8.0)
    n = data.split("train").shape[0]
    for dataset_size, same in ((n, True), (batch.shape[0], False)):
        torch.manual_seed(1)
        loss, metrics = VAEObjective(vae, tc, data)(batch, 0.0)
        torch.manual_seed(1)
        objective = OBJECTIVES.build(tc.objective)
        objective.setup(vae, dataset_size)
        want, direct = objective.loss(vae, data.prepare(batch, u=torch.rand(batch.shape)), draw, 0.0)
        assert (torch.equal(loss, want) and torch.equal(metrics["tc"], direct["tc"])) == same, (metrics, direct)


@pytest.mark.parametrize("objective, settings, message", [
    ("beta-tcvae", {"posterior": "full"}, "needs a diagonal Gaussian Q(z|x) and a factorized"),
    ("beta-tcvae", {"prior": "mog"}, "p(z) = MixtureSameFamily"),
    ("dip-vae-2", {"posterior": "iaf"}, "needs a Gaussian Q(z|x) (diagonal or full covariance)"),
])
def test_refuses_a_family_it_cannot_estimate_in_one_line(objective, settings, message):
    vae = small_vae(**settings)
    with pytest.raises(VaekitError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        call(objective, vae)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("objective, message", [
    ({"name": "elbo", "tc_estimator": "mss"}, "objective 'elbo' has no setting 'tc_estimator'; did you mean 'estimator'?"),
    ({"name": "beta-tcvae", "gamma": 10}, "objective 'beta-tcvae' has no setting 'gamma'"),
    ({"name": "capacity", "beta": 4}, "objective 'capacity' has no setting 'beta'"),
    ({"name": "capacity", "estimator": "score-function"}, "objective 'capacity' has no setting 'estimator'"),
    ({"name": "iwae", "lambda_od": 1}, "objective 'iwae' has no setting 'lambda_od'"),
    ({"name": "dip-vae-1", "lambda_d": -1}, "lambda_d must be >= 0, got -1"),
])
def test_config_refuses_settings_of_other_objectives(objective, message):
    with pytest.raises(VaekitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config.from_dict({"train": {"objective": objective}})
    own = Config.from_dict({"train": {"objective": {"name": "dip-vae-2", "lambda_d": 3, "lambda_od": 1}}})  # its own: fine
    assert OBJECTIVES.build(own.train.objective).lambda_d == 3.0


# ---- from the command line --------------------------------------------------------------------------
FLAGS = {"beta-tcvae": ["--beta", "4", "--tc-estimator", "mss"], "dip-vae-1": [], "dip-vae-2": [],
         "capacity": ["--gamma", "100", "--capacity-max", "5", "--capacity-epochs", "3"]}
COMMON = ["--dataset", "digits", "--latent-dim", "4", "--hidden", "32"]


def cli_flags(objective):
    return [*COMMON, "--objective", objective, *FLAGS[objective]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("disentangling")
    for objective in FLAGS:
        vaekit_cli("--quiet", "train", *cli_flags(objective), "--epochs", "2", "--out", root / objective)
    return root


@pytest.mark.parametrize("objective", list(FLAGS))
def test_a_short_run_reports_the_true_validation_elbo(runs, objective):
    lines = [json.loads(line) for line in (runs / objective / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    cfg, model = load_run(runs / objective)
    val = evaluate_elbo(model, load_data(cfg).eval_split("val"), seed=cfg.train.seed)  # the trained model's ELBO
    assert math.isclose(lines[-1]["val/elbo"], val["elbo"], rel_tol=1e-6), (lines[-1]["val/elbo"], val["elbo"])
    assert math.isclose(lines[-1]["val/elbo"], lines[-1]["val/reconstruction"] - lines[-1]["val/kl"], rel_tol=1e-6)
    if objective == "capacity":  # C(t) = 5·min(1, t/3) at t = epoch + i/steps, averaged over epoch 2's examples
        n, b = load_data(cfg).split("train").shape[0], cfg.train.batch_size
        steps = -(-n // b)
        sizes = [min(b, n - i * b) for i in range(steps)]
        want = sum(5 * min(1.0, (1 + i / steps) / 3) * s for i, s in enumerate(sizes)) / n
        assert math.isclose(lines[-1]["train/capacity"], want, rel_tol=1e-6)
