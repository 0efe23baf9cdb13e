"""The commands that write files from a run: sample, reconstruct, encode, decode, plot, report, explain."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import NonFiniteEstimateError, VaekitError
from ..evaluation.latents import posterior_summary, read_labels, read_latents, write_latents
from ..evaluation.overflow import blaming_rows, row_named
from ..explain import explain, format_result
from ..files import write_array
from ..parts.distributions import MAX_TEMPERATURE
from ..pictures.figures import MAX_GRID_IMAGES, plot_images, plot_reconstructions, plot_samples
from ..pictures.report import plot_run, write_report
from ..runs.checkpoint import load_run
from ..runs.experiment import labels_for
from ..runs.samplers import draw_codes
from ..runs.saving import to_data_units
from ..training.progress import Progress
from .runs import check_k, own_rows_of, run_with_data

log = logging.getLogger(__name__)


def conditioned(model, cfg, y: torch.Tensor | None):
    """The model with labels y bound (a conditional VAE); a --label for an unconditional one is refused."""
    if y is None:
        return model
    if not cfg.model.conditional:
        raise VaekitError("--label: this model is not conditioned on labels (train with --condition label)")
    return model.given(y)


def check_label(label: int | None, cfg) -> None:
    """--label given: one of the model's classes (checked before any tensor holds it: 10²⁰ is no int64)."""
    classes = cfg.model.condition_classes if cfg.model.conditional else 0
    if label is not None and not 0 <= label < max(classes, 1):
        raise VaekitError(f"--label {label}: " + (f"the model's labels are 0…{classes - 1}" if classes else
                          "this model is not conditioned on labels (train with --condition label)"))


def cmd_sample(args: argparse.Namespace) -> Path:
    """A PNG grid and the same samples as .npy, side by side (`--out` names either)."""
    cfg, model = load_run(args.run)
    check_label(args.label, cfg)
    torch.manual_seed(args.seed)
    if args.label is None and cfg.model.conditional:
        y = torch.arange(args.n) % cfg.model.condition_classes  # every label in turn
    else:
        y = None if args.label is None else torch.full((args.n,), args.label)
    if not 0 < args.temperature:
        raise VaekitError(f"--temperature must be a number > 0, got {args.temperature}")
    if args.temperature > MAX_TEMPERATURE:
        raise VaekitError(f"--temperature {args.temperature:g} is out of range (at most {MAX_TEMPERATURE:g}: it multiplies "
                          "p(z)'s standard deviations, and far beyond that the decoder overflows float32)")
    source = "z ~ p(z)"
    if args.sampler is None:
        x = conditioned(model, cfg, y).sample(args.n, mean=not args.draw, temperature=args.temperature)
    else:  # z from a density fitted on the aggregate posterior (vaekit fit-sampler)
        if args.temperature != 1.0:
            raise VaekitError("--temperature scales p(z); a --sampler draws z from its own fitted density")
        if cfg.model.conditional:
            raise VaekitError("--sampler: a conditional VAE's codes depend on the label; sample it from p(z|y)")
        if args.label is not None:
            raise VaekitError("--label: this model is not conditioned on labels (train with --condition label)")
        z = draw_codes(args.run, args.sampler, args.n, seed=args.seed, latent_size=cfg.model.latent_size)
        with torch.no_grad():
            p_x = model.p_x_given_z(z)
            x = p_x.mean if not args.draw else p_x.sample()
        source = f"z from the fitted {args.sampler} sampler"
    x = to_data_units(cfg, args.run, x)
    out = Path(args.out or Path(args.run) / "samples.png")
    picture, array = out.with_suffix(".png"), out.with_suffix(".npy")
    if out.suffix.lower() not in (".png", ".npy"):
        raise VaekitError(f"--out {out}: name a .png (the grid; the array goes beside it as .npy) or a .npy file")
    replaced = picture.exists() or array.exists()
    shown = slice(0, MAX_GRID_IMAGES)  # the picture shows the first ones, the array holds all
    plot_samples(x[shown], cfg.model.data_shape, picture, mean=not args.draw, source=source,
                 labels=y[shown] if y is not None else None)
    if args.n > MAX_GRID_IMAGES:
        log.info("%s shows the first %d of the %d samples (all are in %s)", picture, MAX_GRID_IMAGES, args.n, array)
    write_array(array, x.numpy().reshape(args.n, *cfg.model.data_shape))
    print(f"wrote {picture} and {array}" + (" (replacing the earlier ones: --out FILE keeps them)" if replaced else ""))
    return picture


