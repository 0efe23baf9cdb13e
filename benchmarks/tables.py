"""Baselines for tables with missing values, in three parts, each with a hook for vaekit.

breast    UCI breast cancer (sklearn's copy, 569 x 30), the MIWAE protocol (Mattei & Frellsen 2019; the
          authors' notebooks, github pamattei/miwae): every column standardized over all rows (np.std,
          ddof 0), then exactly floor(n p / 2) cells removed uniformly at random (MCAR). Error over the
          removed cells on the standardized scale: RMSE, and MSE (the metric the authors' code reports).
penguins  palmerpenguins' penguins.csv (344 x 8): species, island, sex, year categorical; the four
          measurements real, standardized over their observed values. It has its own NAs; a further 20%
          of the observed cells is removed (MCAR), and only those are scored: RMSE over removed numeric
          cells (pooled), accuracy over removed categorical cells (pooled, and per column). The sklearn
          imputers see the categoricals dummy-coded (one-hot less the first level, NaN across a missing
          cell's block) and decode by argmax over (1 - sum, block): mean imputation of it is the mode.
anomaly   breast cancer split 50/50 train/test, standardized with training statistics; 5% of the test rows
          corrupted in 3 random columns, either `wide` (values drawn from N(0, 3^2)) or `swap` (the values
          of those columns in a random training row: each value plausible alone, the row not). Models fit
          on the clean training rows; ROC AUC of their scores for "corrupted" on the test rows.

Both masks refuse a draw that leaves a row fully missing (and draw again); for breast at 50% of 30 columns
this never happens, so it is the authors' protocol. Results: mean ± sd (ddof 1) over the seeds 0..n-1; s/run
is the wall time of one seed, mask and scoring included. --methods picks the imputers; the anomaly part always
runs its two baselines (IsolationForest, a Gaussian's Mahalanobis distance), and vaekit's hook when listed.

    python benchmarks/tables.py --methods mean,iterative,forest,knn            # the baselines, ~5 min
    python benchmarks/tables.py --methods mean,knn,vaekit --parts breast        # once the hooks are filled
    python benchmarks/tables.py --methods mean,iterative,forest,knn --json benchmarks/results/tables.json
"""

from __future__ import annotations

import argparse
import csv
import importlib.resources
import math
import time
import warnings

import numpy as np
from common import write_json
from sklearn.covariance import LedoitWolf
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.ensemble import ExtraTreesRegressor, IsolationForest
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from sklearn.metrics import roc_auc_score

warnings.filterwarnings("ignore", category=ConvergenceWarning)  # IterativeImputer stops at max_iter; said here once


# ---- vaekit: the MIWAE recipe (Mattei & Frellsen 2019; the authors' notebooks) on the mixed likelihood ---------
# d = 10 latents, two tanh layers of 128 each way, the IWAE bound with K = 20 on the observed cells, Adam lr 1e-3,
# batch 64; a Gaussian per column with its σ learned (theirs: Student's t). Trained on every row (imputation is
# transductive: the authors' code keeps no validation split), then the importance-weighted mean with k = 1000.
VAEKIT = {"latent_dim": 10, "hidden": (128, 128), "activation": "tanh", "epochs": 600, "batch_size": 64, "k": 20}


def vaekit_fit(x: np.ndarray, schema, seed: int, epochs: int | None = None):
    import torch

    import vaekit

    torch.manual_seed(seed)
    codes = torch.as_tensor(x, dtype=torch.float32)
    schema = schema.fitted(codes)
    model = vaekit.VAE(data_dim=codes.shape[1], latent_dim=VAEKIT["latent_dim"], hidden=VAEKIT["hidden"],
                       activation=VAEKIT["activation"], likelihood="mixed", columns=schema)
    vaekit.fit(model, codes, codes, epochs=epochs or VAEKIT["epochs"], batch_size=VAEKIT["batch_size"], seed=seed,
               objective={"name": "iwae", "k": VAEKIT["k"]}, progress=False)
    return model, codes


