"""Pictures a person can read: tensors and arrays in, files out (`plot_*`), built by functions that return
the matplotlib figure before it is saved (`grid_figure`, `heatmap_figure`, `marginals_figure`,
`correlations_figure`, `curves_figure`). No model is called here: `report` and the CLI sample,
encode and decode, and pass the results.

Everything here needs matplotlib (the `plot` extra, imported lazily), except that the image grids
(`plot_grid`, `plot_samples`, `plot_reconstructions`, …) fall back to the bare PNG grid of `png`
(no title, no labels) when it is missing. Figures are drawn on `matplotlib.figure.Figure` with the Agg
canvas, so nothing opens a window and the caller's pyplot backend is left alone. Image grids are laid
out in pixels: one image's longer side is at least `plots.MIN_IMAGE_PX` on screen. Vector data, shape
(D,), are drawn as heatmaps (rows = examples, columns = dimensions) rather than 1×D strips.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import VaekitError
from ..files import atomic_write
from .png import PAD, image_grid, image_hw, pairs_layout, save_grid, upscale_for, write_png

FIGURE_FORMATS = ("png", "pdf", "svg")
DPI = 100  # grid figures are sized in pixels at this resolution
LABEL_CHAR_PX, TITLE_CHAR_PX, TITLE_LINE_PX = 7, 8, 17  # 8-point labels and 10-point titles at DPI, generous
MAX_MARGINALS = 16  # panels of the marginal-histogram figure


def figure(size: tuple[float, float], layout: str | None = "constrained"):
    """A Figure of `size` inches on the Agg canvas; an actionable error when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise VaekitError("figures need matplotlib: pip install vaekit[plot]") from None
    fig = Figure(figsize=size, layout=layout)
    FigureCanvasAgg(fig)  # headless: the same as matplotlib.use("Agg"), without touching global state
    return fig


