"""The argument parser: one subparser per command, the train flags made from the config.

Conventions: `--out` names what a command writes (a run directory, a folder, a file), with
`--output` as its alias; `--debug` and `--quiet` go before or after the command; every flag says its
default; a bad argument is one line that points to the command's --help.
"""

from __future__ import annotations

import argparse
import difflib
import sys

from ..data import SPLITS
from ..disentanglement.scoring import METRICS
from ..errors import one_line
from ..evaluation.estimates import ELBO_SAMPLES
from ..explain import TOPICS
from ..runs.plugins import load_plugin
from ..runs.samplers import SAMPLERS
from .commands import cmd_disentanglement, cmd_evaluate, cmd_train
from .flags import add_setting_flags
from .outputs import cmd_decode, cmd_encode, cmd_explain, cmd_plot, cmd_reconstruct, cmd_report, cmd_sample
from .reproduce import add_reproduce_command
from .runs import add_data_arguments
from .samplers import add_sampler_command
from .tables import add_table_commands

PLUGIN_HELP = "the plugin (file or module) the run's parts come from, as given to train; repeat for more (default: none)"
DEVICE_HELP = "cpu, cuda, cuda:N, or auto (default: cpu)"


class Parser(argparse.ArgumentParser):
    """argparse, with an argument error as one line and a pointer to --help instead of the usage block, and
    no abbreviations (`--epoch 1` would be taken as `--epochs 1`: a typo must not train another run)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an argument no command takes is said by the command's parser (its --help has the
        flags), with the closest flag it does take."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = getattr(parsed, "command", None)
            subs = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
            sub = subs[0].choices.get(command, self) if subs and command else self
            flags = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
            near = difflib.get_close_matches(extra[0].split("=")[0], flags, n=1)
            sub.error(f"unrecognized arguments: {' '.join(extra)}" + (f" (did you mean {near[0]}?)" if near else ""))
        return parsed

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {one_line(message)}; see {self.prog} --help\n")
        sys.exit(2)


def add_common(p: argparse.ArgumentParser, top: bool = False) -> None:
    """--debug and --quiet, accepted before the command and after it (SUPPRESS: a subcommand's
    default never overwrites what was given before the command)."""
    default = False if top else argparse.SUPPRESS
    p.add_argument("--debug", action="store_true", default=default, help="show tracebacks (default: off)")
    p.add_argument("--quiet", action="store_true", default=default,
                   help="only warnings and results: no progress, no log lines (default: off)")
    p.add_argument("--threads", type=int, default=None if top else argparse.SUPPRESS, metavar="N",
                   help="CPU threads for torch (default: torch's choice, one per core); on a busy machine 1 can be "
                   "many times faster")


def add_run(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("run", help="a run directory written by vaekit train")
    p.add_argument("--plugin", action="append", help=PLUGIN_HELP)
    if data:
        add_data_arguments(p)
    add_common(p)


def add_out(p: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    p.add_argument("--out", "--output", dest="out", required=required, help=help)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="vaekit", description="Variational auto-encoders on PyTorch.")
    add_common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE and write a run directory")
    add_out(t, "run directory to write (required)", required=True)
    t.add_argument("--config", help="TOML or JSON file with [model], [data], [train] tables (default: none)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint, with "
                   "its saved config; epochs, lr and the checkpoint cadence may change (default: off)")
    t.add_argument("--plugin", action="append", help="a .py file or an importable module that registers parts "
                   "(priors, posteriors, likelihoods, …); repeat for more. The run records it (default: none)")
    add_setting_flags(t)
    t.add_argument("--separate-encoder", dest="model.shared_encoder", action="store_const", const=False, default=None,
                   help="= --no-shared-encoder: separate networks q(x; φ) and v(x; ψ) for Q's parameters")
    t.add_argument("--device", default="cpu", help=DEVICE_HELP)
    t.add_argument("--tensorboard", action="store_true", help="log scalars and sample grids to RUN/tensorboard "
                   "(default: off)")
    t.add_argument("--track", choices=("none", "mlflow", "wandb"), help="log the config, each epoch's metrics, "
                   "config.json and the pictures to MLflow or W&B (offline unless WANDB_MODE is set); RUN/tracking.json "
                   "keeps the tracked run for --resume and evaluate (default: the run's tracker on --resume, else none)")
    add_common(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="ELBO and importance-sampled log-likelihood of a run, with their errors")
    add_run(e)
    e.add_argument("--split", default="test", choices=SPLITS, help="which examples (default: test)")
    e.add_argument("--k", type=int, help="importance samples per example (default: the run's eval_k)")
    e.add_argument("--n", type=int, help="only the first N examples of the split, said in the output (default: all)")
    e.add_argument("--samples", type=int, metavar="N", help="also measure N samples' quality: Fréchet distance and "
                   "precision/recall against N test examples in a classifier's feature space (not Inception; default: "
                   "off)")
    e.add_argument("--sampler", choices=SAMPLERS, help="with --samples: z from this fitted sampler, not p(z) "
                   "(vaekit fit-sampler; default: p(z))")
    e.add_argument("--elbo-samples", type=int, default=ELBO_SAMPLES, metavar="S",
                   help=f"draws of z per example for the ELBO (default {ELBO_SAMPLES}: Monte Carlo error < 0.01 nats "
                   "on digits; it is reported)")
    e.add_argument("--seed", type=int, default=0, help="seeds the importance samples and ELBO draws (default: 0)")
    e.add_argument("--json", action="store_true", help="one JSON object on stdout, with the protocol (default: text)")
    e.add_argument("--device", default="cpu", help=DEVICE_HELP)
    e.add_argument("--track", choices=("auto", "none"), default="auto", help="auto: log the evaluation to the "
                   "run's tracked run when train --track made one (RUN/tracking.json); none: do not (default: auto)")
    e.add_argument("--amortization-gap", action="store_true",
                   help="also fit a diagonal Q per example and report ELBO(Q*) − ELBO(encoder) (Cremer et al. 2018; "
                   "default: off)")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="a PNG grid and .npy of samples from the model")
    add_run(s, data=False)
    s.add_argument("--n", type=int, default=64, help="how many samples (default: 64)")
    s.add_argument("--seed", type=int, default=0, help="seeds the draws (default: 0)")
    s.add_argument("--draw", action="store_true", help="draw x ~ p(x|z) instead of showing E[x|z] (default: off)")
    s.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="draw z with every Gaussian scale of p(z) times T, 0 < T ≤ 1000 (NVAE, VDVAE: 0.6-0.9; "
                   "default: 1)")
    s.add_argument("--label", type=int, help="a conditional VAE: sample with this label y (default: the labels in "
                   "turn, 0, 1, …)")
    s.add_argument("--sampler", choices=SAMPLERS, help="draw z from a density fitted on the aggregate posterior by "
                   "vaekit fit-sampler, not from p(z) (default: p(z))")
    add_out(s, "a .png (the .npy goes beside it) or a .npy (default: RUN/samples.png)")
    s.set_defaults(func=cmd_sample)

    r = sub.add_parser("reconstruct", help="inputs beside their reconstructions as a PNG")
    add_run(r)
    r.add_argument("--n", type=int, default=32, help="how many inputs (default: 32)")
    r.add_argument("--split", default="test", choices=SPLITS, help="which examples (default: test)")
    add_out(r, "PNG path (default: RUN/reconstructions.png)")
    r.set_defaults(func=cmd_reconstruct)

    en = sub.add_parser("encode", help="Q(z|x)'s means and standard deviations (and labels) for a split, to a file")
    add_run(en)
    en.add_argument("--split", default="test", choices=(*SPLITS, "all"), help="which examples (default: test)")
    en.add_argument("--seed", type=int, default=0, help="seeds Monte Carlo moments where Q has no closed form "
                    "(default: 0)")
    add_out(en, "latents.npy (means then standard deviations), .npz (mean, std, labels) or .csv (required)",
            required=True)
    en.set_defaults(func=cmd_encode)

    de = sub.add_parser("decode", help="E[x|z] for latents from a file (vaekit encode's, or your own [N, k] z)")
    add_run(de, data=False)
    de.add_argument("--latents", required=True, help=".npy, .npz or .csv of latents (required)")
    de.add_argument("--label", type=int, help="a conditional VAE: decode with this label y (default: the labels "
                    "stored in an .npz from vaekit encode)")
    add_out(de, ".npy (the decoded array) or .png (a grid) (required)", required=True)
    de.set_defaults(func=cmd_decode)

    di = sub.add_parser("disentanglement", help="MIG, SAP, DCI, FactorVAE and BetaVAE scores of the posterior "
                        "means against the data's factors (shapes2d, or an .npz with factors)")
    add_run(di)
    di.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated (default: {','.join(METRICS)})")
    di.add_argument("--split", default="all", choices=(*SPLITS, "all"), help="which examples (default: all)")
    di.add_argument("--seed", type=int, default=0, help="seeds the metrics' draws and splits (default: 0)")
    di.add_argument("--json", action="store_true", help="one JSON object on stdout (default: off)")
    di.set_defaults(func=cmd_disentanglement)

    pl = sub.add_parser("plot", help="every picture of a run: samples, latent map, traversals, curves, …")
    add_run(pl)
    add_out(pl, "folder for the PNGs (default: the run directory)")
    pl.set_defaults(func=cmd_plot)

    rp = sub.add_parser("report", help="one self-contained HTML page: config, metrics, every picture")
    add_run(rp)
    rp.add_argument("--k", type=int, default=100, help="importance samples for the log-likelihood (default: 100)")
    rp.set_defaults(func=cmd_report)

    for command in (*add_table_commands(sub), add_sampler_command(sub), add_reproduce_command(sub)):
        add_common(command)

    ex = sub.add_parser("explain", help="a worked example with numbers and a figure: " + ", ".join(TOPICS))
    ex.add_argument("topic", choices=TOPICS, help="which idea of the VAE")
    add_out(ex, "folder for the figure (default: explain-TOPIC)")
    ex.add_argument("--json", action="store_true", help="one JSON object on stdout (default: text)")
    add_common(ex)
    ex.set_defaults(func=cmd_explain)
    return p


def load_plugins_first(argv: list[str] | None) -> None:
    """Import every --plugin before the parser is built, so the names it registers are valid choices."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    for spec in pre.parse_known_args(argv)[0].plugin:
        load_plugin(spec)
