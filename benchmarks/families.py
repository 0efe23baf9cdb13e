"""The model families side by side on dynamically binarized MNIST: the same widths, the same training
budget, the same evaluation, each beside its published number.

Recipe (that of `mnist_fast.py`): 784-512-512-32 ReLU MLP encoder and mirrored decoder, Bernoulli
likelihood, ELBO with the KL weight warmed up over the first quarter of the run (at most 10 epochs),
batch 128, Adam with a cosine decay from 1e-3, 59,600 training / 400 validation images; each family
changes only its part. The test NLL is importance-sampled with k samples over the first n test
images (all 10,000 and k = 5000 for the published protocol). Epoch time is relative to the plain
model measured in the same process; the machine is shared, so run it alone.

    python benchmarks/families.py --epochs 10 --eval-k 1000 --eval-n 2000        # a quick look
    python benchmarks/families.py --epochs 125 --eval-k 5000                     # the published protocol
    python benchmarks/families.py --time-only 0.2                                # epoch times only, ~2 min
"""

from __future__ import annotations

import argparse
import json
import math

from common import default_data_dir, test_nll, train_stages

from vaekit.runs.config import Config, merge
from vaekit.runs.recipes import recipe

# the families' rows are recipes (vaekit reproduce NAME --budget paper trains one as a user would); this script
# runs them side by side at any budget, in one process, for the table and the epoch times
FAMILIES = ["plain", "mog", "vampprior", "full", "iaf", "2-layer", "2-layer-ladder", "2-layer+vampprior",
            "hvae+vampprior"]


def config(name: str, args) -> Config:
    """The recipe's config at this script's budget: epochs, KL warm-up over at most a quarter of them, data, seed."""
    return Config.from_dict(merge(recipe(name).config, {
        "data": {"data_dir": args.data_dir},
        "train": {"epochs": args.epochs, "seed": args.seed,
                  "objective": {"kl_warmup_epochs": min(10.0, args.epochs / 4)}}}))


def time_only(args) -> list[dict]:
    """Seconds per epoch of each family and its ratio to plain, from a fraction of an epoch, one process."""
    rows, plain = [], None
    for name in FAMILIES:
        if name not in args.families:
            continue
        half = args.time_only / 2
        _, _, seconds = train_stages(config(name, args), [(half, 1e-3), (half, 1e-3)], log=lambda *_: None,
                                     device=args.device)
        per_epoch = seconds / args.time_only
        plain = per_epoch if name == "plain" else plain
        rows.append({"family": name, "seconds_per_epoch": per_epoch, "time_vs_plain": per_epoch / plain if plain else None})
        print(f"{name:<18} {per_epoch:6.2f} s/epoch" + (f"  {per_epoch / plain:.2f}× plain" if plain else ""), flush=True)
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--eval-k", type=int, default=1000)
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--families", nargs="*", default=FAMILIES)
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, …: where to train and evaluate")
    p.add_argument("--json", help="write the rows here too")
    p.add_argument("--time-only", type=float, metavar="EPOCHS",
                   help="only time this fraction of an epoch per family (in two halves, after a warm-up step)")
    args = p.parse_args(argv)
    if args.time_only:
        return time_only(args)

    stages = [(1.0, 1e-3 * 0.5 * (1 + math.cos(math.pi * e / args.epochs))) for e in range(args.epochs)]
    rows, plain_seconds = [], None
    for name in FAMILIES:
        if name not in args.families:
            continue
        published, source = recipe(name).paper_nll, recipe(name).paper or "no published row at this protocol"
        trained, ds, seconds = train_stages(config(name, args), stages, log=lambda *_: None, device=args.device)
        elbo, nll, se = test_nll(trained, ds, args.eval_k, args.eval_n)
        plain_seconds = seconds if name == "plain" else plain_seconds
        rows.append({"family": name, "test_elbo": elbo, "nll": nll, "stderr": se, "seconds": seconds,
                     "time_vs_plain": seconds / plain_seconds if plain_seconds else None,
                     "published": published, "source": source})
        ratio = f"{seconds / plain_seconds:.2f}× plain" if plain_seconds else "—"
        paper = f"{published:.2f}" if published else "—"
        print(f"{name:<10} ELBO {elbo:8.2f}  NLL {nll:7.2f} ± {se:.2f}  (k={args.eval_k}, n={args.eval_n or 10000})  "
              f"{seconds:6.0f}s ({ratio})  paper {paper}: {source}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"epochs": args.epochs, "k": args.eval_k, "n": args.eval_n, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