def vaekit_impute(x_obs: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """`x_obs` (n, p) float with NaN where missing; `mask` True where observed. Returns the completed (n, p)."""
    import vaekit

    model, codes = vaekit_fit(x_obs, vaekit.Schema.real(x_obs.shape[1]), seed)
    return vaekit.impute(model, codes, k=1000, seed=seed).filled.double().numpy()


def vaekit_impute_table(rows: list[list], removed_mask: np.ndarray, seed: int) -> list[list]:
    """`rows`: the penguin rows (COLUMNS order), str for categorical cells (year too), float for the numeric ones,
    None where missing (its own NAs and the removed cells alike); `removed_mask` (n, 8) marks the removed cells
    (they hold None like the rest). Returns the rows with every None filled in, in the same form."""
    import tempfile
    from pathlib import Path

    import vaekit

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "penguins.csv"
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([COLUMNS, *[["NA" if v is None else v for v in r] for r in rows]])
        table = vaekit.read_table(path, overrides={c: "categorical" for c in CATEGORICAL if c != "sex"})
    model, codes = vaekit_fit(table.codes.numpy(), table.schema, seed)
    filled = vaekit.impute(model, codes, k=1000, seed=seed).filled
    out = []
    for i, r in enumerate(rows):
        row = list(r)
        for j, c in enumerate(table.schema.columns):
            if row[j] is None:
                row[j] = c.levels[int(filled[i, j])] if c.levels else float(filled[i, j])
        out.append(row)
    return out


def vaekit_scores(x_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
    """Anomaly scores for the rows of `x_test` (higher = more anomalous): −log p(x) under a model fit on `x_train`."""
    import torch

    import vaekit

    model, _ = vaekit_fit(x_train, vaekit.Schema.real(x_train.shape[1]), seed)
    return vaekit.score(model, torch.as_tensor(x_test, dtype=torch.float32), k=1000, seed=seed).score.numpy()


# ---- published numbers ----------------------------------------------------------------------------------------
# Mattei & Frellsen (ICML 2019), the table of single-imputation errors on UCI data at 50% MCAR: the breast row
# could not be retrieved from the sources reachable here, so nothing is shown as published. What the authors'
# public notebooks print for MIWAE on breast cancer (one run, seed 1234, imputation MSE) is shown as a reference.
PUBLISHED: dict[str, tuple[float, float]] = {}  # label -> (MSE mean, sd), to be filled from the paper's table
REFERENCE = [  # (label, MSE, source)
    ("MIWAE, authors' notebook (tanh, 600 ep, 1 run)", 0.300238, "pamattei/miwae MIWAE_demo_breast.ipynb @cd31798"),
    ("MIWAE, authors' notebook (ReLU, 1000 ep, 1 run)", 0.286728,
     "pamattei/miwae Tensorflow 2 notebooks/MIWAE_UCI_single_multiple-imputation.ipynb @d280b91"),
]


# ---- imputers: (n, p) float with NaN -> completed ----------------------------------------------------------------
def knn_tuned(x: np.ndarray, seed: int, ks=(1, 3, 5, 10, 20, 50)) -> np.ndarray:
    """KNNImputer with k chosen by the error on a further 10% of the observed cells, hidden for the choice."""
    hide = mcar(~np.isnan(x), 0.1, np.random.default_rng(seed + 1000))
    x_val = np.where(hide, np.nan, x)
    errors = [np.mean((KNNImputer(n_neighbors=k).fit_transform(x_val)[hide] - x[hide]) ** 2) for k in ks]
    return KNNImputer(n_neighbors=ks[int(np.argmin(errors))]).fit_transform(x)


METHODS = {  # --methods key -> [(label, impute(x, seed))]
    "mean": [("mean (mode for categoricals)", lambda x, s: SimpleImputer(strategy="mean").fit_transform(x))],
    "iterative": [("IterativeImputer BayesianRidge, 20 it",
                   lambda x, s: IterativeImputer(max_iter=20, random_state=s).fit_transform(x))],
    "forest": [("missForest-like: IterativeImputer ExtraTrees(100), 10 it",
                lambda x, s: IterativeImputer(ExtraTreesRegressor(n_estimators=100, random_state=s), max_iter=10,
                                              random_state=s).fit_transform(x))],
    "knn": [("KNNImputer k=5", lambda x, s: KNNImputer(n_neighbors=5).fit_transform(x)),
            ("KNNImputer k tuned on held-out observed cells", knn_tuned)],
}


def mcar(observed: np.ndarray, frac: float, rng) -> np.ndarray:
    """A mask of exactly floor(frac * #observed) of the observed cells, uniformly at random, redrawn while a row
    would be left with nothing observed."""
    idx = np.flatnonzero(observed)
    while True:
        removed = np.zeros(observed.size, bool)
        removed[rng.choice(idx, math.floor(frac * idx.size), replace=False)] = True
        removed = removed.reshape(observed.shape)
        if (observed & ~removed).any(axis=1).all():
            return removed


def summary(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "runs": [float(v) for v in values]}


def pm(s: dict, digits: int = 3) -> str:
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def over_seeds(label: str, seeds: int, one) -> dict | None:
    """`one(seed)` -> {metric: value} for one seed, timed; each metric summarized over the seeds, or None (and a
    note) where it calls a vaekit hook that is not written yet."""
    runs = []
    try:
        for seed in range(seeds):
            t0 = time.perf_counter()
            runs.append(one(seed))
            runs[-1]["seconds"] = time.perf_counter() - t0
    except NotImplementedError as e:
        print(f"  skipped {label}: {e}")
        return None
    return {k: summary([r[k] for r in runs]) for k in runs[0]}


def imputers(methods: list[str], vaekit_fn):
    for m in methods:
        yield from [("vaekit", vaekit_fn)] if m == "vaekit" else METHODS[m]


# ---- part 1: breast cancer (and wine), 50% MCAR ----------------------------------------------------------------
UCI = {"breast": ("Breast cancer", load_breast_cancer), "wine": ("Wine", load_wine)}


def uci(name: str, methods: list[str], seeds: int) -> dict:
    title, loader = UCI[name]
    data = loader().data
    x = (data - data.mean(0)) / data.std(0)

    def one(fn, seed):
        miss = mcar(np.ones_like(x, bool), 0.5, np.random.default_rng(seed))
        mse = np.mean((fn(np.where(miss, np.nan, x), seed)[miss] - x[miss]) ** 2)
        return {"rmse": math.sqrt(mse), "mse": mse}

    rows = ((label, over_seeds(label, seeds, lambda seed, fn=fn: one(fn, seed)))
            for label, fn in imputers(methods, lambda xo, s: vaekit_impute(xo, ~np.isnan(xo), s)))
    out = {label: r for label, r in rows if r}
    print(f"\n{title} {x.shape[0]}x{x.shape[1]}, standardized, 50% MCAR, {seeds} seeds: error over the removed cells")
    print(f"{'method':<58} {'RMSE':>15} {'MSE':>15} {'s/run':>7}")
    for label, r in out.items():
        print(f"{label:<58} {pm(r['rmse']):>15} {pm(r['mse']):>15} {r['seconds']['mean']:7.1f}")
    if name != "breast":
        return out
    for label, (m, sd) in PUBLISHED.items():
        print(f"{label + ' [published]':<58} {'':>15} {f'{m:.3f} ± {sd:.3f}':>15}")
    if not PUBLISHED:
        print(f"{'[published] Mattei & Frellsen 2019, breast row':<58} not retrieved (see the module's notes)")
    for label, m, _ in REFERENCE:
        print(f"{label + ' [ref]':<58} {math.sqrt(m):>15.3f} {m:>15.3f}")
    return out


# ---- part 2: penguins, mixed types ------------------------------------------------------------------------------
COLUMNS = ["species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
CATEGORICAL = {"species", "island", "sex", "year"}


def load_penguins() -> list[list]:
    path = importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"
    with path.open() as f:
        reader = csv.DictReader(f)
        return [[None if r[c] == "NA" else r[c] if c in CATEGORICAL else float(r[c]) for c in COLUMNS]
                for r in reader]


class Encoding:
    """Rows <-> a float matrix: numerics standardized; categoricals dummy-coded, one-hot less the first level (NaN
    across a missing cell's block), decoded by argmax over (1 - sum of the block, the block). Full one-hot would
    leave a chained-equation imputer stuck at the mean: each column of a block is then exactly 1 - the others."""

    def __init__(self, rows: list[list]):
        self.levels, self.stats = {}, {}
        for j, c in enumerate(COLUMNS):
            seen = [r[j] for r in rows if r[j] is not None]
            if c in CATEGORICAL:
                self.levels[j] = sorted(set(seen))
            else:
                self.stats[j] = (float(np.mean(seen)), float(np.std(seen)))

    def encode(self, rows: list[list]) -> np.ndarray:
        cols = []
        for j in range(len(COLUMNS)):
            if j in self.levels:
                lv = self.levels[j]
                cols += [[np.nan if r[j] is None else float(r[j] == v) for r in rows] for v in lv[1:]]
            else:
                mu, sd = self.stats[j]
                cols.append([np.nan if r[j] is None else (r[j] - mu) / sd for r in rows])
        return np.array(cols).T

    def decode(self, z: np.ndarray) -> list[list]:
        out, k = [[None] * len(COLUMNS) for _ in z], 0
        for j in range(len(COLUMNS)):
            width = len(self.levels[j]) - 1 if j in self.levels else 1
            for i, r in enumerate(out):
                block = z[i, k:k + width]
                if j in self.levels:
                    r[j] = self.levels[j][int(np.argmax([1 - block.sum(), *block]))]
                else:
                    r[j] = block[0] * self.stats[j][1] + self.stats[j][0]
            k += width
        return out


def penguins(methods: list[str], seeds: int, frac: float) -> dict:
    truth = load_penguins()
    enc = Encoding(truth)
    observed = np.array([[v is not None for v in r] for r in truth])
    num = np.array([j not in enc.levels for j in range(len(COLUMNS))])

    def one(fn, seed):
        removed = mcar(observed, frac, np.random.default_rng(seed))
        rows = [[None if removed[i, j] else v for j, v in enumerate(r)] for i, r in enumerate(truth)]
        filled = vaekit_impute_table(rows, removed, seed) if fn is None else enc.decode(fn(enc.encode(rows), seed))
        err = [(filled[i][j] - truth[i][j]) / enc.stats[j][1] for i, j in zip(*np.nonzero(removed & num))]
        hit = np.array([[filled[i][j] == truth[i][j] for j in range(len(COLUMNS))] for i in range(len(truth))])
        return {"rmse": math.sqrt(np.mean(np.square(err))), "accuracy": hit[removed & ~num].mean(),
                **{f"accuracy_{COLUMNS[j]}": hit[removed[:, j], j].mean() for j in enc.levels}}

    rows = ((label, over_seeds(label, seeds, lambda seed, fn=fn: one(fn, seed)))
            for label, fn in imputers(methods, None))
    out = {label: r for label, r in rows if r}
    print(f"\nPenguins 344x8 (own NAs: {(~observed).sum()} cells), a further {frac:.0%} of the observed cells "
          f"removed, {seeds} seeds: numeric RMSE (standardized) and categorical accuracy over the removed cells")
    print(f"{'method':<58} {'RMSE':>15} {'accuracy':>15} {'s/run':>7}  accuracy: species island sex year")
    for label, r in out.items():
        cols = " ".join(f"{r[f'accuracy_{c}']['mean']:.2f}" for c in ("species", "island", "sex", "year"))
        print(f"{label:<58} {pm(r['rmse']):>15} {pm(r['accuracy']):>15} {r['seconds']['mean']:7.1f}  {cols}")
    print(f"{'[published]':<58} none: not in the MIWAE paper")
    return out


# ---- part 3: anomaly scores -------------------------------------------------------------------------------------
def corrupt(x_train, x_test, kind: str, rng, frac=0.05, cols=3):
    x, bad = x_test.copy(), rng.choice(len(x_test), round(frac * len(x_test)), replace=False)
    for i in bad:
        c = rng.choice(x.shape[1], cols, replace=False)
        x[i, c] = rng.normal(0, 3, cols) if kind == "wide" else x_train[rng.integers(len(x_train)), c]
    y = np.zeros(len(x), int)
    y[bad] = 1
    return x, y


def anomaly(methods: list[str], seeds: int) -> dict:
    data = load_breast_cancer().data
    scorers = {"IsolationForest (200 trees)": lambda tr, te, s: -IsolationForest(n_estimators=200, random_state=s)
               .fit(tr).score_samples(te),
               "Gaussian, Mahalanobis (Ledoit-Wolf)": lambda tr, te, s: LedoitWolf().fit(tr).mahalanobis(te)}
    if "vaekit" in methods:
        scorers["vaekit"] = vaekit_scores
    n_train = len(data) // 2

    def one(fn, kind, seed):
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(data))
        tr, te = data[perm[:n_train]], data[perm[n_train:]]
        mu, sd = tr.mean(0), tr.std(0)
        tr, te = (tr - mu) / sd, (te - mu) / sd
        x, y = corrupt(tr, te, kind, rng)
        return {"auc": roc_auc_score(y, fn(tr, x, seed))}

    rows = ((f"{kind}: {label}", over_seeds(label, seeds, lambda seed, fn=fn, kind=kind: one(fn, kind, seed)))
            for kind in ("wide", "swap") for label, fn in scorers.items())
    out = {label: r for label, r in rows if r}
    n_test = len(data) - n_train
    print(f"\nAnomalies: breast cancer {n_train} train / {n_test} test rows, {round(0.05 * n_test)} test rows "
          f"corrupted in 3 columns, {seeds} seeds")
    print(f"{'corruption: scorer':<58} {'ROC AUC':>15} {'s/run':>7}")
    for label, r in out.items():
        print(f"{label:<58} {pm(r['auc']):>15} {r['seconds']['mean']:7.2f}")
    print(f"{'[published]':<58} none: not in the MIWAE paper")
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="mean,iterative,forest,knn", help="comma list of " +
                   ",".join([*METHODS, "vaekit"]))
    p.add_argument("--parts", default="breast,wine,penguins,anomaly")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--penguin-frac", type=float, default=0.2, help="share of the observed penguin cells removed")
    p.add_argument("--json", help="write everything here too")
    args = p.parse_args(argv)
    methods, parts = args.methods.split(","), args.parts.split(",")
    unknown = set(methods) - {*METHODS, "vaekit"}
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}")
    result = {"methods": methods, "seeds": args.seeds,
              "published": {k: {"mse": m, "sd": s} for k, (m, s) in PUBLISHED.items()},
              "reference": [{"label": lb, "mse": m, "source": src} for lb, m, src in REFERENCE]}
    for name in UCI:
        if name in parts:
            result[name] = uci(name, methods, args.seeds)
    if "penguins" in parts:
        result["penguins"] = penguins(methods, args.seeds, args.penguin_frac)
    if "anomaly" in parts:
        result["anomaly"] = anomaly(methods, args.seeds)
    return write_json(result, args.json)


if __name__ == "__main__":
    main()
