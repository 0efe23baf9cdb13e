"""A user's own prior and likelihood, registered from a plugin file, through the command line end to end
(train, evaluate, sample, resume) and from Python; the CLI's choices and the config's checks read the
registries."""

import argparse
import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch
from pngread import read_png
from run_cli import vaekit_cli
from safetensors.torch import load_file
from torch.distributions import Bernoulli

import vaekit
from vaekit import Config, VaekitError
from vaekit.cli import build_config, main, parser
from vaekit.objectives.estimators import analytic_kl
from vaekit.parts.likelihoods import LIKELIHOODS
from vaekit.parts.posteriors import POSTERIORS
from vaekit.parts.priors import PRIORS
from vaekit.runs import plugins
from vaekit.runs.config import plugins_needed

PLUGIN = '''"""A user's parts: a Laplace prior and a Bernoulli likelihood with a learned temperature."""
from typing import Annotated

import torch
from torch import nn
from torch.distributions import Independent, Laplace

import vaekit
from vaekit.parts.likelihoods import BernoulliLogits, Likelihood


class LaplacePrior(nn.Module):
    def __init__(self, latent_dim, scale):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.full((latent_dim,), scale))

    def forward(self):
        return Independent(Laplace(self.loc, self.scale), 1)


class TemperedBernoulli(Likelihood):
    support = "binary"

    def __init__(self):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, h):
        return BernoulliLogits(h / self.log_temperature.exp(), validate_args=self.validate_args)


@vaekit.register_prior("laplace")
def laplace(latent_dim, scale: Annotated[float, vaekit.Setting("b, each density's scale", above=0,
                                                               flag="--laplace-scale")] = 1.0):
    """a product of Laplace densities"""
    return LaplacePrior(latent_dim, scale)


@vaekit.register_likelihood("bernoulli-tempered")
def tempered():
    """Bernoulli(logits / T) with a learned temperature T"""
    return TemperedBernoulli()
'''

FLAGS = ["--prior", "laplace", "--laplace-scale", "0.5", "--likelihood", "bernoulli-tempered", "--dataset", "digits",
         "--latent-dim", "2", "--hidden", "16"]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "my_parts.py"
    path.write_text(PLUGIN)
    return path


@pytest.fixture(scope="module")
def run(plugin):
    out = plugin.parent / "run"
    vaekit_cli("--quiet", "train", "--plugin", plugin, *FLAGS, "--epochs", "1", "--out", out)
    return out