def new_figure(ncols: int = 1, size: tuple[float, float] = (5.0, 4.5)):
    """(figure, axes): `ncols` panels of `size` inches each, constrained layout."""
    fig = figure((size[0] * ncols, size[1]))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def have_matplotlib() -> bool:
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def save_figure(fig, path: Path, dpi: int = DPI) -> Path:
    """Write `fig` in the format its suffix names (png, pdf or svg), atomically. A PNG is the rendered
    RGB pixels through `plots.write_png`, like every PNG vaekit writes: 8-bit, no metadata, repeatable."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise VaekitError(f"{path}: figures are written as {', '.join(FIGURE_FORMATS)}; name a file with one of "
                          "those suffixes")
    if fmt != "png":
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt))
        return Path(path)
    fig.set_dpi(dpi)
    fig.canvas.draw()
    write_png(path, torch.from_numpy(np.array(fig.canvas.buffer_rgba())[..., :3]))
    return Path(path)


def wrap(title: str, width_px: float) -> str:
    """`title` broken into lines that fit `width_px` at 10 points."""
    return "\n".join(textwrap.wrap(title, max(24, int(width_px - 16) // TITLE_CHAR_PX)))


def grid_figure(images: Tensor, shape: Sequence[int], title: str, ncol: int | None = None,
                row_labels: Sequence[str] = (), col_labels: Sequence[str] = ()):
    """images [N, D] in [0, 1] as a grid (`plots.image_grid`), each grid pixel drawn as an
    upscale_for(shape)² block, exactly: the figure is sized in pixels around it, with the title wrapped
    above, column labels above the grid and row labels to its left."""
    shape = tuple(shape)
    pixels = image_grid(images, shape, ncol)
    up, (_, h, w) = upscale_for(shape), image_hw(shape)
    gh, gw = pixels.shape[0] * up, pixels.shape[1] * up
    left = 10 + (LABEL_CHAR_PX * max(len(s) for s in row_labels) + 6 if row_labels else 0)
    width = max(left + gw + 10, 320)
    left += (width - left - gw - 10) // 2  # a narrow grid is centred under its title
    title = wrap(title, width)
    height = 8 + TITLE_LINE_PX * (title.count("\n") + 1) + 8 + (16 if col_labels else 0) + gh + 10
    fig = figure((width / DPI, height / DPI), layout=None)
    big = pixels.repeat_interleave(up, 0).repeat_interleave(up, 1).expand(-1, -1, 3).numpy()
    fig.figimage(big, xo=left, yo=10, origin="upper")  # pixel for pixel: no resampling
    ax = fig.add_axes((left / width, 10 / height, gw / width, gh / height))  # an empty frame for the labels
    ax.set(xlim=(0, gw), ylim=(gh, 0))
    ax.patch.set_visible(False)
    centre = lambda i, size: (PAD + i * (size + PAD) + size / 2) * up
    ax.set_yticks([centre(r, h) for r in range(len(row_labels))], list(row_labels), fontsize=8)
    ax.xaxis.tick_top()
    ax.set_xticks([centre(i, w) for i in range(len(col_labels))], list(col_labels), fontsize=7)
    ax.tick_params(length=0, pad=3)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(title, y=1 - 8 / height, va="top", fontsize=10)
    return fig


def plot_grid(images: Tensor, shape: Sequence[int], path: Path, title: str, ncol: int | None = None,
              row_labels: Sequence[str] = (), col_labels: Sequence[str] = ()) -> Path:
    """`grid_figure` written to `path`; without matplotlib, the bare grid (`plots.save_grid`)."""
    if not have_matplotlib():
        return save_grid(path, images, tuple(shape), ncol)
    return save_figure(grid_figure(images, shape, title, ncol, row_labels, col_labels), path)


def is_vector(shape: Sequence[int]) -> bool:
    return len(shape) == 1


def dimension_ticks(d: int) -> tuple[range, list[str]]:
    """Positions and 1-based names of at most 16 of d dimensions."""
    ticks = range(0, d, max(1, math.ceil(d / 16)))
    return ticks, [str(j + 1) for j in ticks]


def heatmap_figure(panels: Mapping[str, Tensor], title: str, row_groups: Sequence[str] = (),
                   row_names: Sequence[str] = ()):
    """Vector data [N, D] as they are: one heatmap per panel, rows = examples, columns = dimensions,
    coloured by (x_j − m_j)/s_j with the first panel's per-dimension mean m and standard deviation s
    (so dimensions in any units read alike; ±3 at the ends), one shared colorbar. row_groups: names of
    equal runs of consecutive rows (a traversal's latent, an interpolation's pair), separated by lines;
    row_names: a name for each row (a conditional sample's label)."""
    ref = next(iter(panels.values())).detach().double().cpu()
    m = ref.mean(0)
    s = ref.std(0) if len(ref) > 1 else torch.ones_like(m)
    s = torch.where(s > 0, s, torch.ones_like(s))
    d, rows = ref.shape[1], max(len(v) for v in panels.values())
    fig, axes = new_figure(ncols=len(panels), size=(min(1.6 + 0.25 * d, 7.0), min(2.4 + 0.13 * rows, 14.0)))
    for ax, (name, values) in zip(axes, panels.items()):
        z = ((values.detach().double().cpu() - m) / s).numpy()
        image = ax.imshow(z, cmap="RdBu_r", vmin=-3, vmax=3, aspect="auto", interpolation="nearest")
        ax.set_xticks(*dimension_ticks(d), fontsize=7)
        ax.set(title=name, xlabel="dimension")
        if row_groups:
            size = len(values) // len(row_groups)
            ax.set_yticks([(g + 0.5) * size - 0.5 for g in range(len(row_groups))], list(row_groups), fontsize=7)
            for g in range(1, len(row_groups)):
                ax.axhline(g * size - 0.5, color="black", linewidth=0.8)
        elif row_names:
            ax.set_yticks(range(len(values)), list(row_names)[: len(values)], fontsize=6)
        else:
            ax.set_ylabel("example")
    over = f"of {next(iter(panels))}" if len(panels) > 1 else "over the rows"
    fig.colorbar(image, ax=list(axes), extend="both", fraction=0.04, aspect=40, label=f"(x_j − mean_j) / std_j {over}")
    fig.suptitle(wrap(title, fig.get_figwidth() * DPI), fontsize=10)
    return fig


MAX_GRID_IMAGES = 4096  # images in one picture: a grid of 400,000 took 5 GB to draw; the arrays hold any number


def plot_images(images: Tensor, shape: Sequence[int], path: Path, title: str | None = None, n: int = 100) -> Path:
    """The first n of images [N, D] (in [0, 1]: clamped) as a grid, titled when `title` is given (a part's
    `pictures()`, e.g. a prior's pseudo-inputs, come bare: the report captions them); vectors as a heatmap."""
    if is_vector(shape) and have_matplotlib():
        return save_figure(heatmap_figure({"": images[:n]}, title or Path(path).stem), path)
    if title is None:
        return save_grid(path, images[:n], tuple(shape))
    return plot_grid(images[:n], shape, path, title)


def plot_samples(samples: Tensor, shape: Sequence[int], path: Path, data: Tensor | None = None,
                 mean: bool = True, source: str = "z ~ p(z)", labels: Tensor | None = None) -> Path:
    """samples [N, D] drawn by the caller (E[x|z], or x ~ p(x|z) when not `mean`) as a titled grid; vector
    data as a heatmap, beside as many rows of `data` [M, D] where given (then coloured relative to it).
    `source` says where the z came from (the prior, or a post-hoc sampler); `labels` [N]: a conditional
    model's y of each sample (then z ~ p(z|y), and each row of a heatmap is named by its label)."""
    what = "E[x|z]" if mean else "x ~ p(x|z)"
    if labels is not None:
        what, source = what.replace("z]", "z, y]").replace("|z)", "|z, y)"), source.replace("p(z)", "p(z|y)")
    if is_vector(shape) and have_matplotlib():
        n = len(samples) if data is None else min(len(data), len(samples))  # as many rows of each
        panels = {} if data is None else {f"data (first {n})": data[:n]}
        title = f"samples from the model: {what} for {n} draws {source}" + (", beside the data" if panels else "")
        names = [f"y = {int(v)}" for v in labels[:n]] if labels is not None else ()
        return save_figure(heatmap_figure({**panels, f"samples {what}": samples[:n]}, title, row_names=names), path)
    return plot_grid(samples, shape, path, f"samples from the model: {what} for {len(samples)} draws {source}")


def plot_reconstructions(x: Tensor, x_hat: Tensor, shape: Sequence[int], path: Path, ncol: int = 8) -> Path:
    """Inputs x [N, D] and reconstructions x_hat [N, D]: rows of `ncol` inputs labelled "input", each
    above its row of reconstructions; for vector data two heatmaps side by side."""
    title = f"{len(x)} inputs and their reconstructions E[x|z = E_Q[z|x]]"
    if is_vector(shape) and have_matplotlib():
        return save_figure(heatmap_figure({"input": x, "reconstruction": x_hat}, title), path)
    pairs, blocks = pairs_layout(x, x_hat, ncol)
    ncol = len(pairs) // (2 * blocks)
    return plot_grid(pairs, shape, path, title, ncol=ncol, row_labels=["input", "reconstruction"] * blocks)


def plot_manifold(images: Tensor, z1: Tensor, z2: Tensor, shape: Sequence[int], path: Path) -> Path:
    """images [len(z2)·len(z1), D]: E[x|z] on the grid z1 × z2, row-major with z2 (the rows) decreasing."""
    title = f"E[x|z] on a {len(z2)}×{len(z1)} grid of the prior's quantiles: z₁ across, z₂ up"
    return plot_grid(images, shape, path, title, ncol=len(z1), row_labels=[f"z₂ {v:+.1f}" for v in z2.tolist()],
                     col_labels=[f"{v:+.1f}" for v in z1.tolist()])


def plot_traversals(images: Tensor, shape: Sequence[int], path: Path, title: str, row_labels: Sequence[str],
                    col_labels: Sequence[str]) -> Path:
    """images [rows·steps, D]: row r varies one latent over `col_labels`' values; a heatmap for vectors,
    its rows grouped by latent."""
    if is_vector(shape) and have_matplotlib():
        return save_figure(heatmap_figure({"E[x|z]": images}, title, row_groups=row_labels), path)
    return plot_grid(images, shape, path, title, ncol=len(col_labels), row_labels=row_labels, col_labels=col_labels)


def plot_interpolations(a: Tensor, decoded: Tensor, b: Tensor, shape: Sequence[int], path: Path) -> Path:
    """Rows: input a [P, D], E[x|z] at `decoded` [P, S, D] along the line from a's posterior mean to b's,
    input b [P, D]."""
    pairs, steps = decoded.shape[0], decoded.shape[1]
    rows = torch.cat([a[:, None], decoded, b[:, None]], 1).reshape(-1, a.shape[1])
    title = "interpolations: E[x|z] along the straight line between the posterior means of two inputs (ends)"
    if is_vector(shape) and have_matplotlib():
        groups = [f"pair {i + 1}" for i in range(pairs)]
        return save_figure(heatmap_figure({"rows: a, E[x|z] for t = 0 … 1, b": rows}, title, groups), path)
    ts = [f"{t:.2f}" for t in torch.linspace(0, 1, steps).tolist()]
    return plot_grid(rows, shape, path, title, ncol=steps + 2, col_labels=["input", *ts, "input"])


def plot_latent_map(points: Tensor, axis_names: Sequence[str], labels: Tensor | None, path: Path) -> Path:
    """Posterior means in 2-D, points [N, 2] (projected by the caller), coloured by labels [N] when there
    are labels."""
    points = points.numpy()  # matplotlib takes arrays, not tensors
    fig, (ax,) = new_figure()
    if labels is not None:
        y = labels.numpy()
        classes = sorted(set(y.tolist()))
        cmap = "tab10" if len(classes) <= 10 else "viridis"
        sc = ax.scatter(points[:, 0], points[:, 1], c=y, cmap=cmap, s=8, alpha=0.8)
        if len(classes) <= 10:
            ax.legend(*sc.legend_elements(), title="label", fontsize=7, loc="best")
        else:
            fig.colorbar(sc, ax=ax, label="label")
    else:
        ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.6)
    ax.set(xlabel=axis_names[0], ylabel=axis_names[1], title=f"posterior means E_Q[z|x], {len(points)} examples")
    return save_figure(fig, path)


