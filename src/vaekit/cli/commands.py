"""What each subcommand does: read a run, call the library, print the result."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from ..data import EVAL_BINARIZATION_SEED, resolve_binarize
from ..disentanglement.scoring import check_metrics, score_model
from ..errors import VaekitError
from ..evaluation.checks import evaluation_warnings
from ..evaluation.diagnostics import amortization_gap, collapse_warning, gap_summary
from ..evaluation.estimates import evaluate_all, latent_statistics
from ..evaluation.overflow import blaming_rows, row_named
from ..evaluation.quality import PR_NEIGHBOURS
from ..parts.likelihoods import likelihood_support
from ..runs.checkpoint import load_config, versions
from ..runs.experiment import labels_for, train_run
from ..runs.samplers import fitted_path, sample_quality
from ..runs.weights_kept import weights_epoch, weights_sha256
from ..tracking.common import each_epoch, log_evaluation, training_tracker
from ..tracking.tensorboard import TensorBoardLogger
from ..training.distributed import launched, resolve_device
from .flags import build_config, given_settings
from .runs import check_k, own_rows_of, run_with_data

log = logging.getLogger("vaekit")


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    """Train; under torchrun every rank runs this and rank 0 alone writes and prints."""
    cfg = build_config(args)
    device = resolve_device(args.device)
    with launched(device) as ctx:
        if not ctx.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        tracker = training_tracker(args.track, args.out) if ctx.is_main else None  # MLflow, W&B: rank 0
        board = None
        if args.tensorboard and ctx.is_main:
            board = TensorBoardLogger(Path(args.out) / "tensorboard")
        try:  # a collective broken by a rank that died: one line (`launched`)
            result = train_run(cfg, args.out, resume=args.resume, progress=not args.quiet, ctx=ctx,
                               device=device, on_epoch=each_epoch(board, tracker), given=given_settings(args),
                               words=("--resume", "--out"))
        finally:
            if board is not None:
                board.close()
            if tracker is not None:
                tracker.close()  # the run's files and its end; never raises
    last = result.history[-1] if result.history else {}
    if ctx.is_main and last:
        if "val/elbo" in last:
            epoch = result.weights_epoch if result.config.train.patience else None  # the weights kept: the best's
            best = next((r for r in result.history if r.get("epoch") == epoch and "val/elbo" in r), None)
            v = best["val/elbo"] if best else 0.0  # as metrics.jsonl has it (a display: the state decided)
            value = f"{v:.3f}" if isinstance(v, (int, float)) and abs(v) < 1e12 else f"{v:.4g}"
            kept = f" (epoch {epoch}'s weights kept: {value})" if best and best is not last else ""
            print(f"trained {last['epoch']} epochs: val ELBO {last['val/elbo']:.3f} nats{kept}; run directory {args.out}")
            _report_latents(result)
        else:
            print(f"trained {last['epoch']} epochs: train ELBO {last['train/elbo']:.3f} nats (no validation split: "
                  f"--val-size 0); run directory {args.out}")
    return last


def _report_latents(result) -> None:
    """Active units and KL per dimension on the validation split, with a warning on posterior collapse."""
    stats = latent_statistics(result.model.cpu(), result.dataset.eval_split("val"),
                              y=labels_for(result.config, result.dataset, "val"))
    print(f"active units {stats['active_units']} of {stats['latent_dim']}; KL per dimension (nats) "
          + format_kl_per_dim(stats["kl_per_dim"]))
    warning = collapse_warning(stats)
    if warning:
        log.warning("%s", warning)


LAYER_KEYS = ("layer_sizes", "active_units_per_layer", "kl_per_layer")  # a model with stochastic layers


def format_kl_per_dim(kl_per_dim: list[float] | None) -> str:
    if kl_per_dim is None:
        return "n/a (the prior is not a product of 1-D Gaussians: the KL does not split by dimension)"
    return " ".join(f"{v:.2f}" for v in kl_per_dim)


def format_learned(name: str, v: dict[str, float]) -> str:
    """A learned likelihood parameter: its value, or its median and range over its values."""
    if v["count"] == 1:
        return f"{name} = {v['median']:.4g}"
    return f"{name}: median {v['median']:.4g}, from {v['min']:.4g} to {v['max']:.4g} over {v['count']} values"


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """ELBO and log-likelihood with both kinds of error, the checks on them, and (--json) the protocol."""
    if args.elbo_samples <= 0:
        raise VaekitError(f"--elbo-samples must be > 0, got {args.elbo_samples}")
    check_k(args.k)
    if args.n is not None and args.n < 2:  # --n ≤ 0: check_args
        raise VaekitError(f"--n must be at least 2: active units are a variance over the examples, undefined for one; "
                          f"got {args.n}")
    if args.sampler is not None and args.samples is None:
        raise VaekitError("--sampler is used by --samples N (the quality of N samples); give --samples too")
    if args.samples is not None and args.samples <= PR_NEIGHBOURS:
        raise VaekitError(f"--samples {args.samples}: sample quality needs at least {PR_NEIGHBOURS + 1} samples")
    if args.sampler is not None:  # before the evaluation it would come after
        if load_config(args.run).model.conditional:
            raise VaekitError("--sampler: a conditional VAE's codes depend on the label; its samples come from p(z|y)")
        fitted_path(args.run, args.sampler)
    cfg, model, dataset = run_with_data(args)
    device = resolve_device(args.device)
    x, y = dataset.eval_split(args.split), labels_for(cfg, dataset, args.split)
    total = x.shape[0]
    if args.n is not None:  # a quick look: the first N examples, in the split's stored order
        x, y = x[: args.n], (y[: args.n] if y is not None else None)
    model, x, y = model.to(device), x.to(device), (y.to(device) if y is not None else None)
    if y is not None and getattr(args, "amortization_gap", False):
        raise VaekitError("--amortization-gap is not computed for a conditional VAE")
    k = args.k or cfg.train.eval_k
    named = row_named(getattr(args, "dataset", None) or cfg.data.dataset, x, f"the {args.split} split", dataset.schema)
    with launched(device) as ctx, blaming_rows(model, x, named, own_rows_of(args), y):  # ranks share the batches, sums exact
        metrics = evaluate_all(model, x, k=k, seed=args.seed, ctx=ctx, elbo_samples=args.elbo_samples,
                               progress=not args.quiet, y=y)
    metrics["split"], metrics["split_size"] = args.split, total
    if not ctx.is_main:
        return metrics
    metrics["protocol"] = evaluation_protocol(cfg, args, metrics, device)
    if getattr(args, "amortization_gap", False):
        metrics.update(evaluate_amortization_gap(model, x, args.seed))
    if args.samples is not None:  # sample quality in a classifier's (or principal components') feature space
        metrics["sample_quality"] = sample_quality(args.run, args.samples, args.sampler, args.seed, dataset=dataset)
    if args.json:
        for warning in evaluation_warnings(metrics):  # stdout stays one JSON object
            log.warning("warning: %s", warning)
        print(json.dumps(finite_or_null(metrics)))
    else:
        print_evaluation(metrics)
        for warning in evaluation_warnings(metrics):
            print(f"warning: {warning}")
        print_diagnostics(metrics)
        if "sample_quality" in metrics:
            print_sample_quality(metrics["sample_quality"])
    log_evaluation(args.run, finite_or_null(metrics), getattr(args, "track", "auto"))  # RUN/tracking.json's run
    return metrics


def print_evaluation(m: dict[str, Any]) -> None:
    """The numbers as text; each ± says which error it is (another seed, or another test set)."""
    def pm(se: float) -> str:
        return f"± {se:.3f}" if math.isfinite(se) else "± n/a"

    part = f": the first {m['n']} of {m['split_size']}, --n" if m["n"] < m["split_size"] else ""
    print(f"{'split':<16}{m['split']} (n={m['n']}{part})")
    print(f"{'elbo':<16}{m['elbo']:10.3f} nats {pm(m['elbo_mc_stderr'])} Monte Carlo "
          f"({m['elbo_samples']} draws of z per example)")
    for key in ("reconstruction", "kl"):
        print(f"{key:<16}{m[key]:10.3f} nats")
    print(f"{'log_likelihood':<16}{m['log_likelihood']:10.3f} nats {pm(m['log_likelihood_mc_stderr'])} Monte Carlo "
          f"(k = {m['k']} importance samples; delta method)")
    print(f"{'':<26}{pm(m['log_likelihood_stderr'])} over examples (standard error of the mean over the "
          f"{m['n']} {m['split']} examples: another test set)")
    print(f"{'ESS':<16}median {m['ess_median']:.1f}, min {m['ess_min']:.1f} of k = {m['k']} "
          "(effective sample size of the importance weights)")
    note = {"ok": "ELBO <= log-likelihood within Monte Carlo error", "violated": "see the warning below",
            "unchecked": "no Monte Carlo error from one ELBO draw or k = 1"}[m["bound_check"]]
    print(f"{'bound check':<16}{m['bound_check']} ({note})")
    print(f"{'NLL':<16}{m['nll']:10.3f} nats = {m['bits_per_dim']:.4f} bits/dim")
    print(f"{'active units':<16}{m['active_units']:10d} of {m['latent_dim']} (Cov_x E_q[z_j] > 0.01)")
    for layer, (size, active, kl) in enumerate(zip(*(m.get(key, ()) for key in LAYER_KEYS)), 1):
        print(f"{f'  layer z{layer}':<16}{active:10d} of {size} active, KL {kl:.3f} nats (Monte Carlo, one draw)")
    print(f"{'KL per dim':<16}" + format_kl_per_dim(m["kl_per_dim"]))
    for name, v in m.get("likelihood_learned", {}).items():
        print(f"{'p(x|z) learned':<16}{format_learned(name, v)}")
    p = m["protocol"]
    drawn = f" (seed {p['binarization_seed']})" if p["binarization_seed"] is not None else ""
    epoch = f", weights of epoch {p['weights_epoch']}" if p.get("weights_epoch") is not None else ""
    print(f"{'protocol':<16}seed {p['seed']}, binarization {p['binarization']}{drawn}, model config sha256 "
          f"{p['model_config_sha256'][:12]}…{epoch}, vaekit {p['versions']['vaekit']}, torch {p['versions']['torch']}")


def evaluation_protocol(cfg, args: argparse.Namespace, m: dict[str, Any], device: str) -> dict[str, Any]:
    """How the numbers were made, enough to repeat them or to see why two differ: the split and its
    size, k, ELBO draws, seed, the evaluation binarization and its seed (dynamic: one fixed draw of the
    split; static: the stored draw), sha256 of the model config's canonical JSON (sorted keys, no
    spaces) and of the weights file, device and versions."""
    binarization = resolve_binarize(cfg.data.binarize, likelihood_support(cfg.model.likelihood))
    canonical = json.dumps(cfg.to_dict()["model"], sort_keys=True, separators=(",", ":"))
    weights = weights_sha256(Path(args.run))
    return {"split": args.split, "n": m["n"], "split_size": m["split_size"], "k": m["k"], "elbo_samples": m["elbo_samples"], "seed": args.seed,
            "dataset": cfg.data.dataset, "binarization": binarization,
            "binarization_seed": {"dynamic": EVAL_BINARIZATION_SEED, "static": cfg.data.split_seed}.get(binarization),
            "model_config_sha256": hashlib.sha256(canonical.encode()).hexdigest(), "weights_sha256": weights,
            "weights_epoch": weights_epoch(Path(args.run)), "device": device, "versions": versions()}


def finite_or_null(value: Any) -> Any:
    """NaN and ±Inf as null (JSON has no such numbers), through dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(v) for key, v in value.items()}
    if isinstance(value, list):
        return [finite_or_null(v) for v in value]
    return value


