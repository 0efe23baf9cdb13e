"""`vaekit reproduce NAME`: train a recipe (`runs.recipes`) for each seed, evaluate the test split once at the
recipe's protocol, and write OUT/certificate.json: the protocol (data, binarization, k, n), each seed's NLL with
both errors and ESS, the mean and spread over seeds, versions, times, the paper's number and the verdict.

Each seed's run is a run directory (OUT/seed-S) that `vaekit evaluate` reads: its numbers equal the certificate's
(`vaekit evaluate OUT/seed-0 --k K --n N --json`). A run directory already there is continued (`--resume`), so
an interrupted paper budget picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

from ..data import EVAL_BINARIZATION_SEED, resolve_binarize
from ..errors import PluginError, TrainingInterrupted, VaekitError
from ..evaluation.estimates import evaluate_all
from ..files import atomic_write, make_dirs
from ..parts.likelihoods import likelihood_support
from .checkpoint import CONFIG, STATE, load_config, load_run, versions
from .config import Config, merge
from .experiment import load_data, train_run
from .recipes import recipe, verdict

log = logging.getLogger(__name__)
CERTIFICATE = "certificate.json"


def train_seed(config: dict[str, Any], run: Path, seed: int, device: str, data_dir: str | None,
               progress: bool) -> float:
    """Train one seed of a recipe into `run` (continued where it exists); the seconds it took."""
    update: dict[str, Any] = {"train": {"seed": seed}}
    if data_dir is not None:
        update["data"] = {"data_dir": data_dir}
    cfg = Config.from_dict(merge(config, update), source="recipe")
    resume = (run / CONFIG).exists()
    if resume:
        try:
            saved = load_config(run)
        except PluginError:  # no recipe names a plugin, and reproduce loads none
            raise VaekitError(f"{run}: holds a run whose parts come from a plugin, not the recipe's; choose another "
                              "--out (or remove it)") from None
        check_same_recipe(saved, cfg, run)
        restart = not (run / STATE).exists()  # stopped before its first checkpoint: it starts again from step 0
        if (saved.train.init_from is None) != (cfg.train.init_from is None) or (
                restart and saved.train.init_from != cfg.train.init_from):  # never from a run its config names
            raise VaekitError(f"{run}: holds a run whose [train] init_from is {saved.train.init_from!r}, not the "
                              f"recipe's {cfg.train.init_from!r}; choose another --out (or remove it)")
        if saved.train.init_from:  # a fine-tune continued where OUT lies now keeps the base it started from (the
            cfg = cfg.replace(train={"init_from": saved.train.init_from})  # weights come from its trainer state)
    t0 = time.perf_counter()
    try:
        train_run(cfg, run, resume=resume, progress=progress, device=device, words=("--resume", "--out"))
    except TrainingInterrupted as e:  # its message names train's --resume; here the same command continues
        raise TrainingInterrupted(f"{str(e).split(';')[0]}; the run is kept in {run}: the same vaekit reproduce "
                                  "command continues it", signum=e.signum) from None
    return time.perf_counter() - t0


FILLED = {("data", "data_dir"), ("data", "binarize"), ("model", "data_shape"), ("model", "plugins"), ("model", "columns"),
          ("model", "condition_classes"), ("train", "init_from")}  # filled from the data, the machine and where OUT
# lies now (a moved OUT's fine-tune names its base by the old path), compared apart (binarize) or not


def check_same_recipe(saved: Config, cfg: Config, run: Path) -> None:
    """A run directory already in --out is continued only if it was trained with the recipe's settings at this
    budget and seed (another budget, a flag changed by hand: refused, naming the first setting that differs)."""
    support = likelihood_support(cfg.model.likelihood)
    pairs = [(("data", "binarize"), resolve_binarize(saved.data.binarize, support),
              resolve_binarize(cfg.data.binarize, support))]
    have, want = saved.to_dict(), cfg.to_dict()
    pairs += [((s, k), have[s].get(k), v) for s in want for k, v in want[s].items() if (s, k) not in FILLED]
    for (section, key), found, expected in pairs:
        if found != expected:
            raise VaekitError(f"{run}: holds a run whose [{section}] {key} is {found!r}, not the recipe's {expected!r} "
                              "at this budget and seed; choose another --out (or remove it)")


def evaluate_seed(run: Path, k: int, n: int | None, progress: bool) -> dict[str, Any]:
    """The test split's numbers as `vaekit evaluate RUN --k K --n N` gives them (seed 0, the default ELBO draws)."""
    cfg, model = load_run(run)
    test = load_data(cfg, run).eval_split("test")
    t0 = time.perf_counter()
    m = evaluate_all(model, test[:n], k=k, seed=0, progress=progress)
    keep = ("nll", "log_likelihood", "log_likelihood_stderr", "log_likelihood_mc_stderr", "elbo", "elbo_mc_stderr",
            "ess_median", "ess_min", "bits_per_dim", "active_units", "n", "k")
    return {**{key: m[key] for key in keep}, "split_size": test.shape[0], "eval_seconds": time.perf_counter() - t0,
            "binarization": cfg.data.binarize, "dataset": cfg.data.dataset}


