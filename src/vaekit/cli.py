"""The `vaekit` command line: train, evaluate, sample, reconstruct.

    vaekit train --dataset digits --latent-dim 8 --hidden 128 --epochs 100 --out runs/digits
    vaekit evaluate runs/digits --k 1000 --json
    vaekit sample runs/digits --n 64
    vaekit reconstruct runs/digits --n 32

Settings resolve as defaults < `--config FILE` (TOML or JSON) < flags; the resolved config is
printed and saved in the run directory. Errors print one line and exit with status 2
(`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import SECTIONS, Config, load_config_file, settings
from .errors import TrainingInterrupted, VaekitError
from .plugins import load_plugin
from .registry import Registry

log = logging.getLogger("vaekit")

def build_config(args: argparse.Namespace) -> Config:
    """defaults < --config file < flags."""
    merged: dict[str, dict[str, Any]] = Config().to_dict()
    if args.config:
        file_cfg = load_config_file(args.config)
        Config.from_dict(file_cfg, source=str(args.config))  # checks keys and types, names the file
        for section, values in file_cfg.items():
            merged[section].update(values)
    for section, f in settings():
        value = getattr(args, f.name, None)
        if value is not None:
            merged[section][f.name] = list(value) if isinstance(value, list) else value
    return Config.from_dict(merged, source="command line")


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per config setting (`--latent-dim`, `--prior`, …), its type, choices and help taken from
    the config's fields and the registries. Defaults are None, so only given flags override."""
    hints = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}
    for section, f in settings():
        flag = f.metadata.get("flag")
        if flag == "":
            continue
        flag = flag or "--" + f.name.replace("_", "-")
        hint = hints[section][f.name]
        optional = type(None) in typing.get_args(hint)  # X | None: the flag takes an X
        base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
        choices = f.metadata.get("choices")
        help_text = f.metadata["help"]
        if isinstance(choices, Registry):
            help_text += " (" + choices.help().replace("%", "%%") + ")"
            choices = choices.names()
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if base is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(base) is tuple:
            p.add_argument(flag, type=typing.get_args(base)[0], action="append", **kwargs)
        else:
            p.add_argument(flag, type=base, choices=choices, **kwargs)


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    """Train; under torchrun every rank runs this and rank 0 alone writes and prints."""
    from .distributed import launched
    from .experiment import train_run

    cfg = build_config(args)
    device = resolve_device(args.device)
    with launched(device) as ctx:
        if not ctx.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        board = None
        if args.tensorboard and ctx.is_main:
            from .tensorboard import TensorBoardLogger

            board = TensorBoardLogger(Path(args.out) / "tensorboard")
        try:
            result = train_run(cfg, args.out, resume=args.resume, show_progress=sys.stderr.isatty(), ctx=ctx,
                               device=device, on_epoch=board)
        except RuntimeError as e:  # a collective broken by a rank that died: say so in one line
            if not ctx.distributed:
                raise
            raise VaekitError(f"rank {ctx.rank}: lost contact with another rank, which probably failed "
                              f"(see its error): {str(e).splitlines()[0][:200]}") from None
        finally:
            if board is not None:
                board.close()
    last = result.history[-1] if result.history else {}
    if ctx.is_main:
        print(json.dumps(result.config.to_dict()))
        if last:
            print(f"trained {last['epoch']} epochs: val ELBO {last['val/elbo']:.3f} nats; run directory {args.out}")
            _report_latents(result)
    return last


def _report_latents(result) -> None:
    """Active units and KL per dimension on the validation split, with a warning on posterior collapse."""
    from .diagnostics import collapse_warning
    from .evaluate import latent_statistics

    stats = latent_statistics(result.model.cpu(), result.dataset.eval_split("val"))
    print(f"active units {stats['active_units']} of {stats['latent_dim']}; KL per dimension (nats) "
          + format_kl_per_dim(stats["kl_per_dim"]))
    warning = collapse_warning(stats)
    if warning:
        log.warning("%s", warning)


def format_kl_per_dim(kl_per_dim: list[float] | None) -> str:
    if kl_per_dim is None:
        return "n/a (the prior is not a product of 1-D Gaussians: the KL does not split by dimension)"
    return " ".join(f"{v:.2f}" for v in kl_per_dim)


