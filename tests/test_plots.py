import torch
from pngread import read_png

from vaekit.plots import image_grid, save_grid, write_png


def test_png_roundtrip_grey_and_rgb(tmp_path):
    for c in (1, 3):
        pixels = torch.randint(0, 256, (7, 5, c), dtype=torch.uint8)
        write_png(tmp_path / "a.png", pixels)
        assert (read_png(tmp_path / "a.png") == pixels.numpy()).all()


def test_grid_places_each_image():
    images = torch.rand(5, 3 * 4 * 2)
    grid = image_grid(images, (3, 4, 2), ncol=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 3 + 1, 3)
    second = grid[1:5, 4:6].permute(2, 0, 1).float() / 255
    torch.testing.assert_close(second, images[1].reshape(3, 4, 2), atol=1 / 255, rtol=0)


def test_save_grid_upscales_small_images(tmp_path):
    save_grid(tmp_path / "g.png", torch.rand(4, 64), (1, 8, 8))
    h, w, _ = read_png(tmp_path / "g.png").shape
    assert h == w and h >= 8 * 19
