"""`vaekit fit-sampler RUN --sampler gmm|two-stage`: fit a post-hoc sampler on a run's aggregate posterior
(`runs.samplers`); `vaekit sample RUN --sampler NAME` then draws from it."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import VaekitError
from ..parts.registry import MAX_COUNT
from ..runs.samplers import SAMPLERS, TwoStage, fit_sampler
from .runs import add_data_arguments

DEFAULT = TwoStage()


def add_sampler_command(sub) -> argparse.ArgumentParser:
    f = sub.add_parser("fit-sampler", help="fit a density on the run's codes to sample from instead of p(z): a "
                       "Gaussian mixture (Ghosh et al. 2020) or a second-stage VAE (Dai & Wipf 2019)")
    f.add_argument("run", help="a run directory written by vaekit train")
    f.add_argument("--sampler", required=True, choices=SAMPLERS, help="gmm: a full-covariance mixture on the "
                   "posterior means; two-stage: a second VAE on draws z ~ Q(z|x) (required)")
    f.add_argument("--components", type=int, default=10, help="gmm: mixture components (default: 10, as Ghosh et al.)")
    f.add_argument("--epochs", type=int, default=DEFAULT.epochs, help=f"two-stage: epochs of the second VAE "
                   f"(default: {DEFAULT.epochs})")
    f.add_argument("--hidden", type=int, action="append", help="two-stage: the second VAE's hidden widths, repeat "
                   f"for layers (default: {' '.join(map(str, DEFAULT.hidden))})")
    f.add_argument("--seed", type=int, default=0, help="seeds the fit (default: 0)")
    add_data_arguments(f)
    f.set_defaults(func=cmd_fit_sampler)
    return f


def cmd_fit_sampler(args: argparse.Namespace) -> dict[str, Any]:
    hidden = tuple(args.hidden or DEFAULT.hidden)
    if not all(0 < h <= 1 << 16 for h in hidden):
        raise VaekitError(f"--hidden must be widths from 1 to 65536, got {' '.join(map(str, hidden))}")
    if not 0 < args.epochs <= MAX_COUNT:  # what [train] epochs takes
        raise VaekitError(f"--epochs must be a number of epochs from 1 to {MAX_COUNT:,}, got {args.epochs}")
    settings = TwoStage(hidden=hidden, epochs=args.epochs)
    fitted = fit_sampler(args.run, args.sampler, components=args.components, seed=args.seed, two_stage=settings,
                         progress=not args.quiet, dataset=args.dataset, data_dir=args.data_dir)
    if args.sampler == "gmm":
        print(f"fitted a {args.components}-component Gaussian mixture on {fitted['codes']} posterior means: "
              f"{fitted['mean_log_likelihood']:.3f} nats per code; saved in {args.run}/samplers/gmm.safetensors")
    else:
        print(f"trained the second-stage VAE on {fitted['codes']} draws z ~ Q(z|x) for {fitted['epochs']} epochs: "
              f"ELBO {fitted['elbo']:.3f} nats, KL {fitted['kl']:.3f}, median σ {fitted['sigma_median']:.4f}; saved in "
              f"{args.run}/samplers/two-stage")
    if fitted["replaced"]:
        print("(it replaces the earlier fit of this sampler)")
    print(f"draw from it: vaekit sample {args.run} --sampler {args.sampler}")
    return fitted
