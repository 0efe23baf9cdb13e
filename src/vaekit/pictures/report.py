"""A run's pictures (`plot_run`) and one self-contained HTML page: the config, the numbers, every picture.

    from vaekit.pictures.report import plot_run, write_report
    plot_run("runs/digits")                    # PNGs written into the run directory
    write_report("runs/digits", k=1000)        # runs/digits/report.html

Pictures are embedded as base64 `data:` URIs and the page loads nothing from the network, so the
one file can be mailed, archived or opened offline. Numbers are nats per example on the test split.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..disentanglement.scoring import captured_factors, have_sklearn, score_model
from ..evaluation.checks import evaluation_warnings
from ..evaluation.diagnostics import collapse_warning
from ..evaluation.estimates import evaluate_all, latent_statistics, marginals
from ..evaluation.tables import ColumnQuality, column_quality
from ..files import atomic_write, make_dirs
from ..rng import forked_rng
from ..runs.checkpoint import load_config, load_run
from ..runs.experiment import labels_for, load_data
from ..runs.history import read_metrics
from ..runs.opening import changed_line, point_data, same_source
from .figures import (
    plot_columns,
    plot_correlations,
    plot_curves,
    plot_images,
    plot_interpolations,
    plot_latent_map,
    plot_manifold,
    plot_marginals,
    plot_reconstructions,
    plot_samples,
    plot_traversals,
)

log = logging.getLogger(__name__)

REPORT = "report.html"
CAPTIONS = {
    "samples": "E[x|z] for z ~ p(z): what the model generates (vector data: a heatmap beside the data's first rows).",
    "reconstructions": ("Test inputs (rows labelled input), each row above its reconstructions E[x|z = E_Q[z|x]] "
                        "(vector data: input and reconstruction heatmaps side by side)."),
    "latent_map": "Posterior means of the test split (PCA to 2-D when latent_dim > 2), coloured by label where the data "
                  "have labels.",
    "columns": "A table's columns: each column's hidden test cells, imputed against true (numbers) or as a confusion "
               "matrix (levels).",
    "manifold": "E[x|z] over a grid of the prior's quantiles of the 2-D latent space (Kingma & Welling 2013, fig. 4).",
    "traversals": "One latent varied at a time from a test input's posterior mean; rows by decreasing KL.",
    "interpolations": "Decoded straight lines between the posterior means of two test inputs (shown at the ends).",
    "marginals": "Vector data: a histogram per dimension (the first 16), the test split against draws x ~ p(x).",
    "correlations": "Vector data: correlations between dimensions, the test split beside draws x ~ p(x).",
    "curves": ("Per epoch, nats per example: every train (solid) and validation (dashed) series of metrics.jsonl; "
               "the bounds (ELBO, IWAE L_k) share the first panel; the y-axis fits the epochs after the first tenth "
               "(the first epochs run off it)."),
}
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:1em;overflow:auto}
figure{margin:1.5em 0}img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}
.warning{background:#fff3cd;border:1px solid #e0c36c;padding:.7em}"""


def run_metrics(run_dir: str | Path, k: int = 100, split: str = "test", seed: int = 0,
                dataset: str | None = None, data_dir: str | None = None, progress: bool = False,
                warn: bool = True) -> dict[str, Any]:
    """The numbers of `vaekit evaluate`: ELBO terms, log-likelihood (k importance samples) with both
    kinds of error, ESS, the bound check, NLL, bits/dim, active units and per-dimension KL, on `split`
    (the data found as `opening.point_data` says, which `warn`s where they are the run's file changed since)."""
    cfg, model = load_run(run_dir)
    cfg = point_data(cfg, dataset, data_dir, warn)
    data = load_data(cfg, run_dir)
    x, y = data.eval_split(split), labels_for(cfg, data, split)
    metrics = evaluate_all(model, x, k=k, seed=seed, progress=progress, y=y)
    if split in data.factors and have_sklearn():
        metrics["disentanglement"] = score_model(model, x, data.factors[split], seed=seed, y=y, skip=True)
    metrics.update(split=split, latent_dim=cfg.model.latent_size, data=cfg.data.dataset)
    return metrics


