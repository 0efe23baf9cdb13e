"""plot_run on small trained runs: every picture exists, has sensible dimensions, and shows something."""

import sys

import numpy as np
import pytest
from pngread import read_png

import vaekit
from vaekit.cli import main
from vaekit.errors import VaekitError
from vaekit.pictures.figures import new_figure
from vaekit.pictures.report import plot_run

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

GRIDS = {"samples": (8, 8), "reconstructions": (8, 8), "interpolations": (6, 10),  # rows, columns of 8×8 digits
         "traversals": (2, 9)}  # one row per latent dimension (k = 2), 9 steps
FIGURES = ("latent_map", "curves")


def train(out, latent_dim, dataset="digits", epochs=2):
    cfg = vaekit.Config().replace(data={"dataset": str(dataset)}, model={"latent_dim": latent_dim, "hidden": [32]},
                                  train={"epochs": epochs, "batch_size": 128})
    vaekit.train_run(cfg, out)
    return out


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    return train(tmp_path_factory.mktemp("fig") / "k2", latent_dim=2)


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    return train(tmp_path_factory.mktemp("fig") / "k3", latent_dim=3)


def rgb(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(float)


def test_plot_run_writes_every_picture(run2, tmp_path):
    paths = plot_run(run2, tmp_path)
    assert {p.stem for p in paths} == {*GRIDS, *FIGURES, "manifold"}
    for p in paths:
        assert p.parent == tmp_path and p.stat().st_size > 0
    for name, (rows, cols) in GRIDS.items():  # every PNG through vaekit's own writer: RGB, read by pngread
        h, w, c = read_png(tmp_path / f"{name}.png").shape
        assert c == 3 and h >= rows * 48 and w >= cols * 48 and max(h, w) <= 2000  # one digit ≥ 48 px a side
    for name in FIGURES:
        h, w, _ = rgb(tmp_path / f"{name}.png").shape
        assert 200 <= h <= 2000 and 300 <= w <= 4000


def test_manifold_only_for_two_latent_dimensions(run2, run3, tmp_path):
    h, w, _ = read_png(plot_run(run2, tmp_path / "a")[3]).shape
    assert min(h, w) >= 6 * (15 * 9 + 1)  # a 15×15 grid of 8×8 images, 1-pixel gaps, each pixel drawn 6×6
    names = {p.stem for p in plot_run(run3, tmp_path / "b")}
    assert "manifold" not in names and "latent_map" in names


def test_latent_map_is_not_blank_and_coloured_by_label(run3, tmp_path):
    pixels = rgb(plot_run(run3, tmp_path)[2])
    assert pixels.var() > 0
    coloured = (np.abs(pixels[..., 0] - pixels[..., 1]) > 40) | (np.abs(pixels[..., 1] - pixels[..., 2]) > 40)
    assert coloured.sum() > 200  # the tab10 label colours of the scatter, not just black axes


def test_plot_run_defaults_to_the_run_directory_and_repeats(run3):
    first = [p.read_bytes() for p in plot_run(run3) if p.stem in GRIDS]
    assert (run3 / "samples.png").exists() and (run3 / "curves.png").exists()
    assert first == [p.read_bytes() for p in plot_run(run3) if p.stem in GRIDS]  # seeded


def test_colour_images_of_any_shape(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "rgb.npy", rng.integers(0, 256, size=(80, 3, 5, 7), dtype=np.uint8))
    run = train(tmp_path / "run", latent_dim=2, dataset=tmp_path / "rgb.npy", epochs=1)
    paths = {p.stem: p for p in plot_run(run, tmp_path / "pics")}
    h, w, c = read_png(paths["samples"]).shape
    assert c == 3 and h >= 7 * (8 * 6 + 1) and w >= 7 * (8 * 8 + 1)  # 8×8 grid of 5×7 colour images, 7× (49 px)
    assert read_png(paths["manifold"]).shape[2] == 3
    assert rgb(paths["latent_map"]).var() > 0  # no labels: one colour, still drawn


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(VaekitError, match=r"pip install vaekit\[plot\]"):
        new_figure()


def test_cli_plot(run3, tmp_path, capsys):
    assert main(["plot", str(run3), "--out", str(tmp_path)]) == 0
    assert "traversals.png" in capsys.readouterr().out
    assert (tmp_path / "interpolations.png").exists()


def test_flat_data_draws_heatmaps(tmp_path):
    np.save(tmp_path / "flat.npy", np.random.default_rng(1).integers(0, 2, size=(60, 10)).astype(np.float32))
    run = train(tmp_path / "run", latent_dim=3, dataset=tmp_path / "flat.npy", epochs=1)
    paths = {p.stem: p for p in plot_run(run, tmp_path / "pics")}
    assert {"marginals", "correlations"} <= set(paths)
    for name in ("samples", "reconstructions", "traversals", "interpolations"):  # coloured heatmaps, not grey strips
        pixels = rgb(paths[name])
        assert (np.abs(pixels[..., 0] - pixels[..., 2]) > 40).sum() > 1000, name
