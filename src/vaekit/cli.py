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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, load_config_file
from .errors import TrainingInterrupted, VaekitError

log = logging.getLogger("vaekit")

# flag → (section, field); argparse defaults are None so that only given flags override.
TRAIN_FLAGS = {
    "dataset": ("data", "dataset"), "binarize": ("data", "binarize"), "split_seed": ("data", "split_seed"),
    "val_size": ("data", "val_size"), "data_dir": ("data", "data_dir"), "mmap": ("data", "mmap"),
    "arch": ("model", "arch"), "objective": ("train", "objective"), "train_k": ("train", "train_k"),
    "dreg": ("train", "dreg"), "eval_k": ("train", "eval_k"),
    "checkpoint_every": ("train", "checkpoint_every"), "skip_nonfinite": ("train", "skip_nonfinite"),
    "precision": ("train", "precision"), "compile": ("train", "compile"), "cuda_graphs": ("train", "cuda_graphs"),
    "latent_dim": ("model", "latent_dim"), "hidden": ("model", "hidden"), "decoder_hidden": ("model", "decoder_hidden"),
    "activation": ("model", "activation"), "likelihood": ("model", "likelihood"), "sigma": ("model", "sigma"),
    "init": ("model", "init"), "shared_encoder": ("model", "shared_encoder"),
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "beta": ("train", "beta"), "kl_warmup_epochs": ("train", "kl_warmup_epochs"),
    "num_samples": ("train", "num_samples"), "kl": ("train", "kl"), "estimator": ("train", "estimator"),
    "seed": ("train", "seed"),
}