def write_report(run_dir: str | Path, k: int = 100, dataset: str | None = None, data_dir: str | None = None,
                 progress: bool = False) -> Path:
    """Evaluate the run (`progress`: as it goes), draw its pictures (`plot_run`), write run_dir/report.html."""
    run_dir = Path(run_dir)
    saved = load_config(run_dir)
    there = point_data(saved, dataset, data_dir, warn=False).data.dataset
    changed = changed_line(saved, there)
    if changed:  # said first, and on the page beside its numbers
        log.warning("%s: the report is of the data as they are now, not of the rows the run was trained and validated on",
                    changed)
    metrics = run_metrics(run_dir, k=k, dataset=dataset, data_dir=data_dir, progress=progress, warn=False)
    quality = table_quality(run_dir, dataset, data_dir) if saved.model.columns is not None else None
    pictures = plot_run(run_dir, dataset=dataset, data_dir=data_dir, quality=quality, warn=False)
    captions = {name: caption for name, (_, caption) in part_pictures(load_run(run_dir)[1]).items()}
    parts = [f"<h1>vaekit run {html.escape(run_dir.resolve().name)}</h1>"]
    held = changed and f"{changed}: these numbers and pictures are of the data as they are now, not of the rows the " \
        "run was trained and validated on"
    other = not changed and not same_source(saved.data, there) and \
        f"these numbers and pictures are of {there}, not of the data the run was trained on ({saved.data.dataset})"
    for warning in [held, other, *evaluation_warnings(metrics), collapse_warning(metrics)]:
        if warning:
            parts.append(f'<p class="warning">{html.escape(warning)}</p>')
    parts += [metrics_table(metrics), kl_table(metrics["kl_per_dim"])]
    if "disentanglement" in metrics:
        parts.append(scores_table(metrics["disentanglement"]))
    if quality is not None:
        parts.append(columns_table(quality))
    parts += [figure_html(p, captions.get(p.stem)) for p in pictures]
    config = json.dumps(saved.to_dict(), indent=2)
    parts.append(f"<h2>Config</h2><pre>{html.escape(config, quote=False)}</pre>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>vaekit report: {html.escape(run_dir.name)}</title><style>{STYLE}</style></head>"
            "<body>\n" + "\n".join(parts) + "\n</body></html>\n")
    out = run_dir / REPORT
    atomic_write(out, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return out


SEED = 0  # every picture's randomness (prior draws, which inputs are shown)
MAX_MAP_POINTS = 5000  # a scatter of more points says no more and slows the PNG down
MAX_TRAVERSAL_DIMS = 10  # rows of the traversal figure: the dimensions with the largest KL
DISTRIBUTION_SAMPLES = 2000  # draws x ~ p(x) for the histograms and correlations of vector data


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None, split: str = "test",
             dataset: str | None = None, data_dir: str | None = None,
             quality: list[ColumnQuality] | None = None, warn: bool = True) -> list[Path]:
    """Write every picture of the run in `run_dir` (default: into it) and return their paths.

    samples.png, reconstructions.png, latent_map.png, manifold.png (latent_dim = 2, images only),
    traversals.png, interpolations.png; for vector data (data_shape (D,)) also marginals.png and
    correlations.png (the split against draws x ~ p(x)); NAME.png for each picture a part offers of
    itself (`part_pictures`), curves.png (when metrics.jsonl has lines); a conditional VAE gets
    `conditional_pictures` instead of the first six; a table gets latent_map.png and columns.png (`quality`:
    its columns' measures when the caller has them, else measured here). Every model call is made here;
    `figures` draws. Needs matplotlib (the `plot` extra). `warn`: as `opening.point_data`.
    """
    cfg, model = load_run(run_dir)
    cfg = point_data(cfg, dataset, data_dir, warn)
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    make_dirs(out)  # an existing file there: one line, not a traceback
    dataset = load_data(cfg, run_dir)
    x, labels = dataset.eval_split(split), dataset.labels.get(split)
    shape = tuple(cfg.model.data_shape)
    if cfg.model.columns is not None:  # a table: its columns, not strips of codes
        quality = quality or column_quality(model, x, dataset.split("train"), seed=SEED)
        paths = table_pictures(model, x, labels, quality, cfg.model.columns, out)
    elif getattr(model, "condition", None) is not None:
        paths = conditional_pictures(model, x, dataset.labels_of(split), shape, out)
    else:
        paths = pictures(model, x, labels, shape, out, split, dataset.factors.get(split), dataset.factor_names)
    paths += [plot_images(images, shape, out / f"{name}.png") for name, (images, _) in part_pictures(model).items()]
    metrics = read_metrics(Path(run_dir))
    if metrics:
        paths.append(plot_curves(metrics, out / "curves.png"))
    return paths


