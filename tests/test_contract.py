"""One contract for every registered part (Pyro's tests/distributions/conftest.py works the same way):
a table with a row per prior, posterior, likelihood, architecture and objective (and the families built
from them: stochastic layers, the ladder, the conditional VAE, and a plugin's part), and the shared
checks run over it. A new family is one row; a registered part without a row fails the first test.

The checks, for every row:
- its log-density against a float64 formula written here, where the row gives one (`REFERENCE`);
- the trained loss's gradient reaches every parameter, the objective's own included, finite and not 0;
- `vaekit.save` then `vaekit.load` give the same weights and the same log p(x, z);
- a run resumed after one epoch equals the run trained straight, bit for bit;
- `vaekit evaluate --json` prints what `evaluate_all` computes in Python on the loaded run;
and, for the rows marked `two`, one process and two gloo processes train the same weights.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from run_cli import assert_two_processes_match_one
from safetensors.torch import load_file
from test_likelihoods_real import counts_file, digits_8bit, log_prob64
from test_plugins import PLUGIN
from test_tables import mixed_reference

import vaekit
from vaekit.cli import main
from vaekit.evaluation.estimates import evaluate_all
from vaekit.objectives import OBJECTIVES
from vaekit.parts.likelihoods import LIKELIHOODS
from vaekit.parts.networks import ARCHITECTURES
from vaekit.parts.posteriors import POSTERIORS
from vaekit.parts.priors import PRIORS
from vaekit.runs import plugins
from vaekit.runs.checkpoint import load_run
from vaekit.runs.experiment import load_data
from vaekit.training.loss import VAEObjective

BASE = ["--latent-dim", "3", "--hidden", "32", "--lr", "3e-3", "--seed", "2"]
# lr 1e-3 for the heads with many outputs: a weight whose gradient is within rounding of 0 may take a step of
# either sign in two processes (measured: up to 1.4e-3 in the categorical head's 16,384 logit weights)
SLOW = ("--lr", "1e-3")


@dataclass(frozen=True)
class Row:
    kind: str  # the registry (or "family" for a composition, "plugin" for a user's part)
    name: str
    flags: tuple[str, ...] = ()  # beyond BASE
    data: str = "digits"  # digits, 8bit, counts or penguins
    two: bool = False  # also train in two processes
    atol: float = 1e-4  # for the two-process weights (see assert_two_processes_match_one)
    tol: float = 1e-10  # of the float64 log-density against its formula

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"


ROWS = [
    Row("prior", "standard"),
    Row("prior", "mog", ("--prior", "mog", "--prior-components", "4")),
    Row("prior", "vampprior", ("--prior", "vampprior", "--prior-components", "6"), two=True),
    Row("prior", "label", ("--condition", "label", "--prior", "label"), two=True),
    Row("posterior", "diagonal"),
    Row("posterior", "full", ("--posterior", "full", "--prior", "mog", "--prior-components", "3"), two=True),
    Row("posterior", "iaf", ("--posterior", "iaf", "--flow-steps", "2"), two=True),
    Row("likelihood", "bernoulli"),
    Row("likelihood", "gaussian", ("--likelihood", "gaussian", "--sigma", "0.5")),
    Row("likelihood", "gaussian-learned", ("--likelihood", "gaussian-learned", "--standardize")),
    Row("likelihood", "gaussian-learned-per-dim", ("--likelihood", "gaussian-learned-per-dim", "--standardize")),
    # log C(λ) by its Taylor series below |η| = 0.3 (cb_log_norm): within 1e-9 of the closed form per value
    Row("likelihood", "continuous-bernoulli", ("--likelihood", "continuous-bernoulli", *SLOW), two=True, atol=2e-3,
        tol=1e-7),
    Row("likelihood", "discretized-logistic", ("--likelihood", "discretized-logistic", *SLOW), "8bit", two=True, atol=2e-3),
    Row("likelihood", "categorical", ("--likelihood", "categorical", *SLOW), "8bit", two=True, atol=2e-3),
    Row("likelihood", "poisson", ("--likelihood", "poisson", *SLOW), "counts", two=True, atol=2e-3),
    Row("likelihood", "negative-binomial", ("--likelihood", "negative-binomial", *SLOW), "counts", two=True, atol=2e-3),
    Row("likelihood", "mixed", ("--likelihood", "mixed", *SLOW), "penguins", two=True, atol=2e-3),
    Row("architecture", "mlp"),
    Row("architecture", "conv", ("--arch", "conv")),
    Row("architecture", "gated", ("--arch", "gated", "--hidden", "16")),
    Row("objective", "elbo", ("--kl-warmup-epochs", "1.5", "--num-samples", "2")),
    Row("objective", "iwae", ("--objective", "iwae", "--train-k", "3", "--dreg")),
    # TC, the DIP covariance and D's permutation are statistics of the whole batch, gathered over the ranks
    Row("objective", "beta-tcvae", ("--objective", "beta-tcvae", "--beta", "3", "--tc-estimator", "mss"), two=True),
    Row("objective", "dip-vae-1", ("--objective", "dip-vae-1",)),
    Row("objective", "dip-vae-2", ("--objective", "dip-vae-2", "--dip-lambda-d", "3"), two=True),
    Row("objective", "capacity", ("--objective", "capacity", "--capacity-max", "5", "--capacity-epochs", "1")),
    Row("objective", "factorvae", ("--objective", "factorvae", "--discriminator-hidden", "16", "--discriminator-hidden",
                                   "16"), two=True),
    Row("family", "two layers", ("--latent-dim", "2", "--activation", "tanh"), two=True),
    Row("family", "ladder", ("--latent-dim", "2", "--inference", "ladder"), two=True),
    # the ladder as its authors' code trains it: Q's own top-down steps, batch normalization. Not `two`: a unit
    # that collapses has a near-constant input to its normalization, which divides rounding by √ε and Adam then
    # steps on it; tests/test_batchnorm.py holds the two processes' statistics and gradients to one's instead
    Row("family", "ladder-unshared", ("--latent-dim", "2", "--inference", "ladder-unshared", "--norm", "batch",
                                      "--activation", "leaky-relu")),
    # a VampPrior over the top group: Q(z_L|u_k) mixed at the pseudo-inputs
    Row("family", "top-down", ("--latent-dim", "2", "--latent-dim", "2", "--inference", "top-down", "--prior", "vampprior",
                               "--prior-components", "3"), two=True),
    # the trainer's guards and the per-group objective: an EMA saved and resumed, clipping, free bits, balancing,
    # spectral regularization (its vectors saved and resumed), AdamW's weight decay
    Row("family", "top-down guarded", ("--latent-dim", "2", "--latent-dim", "2", "--inference", "top-down", "--ema", "0.9",
                                       "--grad-clip", "5", "--grad-skip", "1e4", "--free-bits", "0.05", "--kl-balance",
                                       "--kl-warmup-epochs", "1", "--spectral-reg", "0.01",
                                       "--weight-decay", "0.01"), two=True),
    Row("family", "hvae", ("--latent-dim", "2", "--inference", "hvae", "--arch", "gated", "--prior", "vampprior",
                           "--prior-components", "4"), two=True),
    Row("plugin", "laplace", ("--prior", "laplace", "--laplace-scale", "0.5")),
]
REGISTRIES = {"prior": PRIORS, "posterior": POSTERIORS, "likelihood": LIKELIHOODS, "architecture": ARCHITECTURES,
              "objective": OBJECTIVES}


def test_every_registered_part_has_a_row():
    for kind, registry in REGISTRIES.items():
        builtin = {n for n in registry.names() if registry.entry(n).builtin}
        assert builtin == {r.name for r in ROWS if r.kind == kind}, kind


# ---- float64 references ------------------------------------------------------------------------------

def normal64(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def prior_reference(model, z, y):
    prior, name = model.prior, type(model.prior).__name__
    if name == "StandardNormal":
        return normal64(z, torch.zeros(()), torch.ones(()))
    if name == "MixtureOfGaussians":
        comps = normal64(z[:, None], prior.means, prior.log_scales.exp()) + torch.log_softmax(prior.logits, 0)
        return torch.logsumexp(comps, 1)
    if name == "VampPrior":  # (1/K) Σ_k Q(z|u_k), the encoder's diagonal Q written out from its outputs
        loc, log_var = model.encoder.net(prior.inputs()).chunk(2, -1)
        return torch.logsumexp(normal64(z[:, None], loc, (0.5 * log_var).exp()), 1) - math.log(len(loc))
    assert name == "LabelGaussian"
    return normal64(z, prior.means[y], prior.log_scales[y].exp())


def posterior_reference(model, x, z):
    h = model.encoder.net(x)
    k = z.shape[-1]
    loc, log_var = h[:, :k], h[:, k:2 * k]
    if h.shape[-1] == 2 * k:
        return normal64(z, loc, (0.5 * log_var).exp())
    head = model.encoder.head  # full: L = diag(σ)(I + g·B), Σ = LLᵀ, the Gaussian density from Σ itself
    unit = torch.eye(k, dtype=h.dtype).repeat(len(h), 1, 1)
    unit[:, head.rows, head.cols] = head.gate * h[:, 2 * k:]
    cov = (0.5 * log_var).exp()[:, :, None] * unit @ ((0.5 * log_var).exp()[:, :, None] * unit).transpose(1, 2)
    d = (z - loc)[:, :, None]
    return (-0.5 * (d.transpose(1, 2) @ torch.linalg.solve(cov, d))[:, 0, 0] - 0.5 * torch.logdet(cov)
            - 0.5 * k * math.log(2 * math.pi))


def likelihood_reference(model, name, z, x):
    h = model.decoder.net(z)
    if getattr(model.decoder.head, "data_scale", False):  # counts: the log-rate is g(z) + the learned offset
        h = h + model.decoder.head.offset
    if name == "bernoulli":
        return (x * h - torch.nn.functional.softplus(h)).sum(-1)
    if name.startswith("gaussian"):
        head = model.decoder.head
        sigma = torch.tensor(head.sigma, dtype=h.dtype) if name == "gaussian" else head.log_sigma.exp()
        return normal64(x, h, sigma.expand_as(h))
    if name == "mixed":  # a table's columns, each by scipy.stats
        return mixed_reference(model.decoder.head, h, x)
    if name == "negative-binomial":  # C(x + r − 1, x) (r/(r + μ))^r (μ/(r + μ))^x, a learned r per dimension
        r, mu = model.decoder.head.log_total_count.exp(), h.exp()
        return (torch.lgamma(x + r) - torch.lgamma(r) - torch.lgamma(x + 1) - r * torch.log1p(mu / r)
                - x * torch.log1p(r / mu)).sum(-1)
    return log_prob64(name, h, x).sum(-1)


REFERENCE = {"prior": prior_reference, "posterior": posterior_reference, "likelihood": likelihood_reference}


# ---- the rows' runs ------------------------------------------------------------------------------------

def dataset_flag(row, folder):
    if row.data == "8bit":
        return str(digits_8bit(folder / "d8.npy"))
    if row.data == "counts":
        return str(counts_file(folder / "c.npy"))
    if row.data == "penguins":
        pytest.importorskip("palmerpenguins")
        return "penguins"
    return "digits"


def cli(*args):
    assert main(["--quiet", *map(str, args)]) == 0


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The plugin file of tests/test_plugins.py, loaded in this process for this module only (the registries
    and the loaded plugins are restored afterwards: other tests read them)."""
    path = tmp_path_factory.mktemp("plugin") / "my_parts.py"
    path.write_text(PLUGIN)
    saved = {r: dict(r._entries) for r in REGISTRIES.values()}, dict(plugins._LOADED)
    vaekit.load_plugin(str(path))  # as --plugin does
    yield path
    for registry, entries in saved[0].items():
        registry._entries = entries
    plugins._LOADED.clear()
    plugins._LOADED.update(saved[1])
    sys.modules.pop("vaekit_plugin_my_parts", None)