def build_config(args: argparse.Namespace) -> Config:
    """defaults < --config file < flags."""
    merged: dict[str, dict[str, Any]] = Config().to_dict()
    if args.config:
        file_cfg = load_config_file(args.config)
        Config.from_dict(file_cfg, source=str(args.config))  # checks keys and types, names the file
        for section, values in file_cfg.items():
            merged[section].update(values)
    for flag, (section, name) in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            merged[section][name] = list(value) if isinstance(value, list) else value
    return Config.from_dict(merged, source="command line")


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
    print(f"active units {stats['active_units']} of {result.config.model.latent_dim}; KL per dimension (nats) "
          + " ".join(f"{v:.2f}" for v in stats["kl_per_dim"]))
    warning = collapse_warning(stats)
    if warning:
        log.warning("%s", warning)


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
    dataset = load_data(cfg)
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
        print(f"{'active units':<16}{metrics['active_units']:10d} of {cfg.model.latent_dim} (Cov_x E_q[z_j] > 0.01)")
        print(f"{'KL per dim':<16}" + " ".join(f"{v:.2f}" for v in metrics["kl_per_dim"]))
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
    from .plots import save_grid

    cfg, model = load_run(args.run)
    torch.manual_seed(args.seed)
    x = model.sample(args.n, mean=not args.draw)
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
    x = load_data(cfg).eval_split(args.split)[: args.n]
    x_hat = model.reconstruct(x)
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaekit", description="Variational auto-encoders on PyTorch.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="only warnings and results")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE and write a run directory")
    t.add_argument("--out", required=True, help="run directory to write")
    t.add_argument("--config", help="TOML or JSON file with [model], [data], [train] tables")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    t.add_argument("--dataset", help="digits (embedded), mnist, fashion-mnist, binarized-mnist, "
                   "or a path: .npy, .npz, .csv, or a folder of images")
    t.add_argument("--data-dir", help="root holding mnist/, fashion-mnist/, binarized_mnist/ (else $VAEKIT_DATA, "
                   "else ~/.cache/vaekit)")
    t.add_argument("--binarize", choices=["dynamic", "static", "none"])
    t.add_argument("--split-seed", type=int)
    t.add_argument("--val-size", type=int, help="validation examples held out of train (seeded)")
    t.add_argument("--mmap", action="store_const", const=True, default=None,
                   help="memory-map a .npy instead of reading it (data larger than memory)")
    t.add_argument("--arch", choices=["mlp", "conv"])
    t.add_argument("--latent-dim", type=int)
    t.add_argument("--hidden", type=int, action="append", help="hidden layer size; repeat for more layers")
    t.add_argument("--decoder-hidden", type=int, action="append", help="decoder sizes (default: mirror --hidden)")
    t.add_argument("--activation", choices=["relu", "tanh", "elu", "gelu", "softplus"])
    t.add_argument("--likelihood", choices=["bernoulli", "gaussian", "gaussian-learned", "gaussian-learned-per-dim"])
    t.add_argument("--sigma", type=float, help="σ of the Gaussian likelihood (initial σ if learned)")
    t.add_argument("--init", choices=["default", "glorot"])
    t.add_argument("--separate-encoder", dest="shared_encoder", action="store_const", const=False, default=None,
                   help="separate networks q(x; φ) and v(x; ψ) for the mean and scale")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--beta", type=float, help="KL weight in the training objective (reported ELBO stays β=1)")
    t.add_argument("--kl-warmup-epochs", type=float)
    t.add_argument("--num-samples", type=int, help="Monte Carlo samples of z per example")
    t.add_argument("--kl", choices=["auto", "analytic", "mc"])
    t.add_argument("--estimator", choices=["reparameterization", "score-function"])
    t.add_argument("--objective", choices=["elbo", "iwae"])
    t.add_argument("--train-k", type=int, help="importance samples per example for --objective iwae")
    t.add_argument("--dreg", action="store_const", const=True, default=None,
                   help="doubly reparameterized gradients for --objective iwae (Tucker et al. 2018)")
    t.add_argument("--eval-k", type=int, help="default k of `vaekit evaluate` for this run")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto")
    t.add_argument("--tensorboard", action="store_true", help="log scalars and sample grids to RUN/tensorboard")
    t.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps (default: each epoch)")
    t.add_argument("--skip-nonfinite", type=int, help="skip up to N batches with a NaN/Inf loss or gradient")
    t.add_argument("--precision", choices=["fp32", "bf16"], help="bf16: autocast matmuls (log-densities stay float32)")
    t.add_argument("--compile", action="store_const", const=True, default=None, help="torch.compile the objective")
    t.add_argument("--cuda-graphs", action="store_const", const=True, default=None,
                   help="CUDA, one process: capture the whole training step once and replay it")
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
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="a PNG grid and .npy of samples from the model")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--draw", action="store_true", help="draw x ~ p(x|z) instead of showing E[x|z]")
    s.add_argument("--output", help="PNG path (default RUN/samples.png)")
    s.set_defaults(func=cmd_sample)

    r = sub.add_parser("reconstruct", help="inputs beside their reconstructions as a PNG")
    r.add_argument("run")
    r.add_argument("--n", type=int, default=32)
    r.add_argument("--split", default="test", choices=["train", "val", "test"])
    r.add_argument("--output", help="PNG path (default RUN/reconstructions.png)")
    r.set_defaults(func=cmd_reconstruct)

    pl = sub.add_parser("plot", help="every picture of a run: samples, latent map, traversals, curves, …")
    pl.add_argument("run")
    pl.add_argument("--out", help="folder for the PNGs (default: the run directory)")
    pl.set_defaults(func=cmd_plot)

    rp = sub.add_parser("report", help="one self-contained HTML page: config, metrics, every picture")
    rp.add_argument("run")
    rp.add_argument("--k", type=int, default=100, help="importance samples for the log-likelihood")
    rp.set_defaults(func=cmd_report)

    topics = ("posterior", "elbo", "mean-field", "reparameterization", "beta")  # = explain.TOPICS, kept import-free
    ex = sub.add_parser("explain", help="a worked example with numbers and a figure: " + ", ".join(topics))
    ex.add_argument("topic", choices=topics)
    ex.add_argument("--out", default=".", help="folder for the figure (default: the current folder)")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_explain)
    return p


def main(argv: list[str] | None = None) -> int:
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
        return 130 if isinstance(e, (KeyboardInterrupt, TrainingInterrupted)) else 2
    return 0