def conditional_pictures(model, x: torch.Tensor, labels: torch.Tensor, shape: tuple[int, ...], out: Path,
                         per_label: int = 8) -> list[Path]:
    """A conditional VAE's pictures: samples.png with one row per label (E[x|z, y], z ~ p(z|y)),
    reconstructions.png and latent_map.png of the split, each input with its own label."""
    classes = model.condition.classes
    with forked_rng(next(model.parameters()).device), torch.no_grad():
        torch.manual_seed(SEED)
        y = torch.arange(classes).repeat_interleave(per_label)
        rows = [f"y = {c}" for c in range(classes)]
        columns = [f"draw {i + 1}" for i in range(per_label)]
        paths = [plot_traversals(model.given(y).sample(len(y)), shape, out / "samples.png",
                                 "samples: one row per label y, E[x|z, y] for z ~ p(z|y)", rows, columns)]
        paths.append(plot_reconstructions(x[:32], model.given(labels[:32]).reconstruct(x[:32]), shape,
                                          out / "reconstructions.png"))
        n = min(len(x), MAX_MAP_POINTS)
        means = torch.cat([model.given(yb).encode(xb) for xb, yb in zip(x[:n].split(1000), labels[:n].split(1000))])
        points, axis_names = project_2d(means.double())
        paths.append(plot_latent_map(points, axis_names, labels[:n], out / "latent_map.png"))
    return paths


def pictures(model, x: torch.Tensor, labels: torch.Tensor | None, shape: tuple[int, ...], out: Path,
             split: str, factors: torch.Tensor | None = None, factor_names: tuple[str, ...] = ()) -> list[Path]:
    """An unconditional model's pictures (see `plot_run`); with ground-truth factors of x, each traversal
    row says which factor its latent captures most (`scoring.captured_factors`)."""
    vectors = len(shape) == 1
    with forked_rng(next(model.parameters()).device), torch.no_grad():
        torch.manual_seed(SEED)  # the draws below, in this order, are the pictures' content: keep the order
        paths = [plot_samples(model.sample(64, mean=True), shape, out / "samples.png", data=x if vectors else None),
                 plot_reconstructions(x[:32], model.reconstruct(x[:32]), shape, out / "reconstructions.png")]
        n = min(len(x), MAX_MAP_POINTS)
        means = posterior_means(model, x[:n])
        points, axis_names = project_2d(means.double())
        paths.append(plot_latent_map(points, axis_names, None if labels is None else labels[:n], out / "latent_map.png"))
        if model.latent_dim == 2 and not vectors:  # a 2-D sheet of 1×D strips shows nothing
            paths.append(plot_manifold(*manifold(model), shape, out / "manifold.png"))
        captures = captured_factors(means, factors[:n], factor_names) if factors is not None else None
        images, title, rows, columns = traversals(model, x, captures=captures)
        paths.append(plot_traversals(images, shape, out / "traversals.png", title, rows, columns))
        paths.append(plot_interpolations(*interpolations(model, x), shape, out / "interpolations.png"))
        if vectors:
            draws = {f"{split} data (n = {len(x)})": x,
                     f"samples x ~ p(x) (n = {DISTRIBUTION_SAMPLES})": model.sample(DISTRIBUTION_SAMPLES, mean=False)}
            paths += [plot_marginals(draws, out / "marginals.png"), plot_correlations(draws, out / "correlations.png")]
    return paths


