"""What β buys, seed by seed: β-VAE (β = 1, 4), β-TCVAE, FactorVAE and DIP-VAE-I on shapes2d at one fixed
budget, several seeds each, every disentanglement metric and the test ELBO as mean ± sd over seeds.

Locatello et al. (2019) trained 12,800 models and found that the random seed moves every metric about
as much as the choice of objective does; this study asks the same question at laptop scale. Each
method keeps its paper's (or Locatello et al.'s) setting; everything else is shared: an MLP
4096-256-256-z(10)-256-256-4096 (ReLU), Bernoulli likelihood, Adam at 5e-4, batch 64, the same
epochs. The metrics are scored on the test split's posterior means (`vaekit.disentanglement.scoring.score_model`, with
disentanglement_lib's defaults except where `vaekit/metrics.py` says). Locatello et al. used a
convolutional network and 300,000 steps; this budget is far smaller, so compare the spread across
seeds and the ordering of methods with theirs, not the levels.

    python benchmarks/disentanglement.py --seeds 3 --epochs 30 --json benchmarks/results/disentanglement.json
    python benchmarks/disentanglement.py --seeds 1 --epochs 1 --methods beta-vae-1 factorvae   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from vaekit.disentanglement.scoring import score_model
from vaekit.evaluation.estimates import evaluate_elbo
from vaekit.runs.config import Config
from vaekit.runs.experiment import train_run

# name → (train settings, the setting's source). Ranges in Locatello et al.'s sweep: β 1-16 (β-VAE),
# β 1-10 (β-TCVAE), γ 10-100 (FactorVAE), λ_od 1-100 (DIP-VAE-I).
METHODS = {
    "beta-vae-1": ({"name": "elbo", "beta": 1.0}, "the plain VAE"),
    "beta-vae-4": ({"name": "elbo", "beta": 4.0}, "β-VAE (Higgins et al. 2017; dSprites used β = 4)"),
    "beta-tcvae": ({"name": "beta-tcvae", "beta": 6.0}, "β-TCVAE (Chen et al. 2018; dSprites β = 6), MWS"),
    "factorvae": ({"name": "factorvae", "gamma": 40.0, "discriminator_hidden": [256, 256, 256]},
                  "FactorVAE (Kim & Mnih 2018), γ = 40; a 3×256 discriminator (the paper's is 6×1000)"),
    "dip-vae-1": ({"name": "dip-vae-1", "lambda_od": 10.0}, "DIP-VAE-I (Kumar et al. 2018), λ_od = 10, λ_d = 100"),
}
METRIC_KEYS = ("betavae", "factorvae", "mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness")


def config(settings: dict, args, seed: int) -> Config:
    return Config().replace(
        model={"latent_dim": 10, "hidden": [256, 256], "activation": "relu"},
        data={"dataset": "shapes2d"},
        train={"epochs": args.epochs, "batch_size": 64, "lr": 5e-4, "seed": seed, "objective": settings},
    )


def run_one(name: str, seed: int, args) -> dict:
    settings, _ = METHODS[name]
    t0 = time.perf_counter()
    result = train_run(config(settings, args, seed), progress=False)
    seconds = time.perf_counter() - t0
    model, ds = result.model, result.dataset
    x, factors = ds.eval_split("test"), ds.factors["test"]
    elbo = evaluate_elbo(model, x, seed=seed)["elbo"]
    scores = score_model(model, x, factors, seed=seed)
    return {"method": name, "seed": seed, "test_elbo": elbo, "train_seconds": seconds,
            **{k: float(v) for k, v in scores.items()}}


def summarize(rows: list[dict]) -> list[dict]:
    """Per method: mean and sd over seeds (sd with n − 1; 0 for one seed), min and max, of each number."""
    out = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        entry = {"method": name, "seeds": len(mine)}
        for key in ("test_elbo", *METRIC_KEYS):
            values = [r[key] for r in mine]
            entry[key] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                          "min": min(values), "max": max(values)}
        out.append(entry)
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--json", help="write every run and the summary here")
    args = p.parse_args(argv)
    rows = []
    for seed in range(args.seeds):  # seeds outermost: a stopped study still has every method at some seeds
        for name in args.methods:
            row = run_one(name, seed, args)
            rows.append(row)
            print(f"{name:<11} seed {seed}  ELBO {row['test_elbo']:8.2f}  " +
                  "  ".join(f"{k} {row[k]:.3f}" for k in METRIC_KEYS) + f"  ({row['train_seconds']:.0f}s)", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"epochs": args.epochs, "runs": rows, "summary": summarize(rows)}, f, indent=1)
    print(f"\nmean ± sd over seeds ({args.epochs} epochs):")
    for entry in summarize(rows):
        print(f"{entry['method']:<11} n={entry['seeds']}  " + "  ".join(
            f"{k} {entry[k]['mean']:.3f}±{entry[k]['sd']:.3f}" for k in ("test_elbo", *METRIC_KEYS)))
    return rows


if __name__ == "__main__":
    main()