def train_flags(row, folder, plugin_path):
    plugin = ["--plugin", str(plugin_path)] if row.kind == "plugin" else []
    return ["train", *plugin, "--dataset", dataset_flag(row, folder), *BASE, *row.flags]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, plugin):
    """Per row: 2 epochs straight, and 1 then --resume to 2, in this process (the CLI's own `main`)."""
    made = {}

    def get(row):
        if row.id not in made:
            folder = tmp_path_factory.mktemp(row.id.replace(":", "-").replace(" ", "-"))
            flags = train_flags(row, folder, plugin)
            for until, name, extra in ((2, "straight", ()), (1, "resumed", ()), (2, "resumed", ("--resume",))):
                cli(*flags, "--batch-size", "64", "--epochs", until, "--out", folder / name, *extra)
            made[row.id] = folder
        return made[row.id]

    return get


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_resume_is_bit_identical_and_the_cli_evaluates_as_python(row, runs, plugin, capsys):
    root = runs(row)
    straight, resumed = (load_file(root / name / "model.safetensors") for name in ("straight", "resumed"))
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    given = ["--plugin", str(plugin)] if row.kind == "plugin" else []
    capsys.readouterr()
    cli("evaluate", root / "straight", "--k", "8", "--elbo-samples", "4", "--json", *given)
    shown = json.loads(capsys.readouterr().out)
    cfg, model = load_run(root / "straight")
    data = load_data(cfg)
    y = data.labels_of("test") if cfg.model.conditional else None
    mine = evaluate_all(model, data.eval_split("test"), k=8, seed=0, elbo_samples=4, y=y)
    assert (shown["elbo"], shown["log_likelihood"], shown["kl"]) == (mine["elbo"], mine["log_likelihood"], mine["kl"])


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_loss_gradient_reaches_every_parameter_and_save_load_keep_the_model(row, runs, tmp_path):
    cfg, model = load_run(runs(row) / "straight")
    data = load_data(cfg)
    model.train()
    loss_fn = VAEObjective(model, cfg.train, data)
    batch = data.split("train")[:64]
    labels = data.labels_of("train")[:64] if cfg.model.conditional else None
    torch.manual_seed(0)
    loss, metrics = loss_fn((batch, labels) if labels is not None else batch, 1.0)
    assert torch.isfinite(loss) and all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())
    loss.backward()
    for name, p in [*model.named_parameters(), *loss_fn.objective.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    vaekit.save(model, tmp_path / "m")
    loaded = vaekit.load(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    x = data.eval_split("test")[:16]
    y = data.labels_of("test")[:16] if cfg.model.conditional else None
    model.eval()  # as loaded: batch normalization's running statistics, not the batch's
    z = model.given(y).encode(x)
    torch.testing.assert_close(loaded.given(y).log_joint(x, z), model.given(y).log_joint(x, z), rtol=0, atol=0)


# IAF's density is a change of variables: tests/test_iaf.py holds it to the autograd Jacobian's log-determinant.
@pytest.mark.parametrize("row", [r for r in ROWS if r.kind in REFERENCE and r.name != "iaf"], ids=lambda r: r.id)
def test_log_density_equals_its_float64_formula(row, runs):
    cfg, model = load_run(runs(row) / "straight")
    model = model.double()
    data = load_data(cfg)
    x = data.eval_split("test")[:12].double()
    y = data.labels_of("test")[:12] if cfg.model.conditional else None
    given = model.given(y)
    q_z = given.posterior(x)
    z = q_z.sample()
    with torch.no_grad():
        if row.kind == "prior":
            want, got = prior_reference(model, z, y), given.prior().log_prob(z)
        elif row.kind == "posterior":
            want, got = posterior_reference(model, x, z), q_z.log_prob(z)
        else:
            want, got = likelihood_reference(model, row.name, z, x), given.p_x_given_z(z).log_prob(x)
    torch.testing.assert_close(got, want, rtol=row.tol, atol=row.tol)
    assert np.ptp(got.numpy()) > 0  # the examples differ: a constant would not be a check


@pytest.mark.parametrize("row", [r for r in ROWS if r.two], ids=lambda r: r.id)
def test_two_processes_train_as_one(row, tmp_path, plugin):
    assert_two_processes_match_one(train_flags(row, tmp_path, plugin), tmp_path, atol=row.atol,
                                   val_rtol=5e-4 if row.atol > 1e-4 else 1e-5)