def table_quality(run_dir: str | Path, dataset: str | None = None, data_dir: str | None = None,
                  split: str = "test") -> list[ColumnQuality]:
    """Each column's reconstruction and imputation on `split` (`evaluation.tables.column_quality`)."""
    cfg, model = load_run(run_dir)
    data = load_data(point_data(cfg, dataset, data_dir, warn=False), run_dir)  # its caller warns
    return column_quality(model, data.eval_split(split), data.split("train"), seed=SEED)


def table_pictures(model, x: torch.Tensor, labels: torch.Tensor | None, quality: list[ColumnQuality], schema,
                   out: Path) -> list[Path]:
    """A table's pictures: latent_map.png and columns.png (each column's hidden cells, imputed against true)."""
    with forked_rng(next(model.parameters()).device), torch.no_grad():
        n = min(len(x), MAX_MAP_POINTS)
        points, axis_names = project_2d(posterior_means(model, x[:n]).double())
        paths = [plot_latent_map(points, axis_names, None if labels is None else labels[:n], out / "latent_map.png")]
    panels = [(q.name, c.levels if q.measure == "accuracy" else (), *q.pairs) for q, c in zip(quality, schema.columns)]
    return [*paths, plot_columns(panels, out / "columns.png")]


def columns_table(quality: list[ColumnQuality]) -> str:
    """The columns' reconstruction and imputation quality as an HTML table."""
    rows = "".join(f"<tr><td>{html.escape(q.name)}</td><td>{q.kind}</td><td>{q.observed}</td><td>{q.measure}</td>"
                   f"<td>{q.reconstruction:.3f}</td><td>{q.imputation:.3f}</td><td>{q.baseline:.3f}</td></tr>"
                   for q in quality)
    return ("<h2>Columns</h2><p>Reconstruction: E[x|z] at Q's mean with the row whole. Imputation: 20% of the observed "
            "cells hidden (seeded) and imputed (k = 200); baseline: the training mean or mode in each hidden cell. "
            "RMSE in units of the column's training sd, or accuracy.</p><table><tr><th>column</th><th>kind</th>"
            "<th>observed</th><th>measure</th><th>reconstruction</th><th>imputation</th><th>baseline</th></tr>"
            f"{rows}</table>")


def posterior_means(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """E_Q[z|x] for every row of x: [N, k]."""
    return torch.cat([model.encode(xb) for xb in x.split(batch_size)])


def project_2d(z: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """[N, k] → ([N, 2], axis names): the identity for k = 2, PCA for k > 2, jittered for k = 1."""
    k = z.shape[1]
    if k == 2:
        return z, ["z₁", "z₂"]
    if k == 1:  # a strip: the vertical spread only keeps points apart
        return torch.cat([z, 0.1 * torch.randn_like(z)], 1), ["z₁", "(jitter)"]
    centred = z - z.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    share = (s**2 / (s**2).sum()).tolist()
    return centred @ vh[:2].T, [f"PC{i + 1} ({100 * share[i]:.0f}% of variance)" for i in range(2)]


def prior_quantiles(model, levels: torch.Tensor, samples: int = 20_000) -> torch.Tensor:
    """Quantiles of each marginal p(z_j) at `levels`: [len(levels), k]. Exact (icdf) for a Gaussian
    prior, else empirical from `samples` draws (a mixture, say)."""
    p_z = model.prior()
    m = marginals(p_z)
    if m is not None:
        return torch.distributions.Normal(m.base_dist.loc, m.base_dist.scale).icdf(levels[:, None])
    return torch.quantile(p_z.sample((samples,)), levels.to(torch.float32), dim=0)


def manifold(model, n: int = 15) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """latent_dim = 2: (E[x|z] [n·n, D] on an n×n grid of the prior's quantiles, row-major with z₂
    decreasing down the rows, the z₁ values [n], the z₂ values [n]) (Kingma & Welling 2013, fig. 4)."""
    q = prior_quantiles(model, torch.linspace(0.5 / n, 1 - 0.5 / n, n))
    z1, z2 = torch.meshgrid(q[:, 0], q[:, 1].flip(0), indexing="xy")  # z₂ grows upwards, as on a plot
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], 1)
    return model.decode(z), q[:, 0], q[:, 1].flip(0)