def cmd_disentanglement(args: argparse.Namespace) -> dict[str, float]:
    """The disentanglement metrics of the run's posterior means against the data's factors."""
    names = check_metrics([m.strip() for m in args.metrics.split(",") if m.strip()])
    cfg, model, dataset = run_with_data(args)
    splits = dataset.present_splits() if args.split == "all" else (args.split,)
    if not dataset.factors:
        raise VaekitError(f"dataset {dataset.name!r} has no factors to score codes against: use --dataset shapes2d or "
                          "an .npz with 'factors' (and --dataset PATH to point the run at it)")
    x = torch.cat([dataset.eval_split(s) for s in splits])
    factors = torch.cat([dataset.factors[s] for s in splits])
    y = torch.cat([labels_for(cfg, dataset, s) for s in splits]) if cfg.model.conditional else None
    scores = score_model(model, x, factors, names, seed=args.seed, y=y, progress=not args.quiet)
    if args.json:
        print(json.dumps(finite_or_null({"split": args.split, "n": int(x.shape[0]), "factors": list(dataset.factor_names),
                                         **scores})))
    else:
        print(f"{'split':<22}{args.split} (n={x.shape[0]}); factors {', '.join(dataset.factor_names)}")
        for name, value in scores.items():
            print(f"{name:<22}{value:.4f}")
    return scores