def marginals_figure(panels: Mapping[str, Tensor], title: str):
    """Per-dimension histograms (densities) of two or more sets of vectors [N, D]: one small panel per
    dimension, the first MAX_MARGINALS, the first set filled and the others as outlines."""
    sets = {name: v.detach().double().cpu().numpy() for name, v in panels.items()}
    d = min(next(iter(sets.values())).shape[1], MAX_MARGINALS)
    ncol = min(4, d)
    fig = figure((2.3 * ncol, 1.8 * math.ceil(d / ncol) + 0.7))
    axes = fig.subplots(math.ceil(d / ncol), ncol, squeeze=False).ravel()
    for j, ax in enumerate(axes):
        if j >= d:
            ax.set_axis_off()
            continue
        lo = min(np.quantile(v[:, j], 0.005) for v in sets.values())
        hi = max(np.quantile(v[:, j], 0.995) for v in sets.values())
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 21)
        for i, (name, v) in enumerate(sets.items()):
            ax.hist(v[:, j], bins, density=True, label=name, **({"alpha": 0.45} if i == 0 else
                                                                 {"histtype": "step", "linewidth": 1.4}))
        ax.set_title(f"x{j + 1}", fontsize=9)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    axes[0].legend(fontsize=6)
    fig.suptitle(wrap(title, fig.get_figwidth() * DPI), fontsize=10)
    return fig