def traversals(model, x: torch.Tensor, steps: int = 9, span: float = 3.0, captures: list[str] | None = None):
    """(images [rows·steps, D], title, row labels, column labels): one z_j varied from the posterior mean
    of x[0] over the prior's quantiles at ±`span` standard deviations (±3 for N(0, 1)); rows by decreasing
    KL(Q(z_j|x) ‖ p(z_j)), or by decreasing activity Cov_x E_Q[z_j] where the KL does not split by
    dimension (a mixture prior); `captures[j]`, the factor z_j captures most, added to its row's label."""
    stats = latent_statistics(model, x)
    by_kl = stats["kl_per_dim"] is not None
    score = torch.tensor(stats["kl_per_dim"] if by_kl else stats["unit_activity"])
    order = score.argsort(descending=True)[:MAX_TRAVERSAL_DIMS]
    z0 = model.encode(x[:1])[0]
    levels = torch.distributions.Normal(0.0, 1.0).cdf(torch.linspace(-span, span, steps))
    values = prior_quantiles(model, levels)  # [steps, k]
    z = z0.repeat(len(order), steps, 1)
    z[torch.arange(len(order)), :, order] = values[:, order].T  # row r sweeps dimension order[r]
    images = model.decode(z.reshape(-1, z0.shape[0]))
    unit = "nats" if by_kl else "activity"
    rows = [f"z{j + 1}: {score[j].item():.2f} {unit}" + (f"\n{captures[j]}" if captures else "") for j in order.tolist()]
    columns = [f"{v:+.1f}σ" for v in torch.linspace(-span, span, steps).tolist()]
    title = ("traversals: one latent varied over p(z_j)'s quantiles, rows by "
             + ("KL(Q(z_j|x) ‖ p(z_j))" if by_kl else "activity Cov_x E_Q[z_j]"))
    return images, title, rows, columns


def interpolations(model, x: torch.Tensor, pairs: int = 6, steps: int = 8):
    """(a [P, D], E[x|z] [P, steps, D] along the line between the posterior means of a and b, b [P, D])
    for P random pairs of rows of x."""
    idx = torch.randperm(len(x))[: 2 * pairs]
    pairs = len(idx) // 2
    a, b = x[idx[:pairs]], x[idx[pairs : 2 * pairs]]
    za, zb = model.encode(a), model.encode(b)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    return a, model.decode(za[:, None] + t * (zb - za)[:, None]), b


def part_pictures(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, str]]:
    """{name: (images [N, D] in data space, caption)} from every part of the model with a `pictures()`
    method (a prior that learns inputs in data space, say): drawn here without knowing the family."""
    found: dict[str, tuple[torch.Tensor, str]] = {}
    for part in model.children():
        offer = getattr(part, "pictures", None)
        if callable(offer):
            found.update(offer())
    return found


