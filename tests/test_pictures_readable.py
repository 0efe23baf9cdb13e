"""Pictures a person can read: sizes read back from the PNGs, labels and titles read from the figures
before they are saved, heatmaps for vector data, whole-epoch curves, nothing cut off; and the drawing
modules call no model."""

import math
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from pngread import read_png

import vaekit
from vaekit.cli import main
from vaekit.pictures import figures
from vaekit.pictures.figures import curves_figure, grid_figure, plot_reconstructions, plot_samples
from vaekit.pictures.png import image_grid, pairs_layout, save_grid, upscale_for
from vaekit.pictures.report import plot_run

pytest.importorskip("matplotlib")
SRC = Path(vaekit.__file__).parent


def train(out, **sections):
    cfg = vaekit.Config().replace(**sections)
    vaekit.train_run(cfg, out)
    return out


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return train(tmp_path_factory.mktemp("read") / "digits", model={"latent_dim": 2, "hidden": [32]},
                 train={"epochs": 2, "batch_size": 128})


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """`vaekit train --dataset wine --likelihood gaussian --standardize`, trained on the IWAE bound."""
    return train(tmp_path_factory.mktemp("read") / "wine", data={"dataset": "wine", "standardize": True},
                 model={"latent_dim": 2, "hidden": [16], "likelihood": "gaussian"},
                 train={"epochs": 3, "batch_size": 64, "objective": {"name": "iwae", "k": 5}})


def drawn(monkeypatch, fn, *args, **kwargs):
    """Run fn and return (its result, {file stem: the matplotlib figure saved there})."""
    figs = {}
    save = figures.save_figure

    def keep(fig, path, *a, **k):
        figs[Path(path).stem] = fig
        return save(fig, path, *a, **k)

    monkeypatch.setattr(figures, "save_figure", keep)
    return fn(*args, **kwargs), figs


def inside(fig, draw: bool = False) -> bool:
    """Every drawn artist (titles, labels, colorbars) lies within the figure: nothing is cut off. As
    saved: `save_figure` draws once, and constrained layout moves things again on each further draw, so
    a saved figure is measured as it is and only an unsaved one is drawn (once) first."""
    if draw:
        fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    w, h = fig.get_size_inches()
    return box.x0 >= -0.02 and box.y0 >= -0.02 and box.x1 <= w + 0.02 and box.y1 <= h + 0.02


def grid_offset(fig, png):
    """(top, left) pixel of the image grid in a `grid_figure` PNG: its labels frame sits exactly on it."""
    x0, _, _, y1 = fig.axes[0].get_position().extents
    return round(png.shape[0] * (1 - y1)), round(png.shape[1] * x0)


def test_reconstructions_label_their_rows_and_outgrow_the_bare_grid(monkeypatch, tmp_path):
    torch.manual_seed(0)
    x, x_hat = torch.rand(32, 64), torch.rand(32, 64)
    path, figs = drawn(monkeypatch, plot_reconstructions, x, x_hat, (1, 8, 8), tmp_path / "reconstructions.png")
    png, fig = read_png(path), figs["reconstructions"]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["input", "reconstruction"] * 4 and "reconstructions" in fig.get_suptitle()
    pairs, _ = pairs_layout(x, x_hat)
    bare = read_png(save_grid(tmp_path / "bare.png", pairs, (1, 8, 8), ncol=8))
    assert png.shape[0] > bare.shape[0] and png.shape[1] > bare.shape[1]  # the bare grid plus title and labels
    # the grid itself, pixel for pixel: 8 rows of 8 digits, each pixel a 6×6 block (a digit is 48 px)
    top, left = grid_offset(fig, png)
    grid = image_grid(pairs, (1, 8, 8), ncol=8).repeat_interleave(6, 0).repeat_interleave(6, 1).numpy()
    assert grid.shape[:2] == (6 * (8 * 9 + 1), 6 * (8 * 9 + 1))
    assert np.array_equal(png[top : top + grid.shape[0], left : left + grid.shape[1]], np.repeat(grid, 3, 2))
    assert inside(fig)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 5, 7)])
