"""Pictures: tensors and models in, files out. A run's set of pictures is assembled in `report.py`.

Image grids are written as PNG with the standard library alone (no extra needed); annotated figures
(latent map, traversals, curves) need matplotlib, imported lazily behind the `plot` extra. Figures are
drawn on `matplotlib.figure.Figure` with the Agg canvas, so nothing opens a window and the caller's
pyplot backend is left alone. Shapes follow the data: grey for 1 channel, colour for 3, any H×W.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .errors import VaekitError
from .evaluate import latent_statistics, marginals
from .rundir import atomic_write


def image_grid(images: Tensor, shape: tuple[int, ...], ncol: int | None = None, pad: int = 1) -> Tensor:
    """images: [N, D] in [0, 1] with D = prod(shape), shape (C, H, W) or (D,) → a [H', W', C] uint8 grid."""
    if len(shape) == 3:
        c, h, w = shape
    else:  # flat data: show as a near-square greyscale tile
        c, h, w = 1, 1, math.prod(shape)
    n = images.shape[0]
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = torch.ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    imgs = images.detach().float().clamp(0, 1).reshape(n, c, h, w).cpu()
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = imgs[i]
    return (grid * 255).round().to(torch.uint8).permute(1, 2, 0)


def write_png(path: str | Path, pixels: Tensor, upscale: int = 1) -> None:
    """Write a [H, W, C] uint8 tensor (C = 1 grey, 3 RGB) as PNG; `upscale` repeats pixels for viewing."""
    if upscale > 1:
        pixels = pixels.repeat_interleave(upscale, 0).repeat_interleave(upscale, 1)
    h, w, c = pixels.shape
    color_type = {1: 0, 3: 2}[c]
    rows = pixels.contiguous().numpy().reshape(h, w * c)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(png))


def save_grid(path: str | Path, images: Tensor, shape: tuple[int, ...], ncol: int | None = None) -> Path:
    """A grid of images [N, D] in [0, 1] as a PNG, upscaled so that small images are visible."""
    if Path(path).suffix.lower() != ".png":
        raise VaekitError(f"{path}: image grids are written as PNG; name a .png file")
    grid = image_grid(images, shape, ncol)
    upscale = max(1, 256 // max(grid.shape[0], grid.shape[1]) + 1)
    write_png(path, grid, upscale=min(upscale, 8))
    return Path(path)


SEED = 0  # every picture's randomness (prior draws, which inputs are shown)
MAX_MAP_POINTS = 5000  # a scatter of more points says no more and slows the PNG down
MAX_TRAVERSAL_DIMS = 10  # rows of the traversal figure: the dimensions with the largest KL


def new_figure(ncols: int = 1, size: tuple[float, float] = (5.0, 4.5)):
    """(figure, axes) on the Agg canvas; an actionable error when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise VaekitError("figures need matplotlib: pip install vaekit[plot]") from None
    fig = Figure(figsize=(size[0] * ncols, size[1]), layout="constrained")
    FigureCanvasAgg(fig)  # headless: the same as matplotlib.use("Agg"), without touching global state
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


FIGURE_FORMATS = ("png", "pdf", "svg")


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """Write `fig` in the format its suffix names (png, pdf or svg), atomically."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise VaekitError(f"{path}: figures are written as {', '.join(FIGURE_FORMATS)}; name a file with one of "
                          "those suffixes")
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt))
    return Path(path)


def plot_samples(model, shape: Sequence[int], path: Path, n: int = 64) -> Path:
    """E[x|z] for n draws z ~ p(z), as a grid."""
    return save_grid(path, model.sample(n, mean=True), tuple(shape))


def plot_images(images: Tensor, shape: Sequence[int], path: Path, n: int = 100) -> Path:
    """The first n of images [N, D] (in [0, 1]: clamped) as a grid: what a part shows of itself
    (`pictures()`, e.g. a prior's learned pseudo-inputs)."""
    return save_grid(path, images[:n], tuple(shape))


def plot_reconstructions(model, x: Tensor, shape: Sequence[int], path: Path, n: int = 32) -> Path:
    """Each input followed by its reconstruction E[x|z = E_Q[z]], 8 pairs a row."""
    x = x[:n]
    pairs = torch.stack([x, model.reconstruct(x)], 1).reshape(-1, x.shape[1])
    return save_grid(path, pairs, tuple(shape), ncol=16)


def posterior_means(model, x: Tensor, batch_size: int = 1000) -> Tensor:
    """E_Q[z|x] for every row of x: [N, k]."""
    return torch.cat([model.encode(xb) for xb in x.split(batch_size)])


def project_2d(z: Tensor) -> tuple[Tensor, list[str]]:
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


def plot_latent_map(model, x: Tensor, labels: Tensor | None, path: Path) -> Path:
    """Posterior means of x in 2-D (PCA when k > 2), coloured by label when there are labels."""
    n = min(len(x), MAX_MAP_POINTS)
    points, names = project_2d(posterior_means(model, x[:n]).double())
    points = points.numpy()  # matplotlib takes arrays, not tensors
    fig, (ax,) = new_figure()
    if labels is not None:
        y = labels[:n].numpy()
        classes = sorted(set(y.tolist()))
        cmap = "tab10" if len(classes) <= 10 else "viridis"
        sc = ax.scatter(points[:, 0], points[:, 1], c=y, cmap=cmap, s=8, alpha=0.8)
        if len(classes) <= 10:
            ax.legend(*sc.legend_elements(), title="label", fontsize=7, loc="best")
        else:
            fig.colorbar(sc, ax=ax, label="label")
    else:
        ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.6)
    ax.set(xlabel=names[0], ylabel=names[1], title=f"posterior means E_Q[z|x], {n} examples")
    return save_figure(fig, path)