def resolve_device(name: str) -> str:
    """cpu | cuda | cuda:N | auto (cuda where available, else cpu); under torchrun, cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VaekitError(f"--device {name}: this torch build or machine has no CUDA device")
        from .distributed import from_env

        ctx = from_env()
        if name == "cuda" and ctx is not None:
            name = f"cuda:{ctx.local_rank}"
    elif name != "cpu":
        raise VaekitError(f"--device {name!r}: use cpu, cuda, cuda:N or auto")
    return name


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from .checkpoint import load_run
    from .distributed import launched
    from .evaluate import evaluate_all
    from .experiment import load_data

    cfg, model = load_run(args.run)
    dataset = load_data(cfg, args.run)
    device = resolve_device(args.device)
    model, x = model.to(device), dataset.eval_split(args.split).to(device)
    k = args.k or cfg.train.eval_k
    with launched(device) as ctx:  # under torchrun, ranks share the batches and all-reduce exact sums
        metrics = evaluate_all(model, x, k=k, seed=args.seed, ctx=ctx)
    metrics["split"] = args.split
    if not ctx.is_main:
        return metrics
    if getattr(args, "amortization_gap", False):
        metrics.update(evaluate_amortization_gap(model, x, args.seed))
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{'split':<16}{args.split} (n={metrics['n']})")
        for key in ("elbo", "reconstruction", "kl", "log_likelihood"):
            print(f"{key:<16}{metrics[key]:10.3f} nats")
        print(f"{'':<16}± {metrics['log_likelihood_stderr']:.3f} standard error, k = {k} importance samples")
        print(f"{'NLL':<16}{metrics['nll']:10.3f} nats = {metrics['bits_per_dim']:.4f} bits/dim")
        print(f"{'active units':<16}{metrics['active_units']:10d} of {metrics['latent_dim']} (Cov_x E_q[z_j] > 0.01)")
        print(f"{'KL per dim':<16}" + format_kl_per_dim(metrics["kl_per_dim"]))
        print_diagnostics(metrics)
    return metrics


def evaluate_amortization_gap(model, x: torch.Tensor, seed: int) -> dict[str, float]:
    """`evaluate --amortization-gap`: mean encoder ELBO, per-example optimized ELBO and their gap."""
    from .diagnostics import amortization_gap, gap_summary

    return gap_summary(amortization_gap(model, x, seed=seed))


def print_diagnostics(metrics: dict[str, Any]) -> None:
    """The amortization gap (when computed) and a posterior-collapse warning (when most units are inactive)."""
    from .diagnostics import collapse_warning

    if "amortization_gap" in metrics:
        print(f"{'encoder ELBO':<16}{metrics['encoder_elbo']:10.3f} nats (encoder's Q, 256 samples)")
        print(f"{'optimized ELBO':<16}{metrics['optimized_elbo']:10.3f} nats (diagonal Q fitted per example)")
        print(f"{'amortization gap':<16}{metrics['amortization_gap']:10.3f} nats (Cremer et al. 2018)")
    warning = collapse_warning(metrics)
    if warning:
        print(f"warning: {warning}")


def cmd_sample(args: argparse.Namespace) -> Path:
    from .checkpoint import load_run
    from .experiment import to_data_units
    from .plots import save_grid

    cfg, model = load_run(args.run)
    torch.manual_seed(args.seed)
    x = to_data_units(cfg, args.run, model.sample(args.n, mean=not args.draw))
    out = Path(args.output or Path(args.run) / "samples.png")
    save_grid(out, x, cfg.model.data_shape)
    np.save(out.with_suffix(".npy"), x.numpy().reshape(args.n, *cfg.model.data_shape))
    print(f"wrote {out} and {out.with_suffix('.npy')}")
    return out


def cmd_reconstruct(args: argparse.Namespace) -> Path:
    from .checkpoint import load_run
    from .experiment import load_data
    from .plots import save_grid

    cfg, model = load_run(args.run)
    dataset = load_data(cfg, args.run)
    x = dataset.eval_split(args.split)[: args.n]
    x, x_hat = dataset.restore(x), dataset.restore(model.reconstruct(x))  # in the data's units
    pairs = torch.stack([x, x_hat], 1).reshape(-1, x.shape[1])  # input, reconstruction, input, …
    out = Path(args.output or Path(args.run) / "reconstructions.png")
    save_grid(out, pairs, cfg.model.data_shape, ncol=16)
    print(f"wrote {out} (each input followed by its reconstruction)")
    return out


def cmd_plot(args: argparse.Namespace) -> list[Path]:
    from .report import plot_run

    paths = plot_run(args.run, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return paths


def cmd_report(args: argparse.Namespace) -> Path:
    from .report import write_report

    path = write_report(args.run, k=args.k)
    print(f"wrote {path}")
    return path


def cmd_explain(args: argparse.Namespace) -> dict[str, Any]:
    from .explain import explain, format_result

    result = explain(args.topic, args.out)
    print(json.dumps(result) if args.json else format_result(result))
    return result


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

    e = sub.add_parser("evaluate", help="ELBO and importance-sampled log-likelihood of a run")
    e.add_argument("run")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--k", type=int, help="importance samples (default: the run's eval_k)")
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


def _load_plugins_first(argv: list[str] | None) -> None:
    """Import every --plugin before the parser is built, so the names it registers are valid choices."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    for spec in pre.parse_known_args(argv)[0].plugin:
        load_plugin(spec)


def main(argv: list[str] | None = None) -> int:
    try:
        _load_plugins_first(argv)
    except VaekitError as e:
        print(f"vaekit: error: {e}", file=sys.stderr)
        return 2
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        for name in ("n", "k"):
            value = getattr(args, name, None)
            if value is not None and value <= 0:
                raise VaekitError(f"--{name} must be > 0, got {value}")
        args.func(args)
    except (VaekitError, KeyboardInterrupt) as e:
        if args.debug:
            raise
        print(f"vaekit: error: {e}" if str(e) else "vaekit: interrupted", file=sys.stderr)
        if isinstance(e, TrainingInterrupted):
            return 128 + e.signum
        return 130 if isinstance(e, KeyboardInterrupt) else 2
    return 0