def metrics_table(m: dict[str, Any]) -> str:
    """The headline numbers; the log-likelihood is the importance-sampled bound of Burda et al. (2016)."""
    rows = [
        ("ELBO", f"{m['elbo']:.3f}", (f"nats; = reconstruction − KL; {m['elbo_samples']} draws of z per example, "
                                      f"Monte Carlo standard error {m['elbo_mc_stderr']:.4f}")),
        ("reconstruction E_Q[log p(x|z)]", f"{m['reconstruction']:.3f}", "nats"),
        ("KL(Q(z|x) ‖ p(z))", f"{m['kl']:.3f}", "nats"),
        ("log-likelihood", f"{m['log_likelihood']:.3f} ± {m['log_likelihood_stderr']:.3f}",
         (f"nats, k = {m['k']} importance samples; ± standard error of the mean over the {m['n']} examples "
          "(another test set would move it this much)")),
        ("Monte Carlo standard error", f"{m['log_likelihood_mc_stderr']:.4f}",
         "nats: of the log-likelihood on these examples (another seed would move it this much; delta method)"),
        ("effective sample size", f"median {m['ess_median']:.1f}, min {m['ess_min']:.1f}",
         f"of the k = {m['k']} importance weights, (Σw)²/Σw² per example"),
        ("bound check", m["bound_check"], "ELBO ≤ log-likelihood within 4 combined Monte Carlo standard errors"),
        ("NLL", f"{m['nll']:.3f}", "nats = −log-likelihood"),
        ("bits/dim", f"{m['bits_per_dim']:.4f}", "NLL / (D log 2)"),
        ("active units", f"{m['active_units']} of {m['latent_dim']}", "Cov_x E_Q[z_j] > 0.01 (Burda et al. 2016)"),
    ]
    for name, v in m.get("likelihood_learned", {}).items():
        value = (f"{v['median']:.4g}" if v["count"] == 1 else
                 f"median {v['median']:.4g} ({v['min']:.4g} to {v['max']:.4g})")
        note = f"over {v['count']} value(s), in the units the model sees (standardized where the run standardizes)"
        rows.append((f"p(x|z)'s learned {name}", value, note))
    for layer, (size, active, kl) in enumerate(zip(m.get("layer_sizes", ()), m.get("active_units_per_layer", ()),
                                                   m.get("kl_per_layer", ())), 1):
        rows.append((f"layer z{layer}", f"{active} of {size} active, KL {kl:.3f} nats",
                     "E_Q[log Q(z_l|·) − log p(z_l|·)], one draw of z per example"))
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
                   for a, b, c in rows)
    return (f"<h2>Metrics ({html.escape(m['split'])} split of {html.escape(str(m.get('data', '?')))}, n = {m['n']})</h2>"
            f"<table><tr><th>quantity</th><th>value</th><th>note</th></tr>{body}</table>")


def scores_table(scores: dict[str, float]) -> str:
    """The disentanglement metrics of the posterior means against the data's factors (`disentanglement.scoring`)."""
    body = "".join(f"<tr><td>{html.escape(name)}</td><td>{value:.4f}</td></tr>" if isinstance(value, float) else
                   f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td></tr>" for name, value in scores.items())
    return ("<h2>Disentanglement (the same split, against the data's factors)</h2>"
            f"<table><tr><th>metric</th><th>value</th></tr>{body}</table>")


def kl_table(kl_per_dim: list[float] | None) -> str:
    """KL(Q(z_j|x) ‖ p(z_j)) per latent dimension, averaged over the split; the row sums to the KL term
    for a diagonal Q and prior. A note where the KL does not split by dimension."""
    if kl_per_dim is None:
        return ("<h2>KL per latent dimension</h2><p>Not defined for this model: the prior is not a product of "
                "one-dimensional Gaussians (e.g. a mixture), so the KL does not split by dimension.</p>")
    head = "".join(f"<th>z{j + 1}</th>" for j in range(len(kl_per_dim)))
    cells = "".join(f"<td>{v:.3f}</td>" for v in kl_per_dim)
    return f"<h2>KL per latent dimension (nats)</h2><table><tr>{head}</tr><tr>{cells}</tr></table>"


def figure_html(path: Path, caption: str | None = None) -> str:
    """A picture as an <img> with a base64 data URI (no external file, no network) and its caption
    (default: CAPTIONS' line for its name)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    caption = caption or CAPTIONS.get(path.stem, path.stem)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'
            f"<figcaption><b>{html.escape(path.stem)}</b>: {html.escape(caption)}</figcaption></figure>")
