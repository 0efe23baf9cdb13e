"""The argument parser: one subparser per command, the train flags made from the config."""

from __future__ import annotations

import argparse

from ..evaluate import ELBO_SAMPLES
from ..plugins import load_plugin
from .commands import cmd_evaluate, cmd_explain, cmd_plot, cmd_reconstruct, cmd_report, cmd_sample, cmd_train
from .flags import add_setting_flags

PLUGIN_HELP = "the plugin (file or module) the run's parts come from, as given to train; repeat for more"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaekit", description="Variational auto-encoders on PyTorch.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="only warnings and results")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE and write a run directory")
    t.add_argument("--out", required=True, help="run directory to write")
    t.add_argument("--config", help="TOML or JSON file with [model], [data], [train] tables")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    t.add_argument("--plugin", action="append", help="a .py file or an importable module that registers parts "
                   "(priors, posteriors, likelihoods, …); repeat for more. The run records it")
    add_setting_flags(t)
    t.add_argument("--separate-encoder", dest="shared_encoder", action="store_const", const=False, default=None,
                   help="= --no-shared-encoder: separate networks q(x; φ) and v(x; ψ) for Q's parameters")
    t.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto")
    t.add_argument("--tensorboard", action="store_true", help="log scalars and sample grids to RUN/tensorboard")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="ELBO and importance-sampled log-likelihood of a run, with their errors")
    e.add_argument("run")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--k", type=int, help="importance samples (default: the run's eval_k)")
    e.add_argument("--elbo-samples", type=int, default=ELBO_SAMPLES, metavar="S",
                   help=f"draws of z per example for the ELBO (default {ELBO_SAMPLES}: Monte Carlo error < 0.01 nats "
                   "on digits; it is reported)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true")
    e.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto")
    e.add_argument("--amortization-gap", action="store_true",
                   help="also fit a diagonal Q per example and report ELBO(Q*) − ELBO(encoder) (Cremer et al. 2018)")
    e.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="a PNG grid and .npy of samples from the model")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--draw", action="store_true", help="draw x ~ p(x|z) instead of showing E[x|z]")
    s.add_argument("--output", help="PNG path (default RUN/samples.png)")
    s.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    s.set_defaults(func=cmd_sample)

    r = sub.add_parser("reconstruct", help="inputs beside their reconstructions as a PNG")
    r.add_argument("run")
    r.add_argument("--n", type=int, default=32)
    r.add_argument("--split", default="test", choices=["train", "val", "test"])
    r.add_argument("--output", help="PNG path (default RUN/reconstructions.png)")
    r.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    r.set_defaults(func=cmd_reconstruct)

    pl = sub.add_parser("plot", help="every picture of a run: samples, latent map, traversals, curves, …")
    pl.add_argument("run")
    pl.add_argument("--out", help="folder for the PNGs (default: the run directory)")
    pl.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    pl.set_defaults(func=cmd_plot)

    rp = sub.add_parser("report", help="one self-contained HTML page: config, metrics, every picture")
    rp.add_argument("run")
    rp.add_argument("--k", type=int, default=100, help="importance samples for the log-likelihood")
    rp.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    rp.set_defaults(func=cmd_report)

    topics = ("posterior", "elbo", "mean-field", "reparameterization", "beta")  # = explain.TOPICS, kept import-free
    ex = sub.add_parser("explain", help="a worked example with numbers and a figure: " + ", ".join(topics))
    ex.add_argument("topic", choices=topics)
    ex.add_argument("--out", default=".", help="folder for the figure (default: the current folder)")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_explain)
    return p


def load_plugins_first(argv: list[str] | None) -> None:
    """Import every --plugin before the parser is built, so the names it registers are valid choices."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    for spec in pre.parse_known_args(argv)[0].plugin:
        load_plugin(spec)