def cmd_reconstruct(args: argparse.Namespace) -> Path:
    cfg, model, dataset = run_with_data(args)
    x = dataset.eval_split(args.split)[: args.n]
    y = labels_for(cfg, dataset, args.split)
    y = y[: args.n] if y is not None else None
    named = row_named(getattr(args, "dataset", None) or cfg.data.dataset, x, f"the {args.split} split", dataset.schema)
    with blaming_rows(model, x, named, own_rows_of(args), y):
        x_hat = model.given(y).reconstruct(x) if y is not None else model.reconstruct(x)
    x, x_hat = dataset.restore(x), dataset.restore(x_hat)  # in the data's units
    out = Path(args.out or Path(args.run) / "reconstructions.png")
    plot_reconstructions(x, x_hat, cfg.model.data_shape, out)
    print(f"wrote {out} (the inputs and their reconstructions)")
    return out


def cmd_encode(args: argparse.Namespace) -> Path:
    """Q(z|x)'s mean and standard deviation for every example of a split (or of all), with labels
    where the data have them: the representation, for use elsewhere (`vaekit.evaluation.latents` has the layouts)."""
    cfg, model, dataset = run_with_data(args)
    splits = dataset.present_splits() if args.split == "all" else (args.split,)
    x = torch.cat([dataset.eval_split(s) for s in splits])
    have_labels = all(s in dataset.labels for s in splits) or cfg.model.conditional
    labels = torch.cat([dataset.labels_of(s) for s in splits]) if have_labels else None
    y = labels if cfg.model.conditional else None
    source = getattr(args, "dataset", None) or cfg.data.dataset
    named = row_named(source, x, f"the {'+'.join(splits)} split{'s' if len(splits) > 1 else ''}", dataset.schema)
    with blaming_rows(model, x, named, own_rows_of(args), y):
        mean, std = posterior_summary(model, x, seed=args.seed, y=y, progress=not args.quiet)
        lost = ~(torch.isfinite(mean).all(1) & torch.isfinite(std).all(1) & (std > 0).all(1))  # an overflow (or an
        # underflow to a spread of 0) that torch.distributions let pass
        if bool(lost.any()):
            raise NonFiniteEstimateError(
                f"{source}: example {int(lost.nonzero()[0, 0])} of the {'+'.join(splits)} split{'s' if len(splits) > 1 else ''} "
                f"({int(lost.sum()):,} in all): Q(z|x)'s mean or standard deviation is not finite, or the standard "
                "deviation is 0: " + ("the data lie far outside what the run was trained on, "
                "or its model.safetensors is damaged" if getattr(args, "dataset", None) else
                "the run's model.safetensors is damaged or was trained into overflow: retrain, or resume from a good "
                "checkpoint"), what="Q(z|x)'s mean or spread is not finite, or a spread 0")
    path = write_latents(Path(args.out), mean, std, labels)
    what = "means, standard deviations" + (" and labels" if labels is not None and Path(args.out).suffix.lower() != ".npy" else "")
    print(f"wrote {path}: {what} of {x.shape[0]} examples ({', '.join(splits)}), k = {mean.shape[1]}")
    return path


MAX_DECODED_BYTES = 1 << 30  # decode's output, held in memory to write: the size a latents file may have