def evaluate_amortization_gap(model, x: torch.Tensor, seed: int) -> dict[str, float]:
    """`evaluate --amortization-gap`: mean encoder ELBO, per-example optimized ELBO and their gap."""
    return gap_summary(amortization_gap(model, x, seed=seed))


def print_sample_quality(q: dict[str, Any]) -> None:
    print(f"{'sample quality':<16}{q['samples']} samples E[x|z], z from {q['sampler']}, against as many test examples, "
          f"in {q['features']}")
    print(f"{'':<16}Fréchet distance {q['frechet_distance']:.3f}, precision {q['precision']:.3f}, recall "
          f"{q['recall']:.3f} (training examples in their place: {q['reference_frechet_distance']:.3f}, "
          f"{q['reference_precision']:.3f}, {q['reference_recall']:.3f})")


def print_diagnostics(metrics: dict[str, Any]) -> None:
    """The amortization gap (when computed) and a posterior-collapse warning (when most units are inactive)."""
    if "amortization_gap" in metrics:
        print(f"{'encoder ELBO':<16}{metrics['encoder_elbo']:10.3f} nats (encoder's Q, 256 samples)")
        print(f"{'optimized ELBO':<16}{metrics['optimized_elbo']:10.3f} nats (diagonal Q fitted per example)")
        print(f"{'amortization gap':<16}{metrics['amortization_gap']:10.3f} nats (Cremer et al. 2018)")
    warning = collapse_warning(metrics)
    if warning:
        print(f"warning: {warning}")