@pytest.fixture
def registries(monkeypatch):
    """What a test registers or loads in this process is forgotten afterwards (other tests read the registries)."""
    for registry in (PRIORS, POSTERIORS, LIKELIHOODS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(plugins, "_LOADED", dict(plugins._LOADED))
    yield
    sys.modules.pop("vaekit_plugin_my_parts", None)


def test_train_records_the_plugin_and_learns_its_parameter(run):
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["plugins"] == ["my_parts.py"]
    assert saved["model"]["prior"] == {"name": "laplace", "scale": 0.5}
    assert saved["model"]["likelihood"] == {"name": "bernoulli-tempered"}
    weights = load_file(run / "model.safetensors")
    assert torch.equal(weights["prior.loc"], torch.zeros(2)) and torch.equal(weights["prior.scale"], torch.full((2,), 0.5))  # --laplace-scale
    assert weights["decoder.head.log_temperature"].shape == () and weights["decoder.head.log_temperature"] != 0


def test_evaluate_refuses_without_the_plugin_in_one_line(run):
    proc = vaekit_cli("evaluate", run, "--json", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "my_parts.py" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_evaluate_with_the_plugin(run, plugin):
    m = json.loads(vaekit_cli("evaluate", run, "--json", "--k", "50", "--plugin", plugin).stdout)
    assert m["n"] == 297 and math.isfinite(m["elbo"])
    assert abs(m["elbo"] - (m["reconstruction"] - m["kl"])) < 1e-6  # float32 terms, means in float64
    assert m["log_likelihood"] >= m["elbo"] - 3 * m["log_likelihood_stderr"]
    assert m["kl_per_dim"] is None  # a Laplace prior: no Gaussian marginals to split the KL by


def test_sample_with_the_plugin(run, plugin, tmp_path):
    vaekit_cli("sample", run, "--n", "16", "--plugin", plugin, "--output", tmp_path / "s.png")
    grid = read_png(tmp_path / "s.png")
    assert min(grid.shape[:2]) >= 4 * 48  # a titled 4×4 grid of 8×8 digits, each ≥ 48 px a side
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (16, 1, 8, 8) and 0 <= arr.min() and arr.max() <= 1 and arr.std() > 0


def test_resume_with_the_plugin_equals_a_fresh_run(run, plugin, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(run, part)
    vaekit_cli("--quiet", "train", "--resume", "--epochs", "2", "--plugin", plugin, *FLAGS, "--out", part)
    vaekit_cli("--quiet", "train", "--plugin", plugin, *FLAGS, "--epochs", "2", "--out", tmp_path / "fresh")
    resumed, fresh = load_file(part / "model.safetensors"), load_file(tmp_path / "fresh" / "model.safetensors")
    assert resumed.keys() == fresh.keys() and "decoder.head.log_temperature" in fresh
    for key in fresh:
        assert torch.equal(resumed[key], fresh[key]), key


def test_cli_loads_the_plugin_before_it_reads_part_names(registries, plugin, tmp_path):
    assert "laplace" not in PRIORS  # registered only by the plugin the command line names
    assert main(["--quiet", "train", "--plugin", str(plugin), *FLAGS, "--epochs", "1", "--batch-size", "512",
                 "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["model"]["prior"] == {"name": "laplace", "scale": 0.5}


def test_the_recorded_plugin_is_recognised_when_given_again(registries, plugin):
    vaekit.load_plugin(str(plugin))  # as `--plugin PATH` does, before the config is built
    cfg = build_config(parser().parse_args(["train", "--out", "x", "--plugin", str(plugin), *FLAGS]))
    # what config.json will record must be what `evaluate --plugin PATH` recognises as loaded
    assert all(plugins.is_loaded(p) for p in cfg.model.plugins), cfg.model.plugins
    assert set(cfg.model.plugins) <= {"my_parts.py"}


def test_build_model_from_python_with_the_plugins_parts(registries, plugin):
    name = vaekit.load_plugin(str(plugin))
    module = sys.modules[name]
    assert vaekit.load_plugin(str(plugin)) == name and sys.modules[name] is module  # imported once
    cfg = Config().replace(model={"prior": "laplace", "likelihood": "bernoulli-tempered", "latent_dim": 2,
                                  "hidden": [16], "data_shape": [6]})
    assert plugins_needed(cfg) == ("my_parts.py",)
    model = vaekit.build_model(cfg.model).double()
    assert isinstance(model.prior, module.LaplacePrior) and isinstance(model.decoder.head, module.TemperedBernoulli)
    z = 2 * torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(model.prior().log_prob(z), (-z.abs() - math.log(2)).sum(-1), atol=1e-12, rtol=0)
    with torch.no_grad():
        model.decoder.head.log_temperature.fill_(math.log(2.0))
    x = torch.bernoulli(torch.full((5, 6), 0.3, dtype=torch.float64))
    logits = model.decoder.net(z)
    torch.testing.assert_close(model.p_x_given_z(z).log_prob(x), Bernoulli(logits=logits / 2).log_prob(x).sum(-1),
                               atol=1e-12, rtol=0)
    # kl="auto" finds torch's closed form KL(N(μ, σ²) ‖ Laplace(0, 1)) = log 2 + E|z| − ½ log(2πeσ²) per dimension,
    # E|z| = σ√(2/π) exp(−μ²/2σ²) + μ erf(μ/σ√2), through Independent on both sides
    q = model.posterior(x)
    mu, sigma = q.base_dist.loc, q.base_dist.scale
    abs_mean = sigma * math.sqrt(2 / math.pi) * torch.exp(-0.5 * (mu / sigma) ** 2) + mu * torch.erf(mu / (sigma * math.sqrt(2)))
    kl = (math.log(2) + abs_mean - 0.5 * torch.log(2 * math.pi * math.e * sigma**2)).sum(-1)
    torch.testing.assert_close(analytic_kl(q, model.prior()), kl, atol=1e-12, rtol=0)
    torch.testing.assert_close(vaekit.elbo(model, x, q_z=q).kl, kl, atol=1e-12, rtol=0)


def test_a_factory_asking_for_an_unknown_keyword_is_named(registries):
    @vaekit.register_prior("needs-widget")
    def needs_widget(latent_dim, widget):
        """a prior whose factory wants something no builder offers"""
        raise AssertionError("never called")

    cfg = Config().replace(model={"prior": "needs-widget", "latent_dim": 2, "hidden": [4], "data_shape": [6]})
    with pytest.raises(VaekitError, match="prior 'needs-widget': its factory asks for widget"):
        vaekit.build_model(cfg.model)


def train_subparser(p):
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_cli_prior_choices_and_config_checks_read_the_registry(registries):
    vaekit.register_prior("test-cauchy", lambda latent_dim: None, help="a heavy-tailed test prior")
    train = train_subparser(parser())
    prior = next(a for a in train._actions if a.dest == "model.prior")
    assert set(prior.choices) == set(PRIORS.names()) and "test-cauchy" in prior.choices
    assert "test-cauchy: a heavy-tailed test prior" in prior.help
    assert getattr(train.parse_args(["--out", "x", "--prior", "test-cauchy"]), "model.prior") == "test-cauchy"
    assert Config().replace(model={"prior": "test-cauchy"}).model.prior.name == "test-cauchy"
    with pytest.raises(VaekitError) as e:
        Config().replace(model={"prior": "no-such-prior"})
    message = str(e.value)
    assert "[model.prior] name = 'no-such-prior' is not one of" in message
    assert all(name in message for name in ("standard", "mog", "test-cauchy"))


@pytest.mark.parametrize("body, message", [
    ("raise RuntimeError('my bug')", "prior 'broken' (plugin test_plugins): its factory raised RuntimeError: my bug"),
    ("return None", "prior 'broken' (plugin test_plugins): its factory returned NoneType, not a torch module"),
    ("return 3", "its factory returned int, not a torch module"),
])
def test_a_plugin_factory_that_fails_is_named_in_one_line(registries, body, message):
    namespace = {}
    exec(f"def broken(latent_dim):\n    {body}\n", namespace)  # noqa: S102 - the test's own code
    namespace["broken"].__module__ = "test_plugins"
    vaekit.register_prior("broken")(namespace["broken"])
    cfg = Config().replace(model={"prior": "broken", "latent_dim": 2, "hidden": [4], "data_shape": [6]})
    with pytest.raises(VaekitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        vaekit.build_model(cfg.model)


def test_a_plugin_a_config_lists_but_no_part_uses_is_not_recorded(tmp_path, capsys):
    import json

    from vaekit.cli import main

    unused = tmp_path / "unused_plugin.py"
    unused.write_text("X = 1\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nplugins = ["{unused}"]\nlatent_dim = [2]\n')
    assert main(["--quiet", "train", "--config", str(config), "--epochs", "1", "--hidden", "8",
                 "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["plugins"] == []
    unused.unlink()  # gone: a command on the run must not ask for it
    assert main(["--quiet", "evaluate", str(tmp_path / "run"), "--k", "2", "--elbo-samples", "2"]) == 0