def prior_quantiles(model, levels: Tensor, samples: int = 20_000) -> Tensor:
    """Quantiles of each marginal p(z_j) at `levels`: [len(levels), k]. Exact (icdf) for a Gaussian
    prior, else empirical from `samples` draws (a mixture, say)."""
    p_z = model.prior()
    m = marginals(p_z)
    if m is not None:
        return torch.distributions.Normal(m.base_dist.loc, m.base_dist.scale).icdf(levels[:, None])
    return torch.quantile(p_z.sample((samples,)), levels.to(torch.float32), dim=0)


def plot_manifold(model, shape: Sequence[int], path: Path, n: int = 15) -> Path:
    """latent_dim = 2: E[x|z] on an n×n grid of the prior's quantiles (Kingma & Welling 2013, fig. 4)."""
    q = prior_quantiles(model, torch.linspace(0.5 / n, 1 - 0.5 / n, n))
    z1, z2 = torch.meshgrid(q[:, 0], q[:, 1].flip(0), indexing="xy")  # z₂ grows upwards, as on a plot
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], 1)
    return save_grid(path, model.decode(z), tuple(shape), ncol=n)


def plot_traversals(model, x: Tensor, shape: Sequence[int], path: Path, steps: int = 9, span: float = 3.0) -> Path:
    """Vary one z_j from the posterior mean of one input over the prior's quantiles at ±`span`
    standard deviations (±3 for N(0, 1)); rows by decreasing KL(Q(z_j|x) ‖ p(z_j)), or by decreasing
    activity Cov_x E_Q[z_j] where the KL does not split by dimension (a mixture prior)."""
    stats = latent_statistics(model, x)
    by_kl = stats["kl_per_dim"] is not None
    score = torch.tensor(stats["kl_per_dim"] if by_kl else stats["unit_activity"])
    order = score.argsort(descending=True)[:MAX_TRAVERSAL_DIMS]
    z0 = model.encode(x[:1])[0]
    normal = torch.distributions.Normal(0.0, 1.0)
    levels = normal.cdf(torch.linspace(-span, span, steps))
    values = prior_quantiles(model, levels)  # [steps, k]
    z = z0.repeat(len(order), steps, 1)
    z[torch.arange(len(order)), :, order] = values[:, order].T  # row r sweeps dimension order[r]
    images = model.decode(z.reshape(-1, z0.shape[0]))
    unit = "nats" if by_kl else "activity"
    labels = [f"z{j + 1}: {score[j].item():.2f} {unit}" for j in order.tolist()]
    columns = [f"{v:+.1f}σ" for v in torch.linspace(-span, span, steps).tolist()]
    title = ("traversals: one latent varied over p(z_j)'s quantiles, rows by "
             + ("KL(Q(z_j|x) ‖ p(z_j))" if by_kl else "activity Cov_x E_Q[z_j]"))
    return grid_figure(images, shape, steps, labels, columns, path, title=title)


def grid_figure(images: Tensor, shape: Sequence[int], ncol: int, row_labels: list[str], col_labels: list[str],
                path: Path, title: str) -> Path:
    """An image grid with named rows and columns (grey for 1 channel, colour for 3)."""
    pad = 1
    grid = image_grid(images, tuple(shape), ncol=ncol, pad=pad).numpy()
    h, w = (shape[1], shape[2]) if len(shape) == 3 else (1, math.prod(shape))
    rows = len(row_labels)
    fig, (ax,) = new_figure(size=(2.0 + 0.6 * ncol, 0.8 + 0.6 * rows))
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255,
              interpolation="nearest", aspect="auto" if h == 1 else "equal")
    ax.set_yticks([pad + r * (h + pad) + (h - 1) / 2 for r in range(rows)], row_labels, fontsize=8)
    ax.set_xticks([pad + c * (w + pad) + (w - 1) / 2 for c in range(ncol)], col_labels, fontsize=8)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_interpolations(model, x: Tensor, shape: Sequence[int], path: Path, pairs: int = 6, steps: int = 8) -> Path:
    """Rows: input a, E[x|z] along the line between the posterior means of a and b, input b."""
    idx = torch.randperm(len(x))[: 2 * pairs]
    pairs = len(idx) // 2
    a, b = x[idx[:pairs]], x[idx[pairs : 2 * pairs]]
    za, zb = model.encode(a), model.encode(b)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    decoded = model.decode(za[:, None] + t * (zb - za)[:, None])  # [pairs, steps, D]
    rows = torch.cat([a[:, None], decoded, b[:, None]], 1).reshape(-1, x.shape[1])
    return save_grid(path, rows, tuple(shape), ncol=steps + 2)


CURVES = (("elbo", "ELBO"), ("reconstruction", "reconstruction E_Q[log p(x|z)]"), ("kl", "KL(Q ‖ p(z))"))


def plot_curves(metrics: list[dict], path: Path) -> Path:
    """ELBO, reconstruction and KL per epoch, train and validation, in nats per example."""
    fig, axes = new_figure(ncols=len(CURVES), size=(4.2, 3.4))
    for ax, (key, name) in zip(axes, CURVES):
        for split, style in (("train", "-"), ("val", "--")):
            points = [(r["epoch"], r[f"{split}/{key}"]) for r in metrics if f"{split}/{key}" in r]
            if points:
                ax.plot(*zip(*points), style, label=split)
        ax.set(xlabel="epoch", ylabel="nats per example", title=name)
        if ax.has_data():
            ax.legend(fontsize=8)
    return save_figure(fig, path)