def cmd_decode(args: argparse.Namespace) -> Path:
    """E[x|z] for every row of a latents file, in the data's units: .npy (the array) or .png (a grid)."""
    cfg, model = load_run(args.run)
    z = read_latents(Path(args.latents), cfg.model.latent_size)
    check_label(args.label, cfg)
    y = torch.full((z.shape[0],), args.label) if args.label is not None else read_labels(Path(args.latents))
    if cfg.model.conditional and y is None:
        raise VaekitError(f"{args.run} is a conditional VAE: decode with --label K (or latents in an .npz with labels)")
    if y is not None and not cfg.model.conditional:
        log.info("%s: its labels are not used: %s is not conditioned on labels", args.latents, args.run)
        y = None
    if y is not None and len(y) != len(z):
        raise VaekitError(f"{args.latents}: {len(z)} latents beside {len(y)} labels; give one label per row")
    if y is not None and args.label is None and not bool(((y >= 0) & (y < cfg.model.condition_classes)).all()):
        raise VaekitError(f"{args.latents}: labels must lie in 0…{cfg.model.condition_classes - 1} (the model's "
                          f"{cfg.model.condition_classes} classes); got {int(y.min())}…{int(y.max())}")
    if Path(args.out).suffix.lower() == ".png" and z.shape[0] > MAX_GRID_IMAGES:
        raise VaekitError(f"{args.latents}: {z.shape[0]:,} latents are more than a picture shows ({MAX_GRID_IMAGES:,}); "
                          "decode them into a .npy, or fewer into the .png")
    size = z.shape[0] * cfg.model.data_dim * 4  # float32 E[x|z], held whole to write
    if size > MAX_DECODED_BYTES:
        most = MAX_DECODED_BYTES // (cfg.model.data_dim * 4)
        raise VaekitError(f"{args.latents}: {z.shape[0]:,} latents decode to {size / 1e9:.1f} GB of {cfg.model.data_dim} "
                          f"values each, more than vaekit writes at once ({MAX_DECODED_BYTES / 1e9:.1f} GB); decode at "
                          f"most {most:,} rows a file")
    parts = zip(z.split(1000), y.split(1000)) if y is not None else ((zb, None) for zb in z.split(1000))
    decoded = []
    with Progress(z.shape[0], "decoding", enabled=not args.quiet) as bar:
        for zb, yb in parts:
            decoded.append(conditioned(model, cfg, yb).decode(zb))
            bar.update(zb.shape[0])
    x = to_data_units(cfg, args.run, torch.cat(decoded))
    bad = (~torch.isfinite(x)).flatten(1).any(1)
    if bool(bad.any()):  # a latent far beyond the prior's reach (1e38) overflows the decoder or the data's units
        row = int(bad.nonzero()[0])
        raise VaekitError(f"{args.latents}: row {row + 1} (of {len(z)}) decodes to Inf or NaN: its latents (|z| up to "
                          f"{float(z[row].abs().max()):.3g}) lie far beyond where p(z) puts mass; nothing written")
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        plot_images(x, cfg.model.data_shape, out, f"E[x|z] for the {x.shape[0]} latents of {Path(args.latents).name}",
                    n=x.shape[0])
    elif out.suffix.lower() == ".npy":
        write_array(out, x.numpy().reshape(x.shape[0], *cfg.model.data_shape))
    else:
        raise VaekitError(f"--out {out}: name a .npy (the decoded array) or a .png (a grid of them)")
    print(f"wrote {out}: E[x|z] for {x.shape[0]} latents")
    return out


def cmd_plot(args: argparse.Namespace) -> list[Path]:
    paths = plot_run(args.run, args.out, dataset=args.dataset, data_dir=args.data_dir)
    print("wrote " + ", ".join(str(p) for p in paths))
    return paths


def cmd_report(args: argparse.Namespace) -> Path:
    check_k(args.k)
    log.info("report: evaluating the test split afresh at k = %d importance samples (--k; `vaekit evaluate RUN --k %d` "
             "gives the same numbers), then drawing every picture", args.k, args.k)
    path = write_report(args.run, k=args.k, dataset=args.dataset, data_dir=args.data_dir,
                        progress=not args.quiet)
    print(f"wrote {path}")
    return path


def cmd_explain(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out or f"explain-{args.topic}")
    result = explain(args.topic, out, progress=not args.quiet)
    print(json.dumps(result) if args.json else format_result(result))
    if not args.json:
        print(f"figure in {out}")
    return result