def correlations_figure(panels: Mapping[str, Tensor], title: str):
    """The correlation matrix of each set of vectors [N, D], side by side, one colour scale (−1 to 1)."""
    fig, axes = new_figure(ncols=len(panels), size=(4.0, 3.6))
    for ax, (name, v) in zip(axes, panels.items()):
        corr = np.nan_to_num(np.corrcoef(v.detach().double().cpu().numpy(), rowvar=False))  # constant: 0
        image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks(*dimension_ticks(len(corr)), fontsize=7)
        ax.set_yticks(*dimension_ticks(len(corr)), fontsize=7)
        ax.set_title(name, fontsize=9)
    fig.colorbar(image, ax=list(axes), fraction=0.04, aspect=30, label="correlation")
    fig.suptitle(wrap(title, fig.get_figwidth() * DPI), fontsize=10)
    return fig


BOUND = "bound"  # the panel shared by the ELBO and the IWAE bounds L_k
TERMS = {"reconstruction": "reconstruction E_Q[log p(x|z)]", "kl": "KL(Q ‖ p(z))"}


def curve_name(name: str) -> str:
    """A metric's name in a legend: elbo → ELBO, iwae50 → IWAE L_50."""
    if name == "elbo":
        return "ELBO"
    return f"IWAE L_{name[4:]}" if name.startswith("iwae") and name[4:].isdigit() else name


