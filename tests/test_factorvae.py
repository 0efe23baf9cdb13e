"""FactorVAE (`vaekit.objectives.factorvae`): the density-ratio trick against a Gaussian's closed-form total
correlation, one training step against the paper's two optimizers stepped by hand, the discriminator
kept out of the model and in the trainer state, resume bit for bit, and 1 vs 2 processes."""

import copy
import math

import pytest
import torch
from run_cli import assert_resumed_equals_straight, straight_and_resumed, vaekit_cli
from safetensors.torch import load_file

from vaekit import VAE, Config
from vaekit.objectives.estimators import draw, elbo
from vaekit.objectives.factorvae import Discriminator, FactorVAE, discriminator_loss, permute_dims
from vaekit.runs.config import DataConfig, TrainConfig
from vaekit.runs.experiment import build_trainer, load_data
from vaekit.training.loop import OK, train_step


def test_permute_dims_permutes_each_column_on_its_own():
    torch.manual_seed(0)
    n = 4000
    z = torch.randn(n, 1) + 0.1 * torch.randn(n, 3)  # three columns, correlation 0.99
    p = permute_dims(z)
    assert torch.equal(p.sort(0).values, z.sort(0).values)  # each column keeps its values
    corr = torch.corrcoef(p.T)
    off = corr - torch.diag(corr.diagonal())
    assert float(off.abs().max()) < 4 / math.sqrt(n)  # independent permutations: no correlation left
    assert torch.equal(permute_dims(z.unsqueeze(0))[0].sort(0).values, z.sort(0).values)  # [S, B, k] too


@pytest.mark.parametrize("rho", [0.8, 0.0])
def test_the_discriminator_logit_learns_the_log_density_ratio_of_a_gaussian(rho):
    """For z ~ N(0, [[1, ρ], [ρ, 1]]) the optimal logit is log q(z) − log q(z₁)q(z₂) = −½ log(1 − ρ²) −
    ½ zᵀ(Σ⁻¹ − I)z, whose mean is the TC, −½ log(1 − ρ²) (0.511 nats at ρ = 0.8). The estimate's Monte Carlo
    error is 0.002 (200,000 draws); the rest is the network's finite training (measured 0.005): 0.03."""
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, rho], [rho, 1.0]])
    chol = torch.linalg.cholesky(cov)
    critic = Discriminator(2, (64, 64))
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3, betas=FactorVAE.adam["betas"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 3000)
    for _ in range(3000):
        z = torch.randn(1024, 2) @ chol.T
        loss = discriminator_loss(critic, z, permute_dims(z))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        z = torch.randn(200_000, 2) @ chol.T
        logit = critic(z)
        ratio = -0.5 * math.log(1 - rho**2) - 0.5 * ((z @ torch.linalg.inv(cov)) * z).sum(1) + 0.5 * (z**2).sum(1)
    assert abs(float(logit.mean()) + 0.5 * math.log(1 - rho**2)) < 0.03
    bulk = z.norm(dim=1) < 2  # where the data are: pointwise, the logit is the log ratio
    assert float((logit - ratio)[bulk].abs().mean()) < 0.05


def trainer(gamma=7.0):
    cfg = Config(data=DataConfig(dataset="digits"),
                 train=TrainConfig(objective={"name": "factorvae", "gamma": gamma, "discriminator_hidden": (16, 16)}, lr=1e-2))
    torch.manual_seed(1)
    dataset = load_data(cfg)
    model = VAE(data_dim=64, latent_dim=3, hidden=(32,))
    objective, optimizer, _ = build_trainer(model, cfg.train, dataset)
    return model, objective, optimizer, dataset, cfg.train