def test_one_image_is_at_least_48_pixels(shape, tmp_path, monkeypatch):
    images = torch.rand(10, math.prod(shape))
    path, figs = drawn(monkeypatch, plot_samples, images, shape, tmp_path / "samples.png")
    png, up = read_png(path), upscale_for(shape)
    assert max(shape[1:]) * up >= 48 and max(shape[1:]) * (up - 1) < 48  # the smallest such factor
    grid = image_grid(images, shape)  # 4 columns, 3 rows
    top, left = grid_offset(figs["samples"], png)
    shown = png[top : top + grid.shape[0] * up : up, left : left + grid.shape[1] * up : up]
    assert np.array_equal(shown, grid.expand(-1, -1, 3).numpy())
    assert "samples" in figs["samples"].get_suptitle() and inside(figs["samples"])


def test_plot_run_titles_every_grid_and_cuts_nothing_off(digits, monkeypatch, tmp_path):
    paths, figs = drawn(monkeypatch, plot_run, digits, tmp_path)
    assert {p.stem for p in paths} == set(figs)  # every picture is a figure with words on it
    titles = {name: fig.get_suptitle() for name, fig in figs.items()}
    assert "samples" in titles["samples"] and "p(z)" in titles["samples"]
    assert "interpolations" in titles["interpolations"] and "reconstructions" in titles["reconstructions"]
    assert "15×15 grid of the prior's quantiles" in titles["manifold"]
    manifold = figs["manifold"].axes[0]
    assert len(manifold.get_xticklabels()) == len(manifold.get_yticklabels()) == 15  # the z₁ and z₂ values
    assert [t.get_text() for t in figs["interpolations"].axes[0].get_xticklabels()][::9] == ["input", "input"]
    for name, fig in figs.items():
        assert inside(fig), name
    for name in ("samples", "reconstructions", "manifold", "interpolations", "traversals"):
        h, w, _ = read_png(tmp_path / f"{name}.png").shape
        assert min(h, w) >= 2 * 48, name


def test_wine_draws_vector_pictures(wine, monkeypatch, tmp_path):
    paths, figs = drawn(monkeypatch, plot_run, wine, tmp_path)
    names = {p.stem for p in paths}
    assert {"samples", "reconstructions", "marginals", "correlations", "curves"} <= names
    assert "manifold" not in names  # a 2-D sheet of 1×13 strips would show nothing
    heatmaps = [a for a in figs["samples"].axes if a.get_images() and a.get_label() != "<colorbar>"]
    assert [a.get_title() for a in heatmaps] == ["data (first 18)", "samples E[x|z]"]
    assert all(a.get_images()[0].get_array().shape == (18, 13) for a in heatmaps)  # rows examples, columns dims
    assert any(a.get_label() == "<colorbar>" for a in figs["samples"].axes)
    assert [a.get_title() for a in figs["reconstructions"].axes[:2]] == ["input", "reconstruction"]
    panels = [a for a in figs["marginals"].axes if a.axison]
    assert [a.get_title() for a in panels] == [f"x{j}" for j in range(1, 14)]
    assert all(len(a.patches) > 20 for a in panels)  # data bars and the samples' outline
    corr = [a for a in figs["correlations"].axes if a.get_images() and a.get_label() != "<colorbar>"]
    assert [a.get_images()[0].get_array().shape for a in corr] == [(13, 13), (13, 13)]
    assert corr[0].get_title().startswith("test data") and corr[1].get_title().startswith("samples x ~ p(x)")
    for name in ("samples", "reconstructions", "marginals", "correlations"):
        h, w, c = read_png(tmp_path / f"{name}.png").shape
        assert c == 3 and h >= 300 and w >= 600, name
        assert inside(figs[name]), name