def curves_figure(metrics: list[dict]):
    """Every train/* and val/* series of metrics.jsonl's records per epoch, in nats per example: the bounds
    (ELBO, IWAE L_k: whichever the run trained on and validated with) in one panel, each other metric in
    its own; train solid, validation dashed; whole epochs on the x-axis."""
    from matplotlib.ticker import MaxNLocator

    names = list(dict.fromkeys(k.split("/", 1)[1] for r in metrics for k in r if k.startswith(("train/", "val/"))))
    panels: dict[str, list[str]] = {BOUND: []}
    for name in names:
        panels.setdefault(BOUND if curve_name(name) != name else name, []).append(name)
    panels = {panel: members for panel, members in panels.items() if members or len(panels) == 1}
    fig, axes = new_figure(ncols=len(panels), size=(4.2, 3.4))
    epochs = sorted({r["epoch"] for r in metrics if "epoch" in r})
    start = epochs[max(1, len(epochs) // 10)] if len(epochs) > 4 else None  # the first epochs would flatten the rest
    for ax, (panel, members) in zip(axes, panels.items()):
        later = []
        for i, name in enumerate(members):
            for split, style in (("train", "-"), ("val", "--")):
                points = [(r["epoch"], r[f"{split}/{name}"]) for r in metrics if f"{split}/{name}" in r]
                if points:
                    ax.plot(*zip(*points), style, color=f"C{i}", marker=".", label=f"{split} {curve_name(name)}")
                    later += [y for x, y in points if start is not None and x >= start and math.isfinite(y)]
        title = "bound: " + ", ".join(curve_name(n) for n in members) if panel == BOUND else TERMS.get(panel, panel)
        if later and max(later) > min(later):
            pad = 0.05 * (max(later) - min(later))
            ax.set_ylim(min(later) - pad, max(later) + pad)  # the earlier epochs run off the top or bottom
            title += f" (y from epoch {start})"
        ax.set(xlabel="epoch", ylabel="nats per example", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.has_data():
            ax.legend(fontsize=8)
    return fig


def plot_curves(metrics: list[dict], path: Path) -> Path:
    return save_figure(curves_figure(metrics), path)


def plot_marginals(panels: Mapping[str, Tensor], path: Path) -> Path:
    title = "per-dimension histograms: " + " vs ".join(panels)
    return save_figure(marginals_figure(panels, title), path)


def plot_correlations(panels: Mapping[str, Tensor], path: Path) -> Path:
    return save_figure(correlations_figure(panels, "correlations between dimensions"), path)


def columns_figure(columns: Sequence[tuple[str, Sequence[str], Tensor, Tensor]], title: str):
    """One panel per column of a table (the first MAX_MARGINALS): (name, levels, truth, guess) of its hidden
    cells; a numeric column (no levels) as guess against truth with the diagonal, a leveled one as the
    confusion matrix (rows: the truth)."""
    columns = list(columns)[:MAX_MARGINALS]
    ncol = min(4, len(columns))
    fig = figure((2.6 * ncol, 2.5 * math.ceil(len(columns) / ncol) + 0.7))
    axes = fig.subplots(math.ceil(len(columns) / ncol), ncol, squeeze=False).ravel()
    for ax in axes[len(columns):]:
        ax.set_axis_off()
    for ax, (name, levels, truth, guess) in zip(axes, columns):
        t, g = truth.double().numpy(), guess.double().numpy()
        if levels:
            counts = np.zeros((len(levels), len(levels)))
            np.add.at(counts, (t.astype(int), g.astype(int)), 1)
            ax.imshow(counts, cmap="Blues")
            ticks = range(len(levels)) if len(levels) <= 8 else []
            ax.set_xticks(ticks, [levels[i][:8] for i in ticks], fontsize=6, rotation=45)
            ax.set_yticks(ticks, [levels[i][:8] for i in ticks], fontsize=6)
            ax.set_xlabel("imputed", fontsize=7)
            ax.set_ylabel("true", fontsize=7)
        else:
            ax.scatter(t, g, s=6, alpha=0.6)
            if len(t):
                lo, hi = float(min(t.min(), g.min())), float(max(t.max(), g.max()))
                ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8)
            ax.set_xlabel("true", fontsize=7)
            ax.set_ylabel("imputed", fontsize=7)
            ax.tick_params(labelsize=6)
        ax.set_title(f"{name} (n = {len(t)})", fontsize=9)
    fig.suptitle(wrap(title, fig.get_figwidth() * DPI), fontsize=10)
    return fig


def plot_columns(columns: Sequence[tuple[str, Sequence[str], Tensor, Tensor]], path: Path) -> Path:
    title = "each column's hidden cells: imputed against true (numeric) or the confusion matrix (levels)"
    return save_figure(columns_figure(columns, title), path)
