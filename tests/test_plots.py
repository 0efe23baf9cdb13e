import torch
from pngread import read_png

from vaekit.pictures.png import image_grid, pairs_layout, save_grid, upscale_for, write_png


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


def test_save_grid_upscales_by_the_image_size_not_the_grid_size(tmp_path):
    for n, side in ((4, 2), (100, 10)):  # a 2×2 and a 10×10 grid of 8×8 images: each drawn 6× (48 px)
        save_grid(tmp_path / "g.png", torch.rand(n, 64), (1, 8, 8))
        assert read_png(tmp_path / "g.png").shape == (6 * (9 * side + 1), 6 * (9 * side + 1), 1)
    assert [upscale_for(s) for s in ((1, 8, 8), (1, 28, 28), (3, 5, 7), (1, 64, 64), (13,))] == [6, 2, 7, 1, 4]


def test_pairs_layout_puts_each_row_of_inputs_above_its_reconstructions():
    x, x_hat = torch.arange(10.0)[:, None], -torch.arange(10.0)[:, None]
    pairs, blocks = pairs_layout(x, x_hat, ncol=4)  # 3 blocks of 4 columns, the last filled with blank (1.0)
    assert blocks == 3 and pairs.shape == (24, 1)
    rows = pairs.reshape(6, 4)
    assert rows[0].tolist() == [0, 1, 2, 3] and rows[1].tolist() == [0, -1, -2, -3]
    assert rows[4].tolist() == [8, 9, 1, 1] and rows[5].tolist() == [-8, -9, 1, 1]
