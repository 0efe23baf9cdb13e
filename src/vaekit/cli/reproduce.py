"""`vaekit reproduce --list` and `vaekit reproduce NAME [--budget quick|paper] [--seeds N]`: paper rows by one
command (`runs.recipes`, `runs.reproduce`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import VaekitError
from ..runs.recipes import RECIPES, recipe
from ..runs.reproduce import CERTIFICATE, reproduce
from ..training.distributed import resolve_device


def add_reproduce_command(sub) -> argparse.ArgumentParser:
    r = sub.add_parser("reproduce", help="train and evaluate a paper row by name, and write its certificate "
                       "(--list: every recipe)")
    r.add_argument("name", nargs="?", help="the recipe (see --list)")
    r.add_argument("--list", action="store_true", help="print every recipe (or NAME's) with its epochs at --budget, "
                   "the paper's number, our last number and its training time (default: off)")
    r.add_argument("--budget", default="paper", choices=("quick", "paper"), help="paper: the row's protocol; quick: "
                   "a few epochs and a small evaluation, that it runs (default: paper)")
    r.add_argument("--seeds", type=int, default=1, help="train seeds 0 … N−1 and report their mean (default: 1)")
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    r.add_argument("--data-dir", help="root of the datasets (default: $VAEKIT_DATA, else ~/.cache/vaekit)")
    r.add_argument("--out", "--output", dest="out", help="folder for the runs and certificate.json (default: "
                   "reproduce/NAME-BUDGET)")
    r.set_defaults(func=cmd_reproduce)
    return r


def print_list(name: str | None = None, budget: str = "paper") -> None:
    """Every recipe (or `name`'s): its epochs at `budget`, the paper's number, ours (BENCHMARKS.md has how each was
    measured), the time of the paper budget."""
    shown = [recipe(name)] if name else RECIPES
    wide = max(len(r.name) for r in shown) + 2
    print(f"{'recipe':<{wide}}{'epochs':>7}{'paper':>8}  {'ours':<15}{'k':>5}{'min':>6}  paper (or what it is)")
    for r in shown:
        paper = f"{r.paper_nll:.2f}" if r.paper_nll is not None else "—"
        epochs = r.budget(budget)[0]["train"]["epochs"]
        if r.after:  # a fine-tune: the epochs of the run it starts from, then its own
            epochs = f"{recipe(r.after).budget(budget)[0]['train']['epochs']}+{epochs}"
        print(f"{r.name:<{wide}}{epochs:>7}{paper:>8}  {r.ours:<15}{r.ours_k:>5}{r.minutes:>6}  {r.paper or r.title}")
    print("test NLL in nats over every test example; min: training of the paper budget on 2 CPU cores.\n"
          f"run {'it' if name else 'one'}: vaekit reproduce {name or 'NAME'} [--budget quick|paper] [--seeds N] "
          "[--device cuda]")


def cmd_reproduce(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.list:
        print_list(args.name, args.budget)
        return None
    if not args.name:
        raise VaekitError("name a recipe (vaekit reproduce --list shows them)")
    if not 0 < args.seeds <= 100:
        raise VaekitError(f"--seeds must be from 1 to 100, got {args.seeds}")
    out = args.out or f"reproduce/{args.name}-{args.budget}"
    device = resolve_device(args.device)
    c = reproduce(args.name, out, args.budget, args.seeds, device, args.data_dir, progress=not args.quiet)
    p = c["protocol"]
    print(f"{args.name} ({args.budget}): test NLL {c['nll']:.3f} ± {c['nll_stderr']:.3f} nats over {len(c['seeds'])} "
          f"seed(s); k = {p['k']}, n = {p['n']} of {p['split_size']}, {p['binarization']} binarization")
    if c["paper_nll"] is not None:
        print(f"paper: {c['paper_nll']:.2f} ({c['paper']}); {c['verdict']}")
    print(f"wrote {out}/{CERTIFICATE}")
    return c
