"""Prior samples against post-hoc samplers: z ~ p(z), a 10-component Gaussian mixture on the training codes
(Ghosh et al. 2020) and a second-stage VAE (Dai & Wipf 2019), for a plain VAE and a VampPrior, on MNIST
(Bernoulli, dynamic binarization) and the Frey faces (a Gaussian with a learned σ per pixel).

Each number is `vaekit evaluate RUN --samples N [--sampler NAME]`'s: the Fréchet distance and precision/recall
(Kynkäänniemi et al. 2019, k = 3) of N samples E[x|z] against N test images, in the feature space of vaekit's
MNIST classifier (MNIST) or of the training split's first 32 principal components (Frey faces: no labels).
These are not Inception FIDs. The reference row puts training images in the samples' place: what a model that
reproduces the data would score at this N. Dai & Wipf's claim checked here: the second stage's samples beat the
prior's (lower FD).

    python benchmarks/samplers.py                     # MNIST 30 epochs, Frey 300, ~25 min on 2 cores
    python benchmarks/samplers.py --quick             # 2 epochs each: that it runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import default_data_dir

from vaekit.cli import main
from vaekit.runs.samplers import TwoStage, fit_sampler, sample_quality

RESULTS = Path(__file__).parent / "results" / "samplers.json"
DATA = {
    "mnist": ["--dataset", "mnist", "--likelihood", "bernoulli", "--latent-dim", "32", "--hidden", "512",
              "--hidden", "512", "--batch-size", "128", "--lr", "1e-3", "--kl-warmup-epochs", "5"],
    "frey-faces": ["--dataset", "frey-faces", "--likelihood", "gaussian-learned-per-dim", "--sigma", "0.1",
                   "--latent-dim", "8", "--hidden", "200", "--batch-size", "100", "--lr", "1e-3"],
}
PRIORS = {"plain": [], "vampprior": ["--prior", "vampprior", "--prior-components", "500"]}


def run_one(data: str, prior: str, epochs: int, stage2: TwoStage, n: int, args) -> list[dict]:
    out = Path(args.out) / f"{data}-{prior}"
    t0 = time.perf_counter()
    if args.retrain:
        shutil.rmtree(out, ignore_errors=True)
    resume = ["--resume"] if (out / "train_state.pt").exists() else []  # finish a run that was cut short
    main(["--quiet", "train", *DATA[data], *PRIORS[prior], "--epochs", str(epochs), "--data-dir", args.data_dir,
          "--seed", "0", "--out", str(out), *resume])
    trained = time.perf_counter() - t0
    rows = []
    for sampler in (None, "gmm", "two-stage"):
        t0 = time.perf_counter()
        fitted = fit_sampler(out, sampler, two_stage=stage2, progress=False) if sampler else {}
        q = sample_quality(out, n, sampler)
        rows.append({"data": data, "prior": prior, "epochs": epochs, "train_seconds": round(trained, 1),
                     "fit_seconds": round(time.perf_counter() - t0, 1), **{k: v for k, v in fitted.items() if k != "sampler"},
                     **q})
        print(f"{data:<11}{prior:<10}{q['sampler']:<10} FD {q['frechet_distance']:9.3f}  precision {q['precision']:.3f}"
              f"  recall {q['recall']:.3f}   (data: FD {q['reference_frechet_distance']:.3f}, "
              f"{q['reference_precision']:.3f}, {q['reference_recall']:.3f})", flush=True)
    return rows


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--out", default="runs/bench-samplers", help="where the runs go (default: runs/bench-samplers)")
    p.add_argument("--quick", action="store_true", help="2 epochs each, 1000 samples: that it runs")
    p.add_argument("--retrain", action="store_true", help="train the runs again even where they exist")
    args = p.parse_args()
    epochs = {"mnist": 2, "frey-faces": 2} if args.quick else {"mnist": 30, "frey-faces": 300}
    stage2 = TwoStage(epochs=2 if args.quick else 50)
    rows = []
    for data in DATA:
        n = 1000 if args.quick else {"mnist": 10000, "frey-faces": 196}[data]
        for prior in PRIORS:
            rows += run_one(data, prior, epochs[data], stage2, n, args)
    if not args.quick:
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main_()