def seed_folder(out: Path, name: str) -> Path:
    run = out / name
    if run.is_symlink():
        raise VaekitError(f"{run}: is a symbolic link, and vaekit trains no run through a link: remove it")
    return run


def reproduce(name: str, out: str | Path, budget: str = "paper", seeds: int = 1, device: str = "cpu",
              data_dir: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate recipe `name` at `budget` for seeds 0 … seeds−1; returns (and writes) the certificate."""
    r = recipe(name)
    config, (k, n) = r.budget(budget)
    out = Path(out)
    make_dirs(out)
    if (out / CERTIFICATE).is_dir() and not (out / CERTIFICATE).is_symlink():  # found now, not after the training
        raise VaekitError(f"{out / CERTIFICATE}: a folder where the certificate is to be written; remove it or choose "
                          "another --out")
    rows = []
    for seed in range(seeds):
        run, seconds, started = seed_folder(out, f"seed-{seed}"), 0.0, {}
        seed_config = config
        if r.after:  # the recipe it starts from, trained first (or continued) in a folder of its own
            base = seed_folder(out, f"{r.after}-seed-{seed}")
            seconds += train_seed(recipe(r.after).budget(budget)[0], base, seed, device, data_dir, progress)
            seed_config = merge(config, {"train": {"init_from": str(base.resolve())}})
            started = {"started_from": str(base)}
        seconds += train_seed(seed_config, run, seed, device, data_dir, progress)
        rows.append({"seed": seed, "run": str(run), **started, "train_seconds_this_call": round(seconds, 1),
                     **evaluate_seed(run, k, n, progress)})
        log.info("%s seed %d: test NLL %.3f ± %.3f nats (k = %d, n = %d)", name, seed, rows[-1]["nll"],
                 rows[-1]["log_likelihood_stderr"], k, rows[-1]["n"])
    nll = statistics.fmean(row["nll"] for row in rows)
    stderr = math.sqrt(statistics.fmean(row["log_likelihood_stderr"] ** 2 for row in rows) / len(rows))
    certificate = {
        "recipe": name, "title": r.title, "budget": budget, "config": config, "after": r.after or None,
        "protocol": {"split": "test", "evaluated": "once, at the end of training; no choice of this run looked at it",
                     "dataset": rows[0]["dataset"], "binarization": rows[0]["binarization"],
                     "evaluation_binarization_seed": EVAL_BINARIZATION_SEED, "k": k, "n": rows[0]["n"],
                     "split_size": rows[0]["split_size"], "elbo_samples": "vaekit evaluate's default", "seed": 0},
        "seeds": rows, "nll": nll, "nll_stderr": stderr,
        "nll_sd_over_seeds": statistics.stdev(row["nll"] for row in rows) if len(rows) > 1 else None,
        "paper": r.paper, "paper_nll": r.paper_nll, "our_last": r.ours, "provenance": r.provenance,
        "verdict": verdict(r.paper_nll, nll, stderr) if budget == "paper" else
        "quick budget: that the recipe runs, not what it reaches (no verdict)",
        "device": device, "versions": versions(),
    }
    text = json.dumps(certificate, indent=1) + "\n"
    atomic_write(out / CERTIFICATE, lambda tmp: Path(tmp).write_text(text))
    return certificate