def test_one_step_is_the_papers_two_optimizers_stepping_their_own_losses():
    """Kim & Mnih step the VAE on −ELBO + γ·E logit D(z) and D on its cross-entropy, each with its own
    Adam. Our one backward and one Adam with two groups: the same gradients (checked before the update)
    and the same weights after it, with D's own β₁, β₂ = 0.5, 0.9; the model's group never holds D."""
    model, objective, optimizer, dataset, tc = trainer()
    critic = objective.objective.discriminator
    ref_model, ref_critic = copy.deepcopy(model), copy.deepcopy(critic)
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in model.parameters()]
    assert [id(p) for p in optimizer.param_groups[1]["params"]] == [id(p) for p in critic.parameters()]
    assert optimizer.param_groups[1]["betas"] == (0.5, 0.9) and optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    assert set(model.state_dict()) == set(VAE(data_dim=64, latent_dim=3, hidden=(32,)).state_dict())  # D is not the model's
    raw = dataset.split("train")[:32]
    vae_adam = torch.optim.Adam(ref_model.parameters(), lr=tc.lr)
    critic_adam = torch.optim.Adam(ref_critic.parameters(), lr=tc.lr, betas=(0.5, 0.9))
    for step in range(3):  # Adam's first step is sign-like; later ones weigh the gradients' size
        torch.manual_seed(10 + step)
        verdict, metrics = train_step(objective, optimizer, objective, raw, 0.0)
        assert int(verdict) == OK
        torch.manual_seed(10 + step)  # the same draws, in the objective's order: binarization, z, permutation
        x = dataset.prepare(raw, u=torch.rand(raw.shape))
        q_z = ref_model.posterior(x)
        z = draw(q_z, 1, "reparameterization")
        r = elbo(ref_model, x, q_z=q_z, z=z)
        vae_loss = -r.surrogate.mean() + 7.0 * ref_critic(z).mean()
        critic_loss = discriminator_loss(ref_critic, z.detach(), permute_dims(z.detach()))
        vae_grads = torch.autograd.grad(vae_loss, list(ref_model.parameters()))
        critic_grads = torch.autograd.grad(critic_loss, list(ref_critic.parameters()))
        for p, g in zip([*model.parameters(), *critic.parameters()], [*vae_grads, *critic_grads]):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(metrics["discriminator"], critic_loss.detach())
        torch.testing.assert_close(metrics["elbo"], r.elbo.mean().detach())
        for p, g in zip([*ref_model.parameters(), *ref_critic.parameters()], [*vae_grads, *critic_grads]):
            p.grad = g
        vae_adam.step()
        critic_adam.step()
        for mine, theirs in zip([*model.parameters(), *critic.parameters()], [*ref_model.parameters(), *ref_critic.parameters()]):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    moved = [not torch.equal(p, q) for p, q in zip(critic.parameters(), trainer()[1].objective.discriminator.parameters())]
    assert all(moved)  # every weight of the discriminator was trained


# ---- from the command line --------------------------------------------------------------------------
TRAIN = ["--quiet", "train", "--dataset", "digits", "--latent-dim", "4", "--hidden", "32", "--objective", "factorvae",
         "--discriminator-hidden", "32", "--discriminator-hidden", "32"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return straight_and_resumed(TRAIN, tmp_path_factory.mktemp("factorvae"))


def test_resume_is_bit_identical_with_both_groups(runs):
    weights = assert_resumed_equals_straight(runs)
    straight, resumed = (torch.load(runs / name / "train_state.pt", weights_only=True) for name in ("straight", "resumed"))
    assert weights.keys() == straight["model"].keys()  # model.safetensors: the VAE only, D in the trainer state
    assert straight["parts"].keys() == resumed["parts"].keys() and len(straight["parts"]) == 6
    assert all(torch.equal(straight["parts"][k], resumed["parts"][k]) for k in straight["parts"])
    assert [g["betas"] for g in straight["optimizer"]["param_groups"]] == [(0.9, 0.999), (0.5, 0.9)]


def test_a_trainer_state_without_the_discriminator_is_refused_in_one_line(runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs / "straight", run)
    state = torch.load(run / "train_state.pt", weights_only=True)
    state.pop("parts")
    torch.save(state, run / "train_state.pt")
    proc = vaekit_cli(*TRAIN, "--epochs", "3", "--batch-size", "64", "--resume", "--out", run, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("train_state.pt: parts is missing; the file is damaged or "
                                                         "belongs to another run; restore it, or delete it and "
                                                         "model.safetensors and pass --resume to start the run "
                                                         "again from step 0")
    assert load_file(run / "model.safetensors")  # nothing was lost