def test_iwae_curves_plot_every_series_against_whole_epochs(wine, monkeypatch, tmp_path):
    _, figs = drawn(monkeypatch, plot_run, wine, tmp_path)
    fig = figs["curves"]
    lines = {line.get_label() for ax in fig.axes for line in ax.get_lines()}
    assert {"train IWAE L_5", "val ELBO", "val reconstruction", "val kl"} <= lines
    assert fig.axes[0].get_title() == "bound: IWAE L_5, ELBO"
    for ax in fig.axes:
        ticks = [t.get_text().replace("−", "-") for t in ax.get_xticklabels() if t.get_text()]
        assert ticks and all(t.lstrip("-").isdigit() for t in ticks), ticks


def test_curves_of_an_elbo_run_keep_train_and_validation_together():
    metrics = [{"epoch": e, "train/elbo": -e, "train/reconstruction": -e, "train/kl": 1.0 * e,
                "val/elbo": -e - 1, "val/reconstruction": -e, "val/kl": 1.0} for e in (1, 2)]
    fig = curves_figure(metrics)
    assert [ax.get_title() for ax in fig.axes] == ["bound: ELBO", "reconstruction E_Q[log p(x|z)]", "KL(Q ‖ p(z))"]
    train, val = fig.axes[0].get_lines()
    assert (train.get_label(), val.get_label()) == ("train ELBO", "val ELBO") and train.get_color() == val.get_color()


def test_cli_sample_of_vector_data_is_a_heatmap(wine, tmp_path, monkeypatch):
    """s.npy is the model's E[x|z] for z ~ p(z) under the default seed 0, in the data's units (the saved
    standardization undone), recomputed here; the heatmap shows those values, each column coloured by
    (x_j − mean_j)/std_j over the 20 rows."""
    from vaekit.runs.checkpoint import load_run, load_standardization

    _, figs = drawn(monkeypatch, main, ["sample", str(wine), "--n", "20", "--out", str(tmp_path / "s.png")])
    heatmap = figs["s"].axes[0].get_images()[0].get_array()
    samples = np.load(tmp_path / "s.npy")
    assert heatmap.shape == (20, 13) and samples.shape == (20, 13)
    _, model = load_run(wine)
    shift, spread = load_standardization(wine, 13)
    torch.manual_seed(0)
    want = model.decode(model.prior().sample((20,))) * spread + shift
    np.testing.assert_allclose(samples, want.numpy(), rtol=1e-5, atol=1e-5)
    s64 = samples.astype(np.float64)
    np.testing.assert_allclose(np.asarray(heatmap), (s64 - s64.mean(0)) / s64.std(0, ddof=1), rtol=1e-9, atol=1e-9)


def test_without_matplotlib_grids_are_bare(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    x = torch.rand(10, 64)
    assert read_png(plot_samples(x, (1, 8, 8), tmp_path / "s.png")).shape == (6 * (3 * 9 + 1), 6 * (4 * 9 + 1), 1)
    # 10 pairs, 8 a row: 2 blocks of an input row above a reconstruction row
    assert read_png(plot_reconstructions(x, x, (1, 8, 8), tmp_path / "r.png")).shape == (6 * 37, 6 * 73, 1)


def test_explain_posterior_titles_fit(monkeypatch, tmp_path):
    from vaekit.explain import explain, posterior

    figs = []

    def keep(fig, path):
        figs.append(fig)
        return path

    monkeypatch.setattr(posterior, "save_figure", keep)
    explain("posterior", tmp_path)
    (fig,) = figs
    assert inside(fig, draw=True)
    renderer = fig.canvas.get_renderer()
    boxes = sorted((ax.title.get_window_extent(renderer) for ax in fig.axes), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in pairwise(boxes))  # side by side, not overlapping


def test_grid_figure_wraps_a_long_title_to_its_width():
    fig = grid_figure(torch.rand(4, 64), (1, 8, 8), "a long title " * 20)
    assert fig.get_suptitle().count("\n") >= 2 and inside(fig, draw=True)
