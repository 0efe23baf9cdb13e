"""shapes2d: the rendered pixels against the stated geometry (areas, centres, rotations), the factor
grid's numbering and values, and determinism."""

import functools
import math

import numpy as np
import pytest
import torch

from vaekit.data import shapes
from vaekit.errors import VaekitError

R = shapes.RADIUS


@pytest.fixture(autouse=True)
def _one_thread():
    # The renderer's kernels are memory-bound elementwise passes over [256, 64, 64] float32; on a busy
    # 2-core machine a second OpenMP thread waiting for the busy core makes them up to 100 times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def idx(shape, scale, orientation, x, y):
    """Indices [B, 5] from per-factor ints or 1-D tensors, broadcast together."""
    cols = torch.broadcast_tensors(*(torch.as_tensor(v) for v in (shape, scale, orientation, x, y)))
    return torch.stack([c.reshape(-1) for c in cols], dim=1)


def product(*values):
    """Every combination of the given per-factor index lists, as indices [M, 5]."""
    grids = torch.meshgrid(*(torch.as_tensor(v).reshape(-1) for v in values), indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)


def heart_polar(theta):
    """The implicit heart's boundary radius r(θ): the one root of (r² − 1)³ = r⁵ cos²θ sin³θ (left side
    over r⁵ increases in r), by bisection, independently of the renderer's inside test."""
    k = np.cos(theta) ** 2 * np.sin(theta) ** 3
    lo, hi = np.where(k > 0, 1.0, 0.0), np.where(k > 0, 2.0, 1.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        below = (mid**2 - 1) ** 3 < k * mid**5
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


@functools.cache
def heart_boundary():
    """(θ, r(θ)) at 200,000 midpoint angles: quadrature nodes for the heart's area, centroid, perimeter."""
    t = (np.arange(200_000) + 0.5) * (2 * np.pi / 200_000)
    return t, heart_polar(t)


@functools.cache
def unit_geometry():
    """(area, perimeter) of each shape scaled to circumradius 1 about its centre, by quadrature."""
    t, r = heart_boundary()
    ellipse_p = np.sum(np.hypot(np.sin(t), 0.5 * np.cos(t))) * (2 * np.pi / len(t))
    x, y = r * np.cos(t), r * np.sin(t)
    area = 0.5 * np.sum(r**2) * (2 * np.pi / len(t))
    perimeter = np.sum(np.hypot(np.diff(np.r_[x, x[0]]), np.diff(np.r_[y, y[0]])))
    rho = shapes.HEART_RADIUS
    return {0: (2.0, 4 * math.sqrt(2)), 1: (math.pi / 2, ellipse_p), 2: (area / rho**2, perimeter / rho)}


def test_heart_constants_are_its_centre_of_mass_and_tip():
    t, r = heart_boundary()
    centroid_y = np.sum(r**3 * np.sin(t)) / 3 / (0.5 * np.sum(r**2))
    assert shapes.HEART_CENTROID_Y == pytest.approx(centroid_y, abs=1e-9)
    farthest = np.max(np.hypot(r * np.cos(t), r * np.sin(t) - centroid_y))
    assert farthest <= shapes.HEART_RADIUS and farthest == pytest.approx(shapes.HEART_RADIUS, abs=1e-3)


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_mass_is_area_times_scale_squared(shape):
    # Positions 0..7 put the centre at all 8 phases (odd sixteenths) of a pixel in x and in y, so the
    # mean pixel count over those 64 images counts the points of a lattice of spacing h = 1/8 inside the
    # shape, times h². Each such point's h-cell lies inside the shape or within h/√2 of its boundary, so
    # |h²·count − area| ≤ area of the boundary's h/√2-tube ≤ √2·h·P + π·h²/2, for perimeter P.
    area, perimeter = unit_geometry()[shape]
    k = torch.arange(8)
    for s, scale in enumerate(np.linspace(0.5, 1.0, 6)):
        mean_count = shapes.render(product([shape], [s], [0], k, k)).double().sum((1, 2)).mean().item()
        size = R * scale
        tol = math.sqrt(2) * perimeter * size / 8 + math.pi / 128
        assert abs(mean_count - area * size**2) <= tol, (shape, scale, mean_count, area * size**2, tol)


def test_every_combination_renders_its_area_on_a_strided_sweep():
    # All shapes, scales and orientations at 8 × 8 positions (46,080 images): each single image's count
    # is within √2·P + π/2 of the area (the bound above with h = 1), at least 7 pixels, never empty.
    pos = [0, 5, 10, 15, 20, 25, 30, 31]
    geometry = unit_geometry()
    for shape in range(3):
        i = product([shape], range(6), range(40), pos, pos)
        count = shapes.render(i).double().sum((1, 2))
        area, perimeter = geometry[shape]
        size = R * torch.as_tensor(np.linspace(0.5, 1.0, 6))[i[:, 1]]
        tol = math.sqrt(2) * perimeter * size + math.pi / 2
        assert ((count - area * size**2).abs() <= tol).all()
        assert count.min() >= 7


def _centroid(images):
    im = images.double()
    rows, cols = torch.arange(64.0).view(1, 64, 1), torch.arange(64.0).view(1, 1, 64)
    mass = im.sum((1, 2))
    return (im * cols).sum((1, 2)) / mass, (im * rows).sum((1, 2)) / mass


def test_positions_8_apart_are_the_same_picture_11_pixels_apart_and_nothing_is_cut():
    # The centre of position k is R + 1.375·k, in sixteenths (exact in float32): k + 8 moves by exactly
    # 11 px. Comparing the first and last 8 positions at scale 1 in every orientation also shows the
    # shape never leaves the canvas: a cut-off part would be missing from one of the pair.
    i0 = product(range(3), [5], range(40), [0, 23], [4])
    a, b = shapes.render(i0), shapes.render(i0 + torch.tensor([0, 0, 0, 8, 0]))
    assert torch.equal(b[:, :, 11:], a[:, :, :-11])
    assert not b[:, :, :11].any() and not a[:, :, -11:].any()
    j0 = product(range(3), [5], range(40), [4], [0, 23])
    a, b = shapes.render(j0), shapes.render(j0 + torch.tensor([0, 0, 0, 0, 8]))
    assert torch.equal(b[:, 11:], a[:, :-11]) and not b[:, :11].any() and not a[:, -11:].any()


def test_centroid_follows_position():
    k = torch.arange(32)
    centre = R + shapes.STEP * k.double() - 0.5  # the stated centre, in pixel-index units
    for shape, tol in ((0, 0.5), (1, 0.5), (2, 1.0)):
        for s in (0, 5):
            cx, cy = _centroid(shapes.render(idx(shape, s, 0, k, k.flip(0))))
            # Square and ellipse at orientation 0: each row's (column's) pixels are one run whose middle
            # is within half a pixel of the centre (each end moves by less than one pixel), so the
            # centroid is too. The heart's centre of mass is its centre: within a pixel.
            assert (cx - centre).abs().max() < tol and (cy - centre.flip(0)).abs().max() < tol
            slope = np.polyfit(k.numpy(), cx.numpy(), 1)[0]
            assert slope == pytest.approx(shapes.STEP, abs=0.01)


def test_quarter_turns_of_the_square_and_half_turns_of_the_ellipse_are_exact():
    # Orientation 10 of 40 is exactly 90°; its cosine is exactly 0 and sine exactly 1, so the rotated
    # pixel offsets are the unrotated ones swapped: the square's inside test gives the same bits.
    base = product([0], range(6), [0], [0, 7, 13, 31], [0, 5, 22])
    for turn in (10, 20, 30):
        assert torch.equal(shapes.render(base), shapes.render(base + torch.tensor([0, 0, turn, 0, 0])))
    assert not torch.equal(shapes.render(base), shapes.render(base + torch.tensor([0, 0, 5, 0, 0])))  # 45°
    ellipse = base + torch.tensor([1, 0, 0, 0, 0])
    assert torch.equal(shapes.render(ellipse), shapes.render(ellipse + torch.tensor([0, 0, 20, 0, 0])))
    assert not torch.equal(shapes.render(ellipse), shapes.render(ellipse + torch.tensor([0, 0, 10, 0, 0])))


def test_the_heart_is_the_stated_region_turned_counter_clockwise_about_its_centre():
    # Each pixel centre, offset from the stated centre (y up) and turned back by −θ, is mapped into the
    # curve's coordinates; the heart is star-shaped about the curve's origin, so the point is inside iff
    # its radius is at most the boundary's r(φ) along its angle: an independent description of the
    # region. Only pixel centres within float32 rounding (1e-4 relative) of the boundary may disagree.
    o = torch.arange(0, 40, 3)
    i = product([2], [0, 5], o, [2, 17], [29])
    images = shapes.render(i).bool()
    size = R * (0.5 + 0.1 * i[:, 1].double()).view(-1, 1, 1)
    theta = (i[:, 2].double() * (2 * math.pi / 40)).view(-1, 1, 1)
    c = torch.arange(64.0, dtype=torch.float64) + 0.5
    dx = c.view(1, 1, -1) - (R + shapes.STEP * i[:, 3].double()).view(-1, 1, 1)
    dy = (R + shapes.STEP * i[:, 4].double()).view(-1, 1, 1) - c.view(1, -1, 1)
    qx, qy = torch.cos(theta) * dx + torch.sin(theta) * dy, torch.cos(theta) * dy - torch.sin(theta) * dx
    x = (qx * shapes.HEART_RADIUS / size).numpy()
    y = (qy * shapes.HEART_RADIUS / size).numpy() + shapes.HEART_CENTROID_Y
    ratio = torch.from_numpy(np.hypot(x, y) / heart_polar(np.arctan2(y, x)))
    disagree = images != (ratio <= 1)
    assert ((ratio[disagree] - 1).abs() < 1e-4).all()
    assert disagree.sum() <= 2 and images.sum() > 0.9 * (ratio <= 1).sum()  # not vacuous


def test_rendering_is_deterministic_whatever_the_batch():
    i = shapes.sample_indices(600, seed=3)
    a = shapes.render(i)
    assert torch.equal(a, shapes.render(i)) and a.dtype == torch.uint8 and set(a.unique().tolist()) == {0, 1}
    perm = torch.randperm(600)
    assert torch.equal(shapes.render(i[perm]), a[perm])
    assert torch.equal(torch.cat([shapes.render(i[:1]), shapes.render(i[1:])]), a)
    assert torch.equal(shapes.render(i, dtype=torch.float32), a.float())


def test_factor_values_follow_the_stated_formulas():
    i = shapes.all_indices({"pos_x": 3, "pos_y": 5})
    v = shapes.factor_values(i)
    assert v.dtype == torch.float64
    torch.testing.assert_close(v[:, 0], i[:, 0].double() + 1, rtol=0, atol=0)
    torch.testing.assert_close(v[:, 1], 0.5 + 0.1 * i[:, 1].double(), rtol=0, atol=1e-15)
    torch.testing.assert_close(v[:, 2], i[:, 2].double() * math.pi / 20, rtol=0, atol=1e-15)
    torch.testing.assert_close(v[:, 3:], i[:, 3:].double() / 31, rtol=0, atol=1e-15)
    ends = shapes.factor_values(torch.tensor([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31], [0, 0, 10, 0, 0]]))
    assert ends[0].tolist() == [1, 0.5, 0, 0, 0] and ends[1, [0, 1, 3, 4]].tolist() == [3, 1, 1, 1]
    assert ends[1, 2] == pytest.approx(2 * math.pi * 39 / 40, abs=1e-15) and ends[2, 2] == math.pi / 2


def test_flat_numbering_is_dsprites_order_and_subgrids_enumerate():
    assert shapes.NUM_IMAGES == 737_280 and shapes.FACTOR_SIZES == (3, 6, 40, 32, 32)
    first = shapes.from_flat(torch.tensor([0, 1, 32, 1024, shapes.NUM_IMAGES - 1]))
    assert first.tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [2, 5, 39, 31, 31]]
    every = shapes.all_indices()
    assert torch.equal(shapes.to_flat(every), torch.arange(shapes.NUM_IMAGES))
    assert torch.equal(shapes.from_flat(torch.arange(shapes.NUM_IMAGES)), every)
    sub = shapes.all_indices({"pos_x": 2, "pos_y": slice(1, None, 2), "shape": [2, 0]})
    assert len(sub) == 2 * 6 * 40 * 16 * 16
    assert set(sub[:, 0].tolist()) == {0, 2} and (sub[:, 3] % 2 == 0).all() and (sub[:, 4] % 2 == 1).all()
    assert len(set(shapes.to_flat(sub).tolist())) == len(sub)


def test_sampler_is_seeded_uniform_and_stays_in_its_subgrid():
    a = shapes.sample_indices(60_000, seed=4)
    assert torch.equal(a, shapes.sample_indices(60_000, seed=4))
    assert not torch.equal(a, shapes.sample_indices(60_000, seed=5))
    # Each shape is Binomial(60000, 1/3): 20,000 ± 115 (one σ); 5σ is 577.
    assert (torch.bincount(a[:, 0], minlength=3) - 20_000).abs().max() < 577
    b = shapes.sample_indices(5000, seed=1, subgrid={"orientation": [0, 10], "pos_x": 4})
    assert set(b[:, 2].tolist()) == {0, 10} and set(b[:, 3].tolist()) == set(range(0, 32, 4))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: shapes.render(torch.zeros(3, 4, dtype=torch.long)), r"\[B, 5\].*got \[3, 4\]"),
        (lambda: shapes.render(torch.zeros(3, 5)), r"integers, got torch.float32"),
        (lambda: shapes.render(torch.tensor([[0, 6, 0, 0, 0]])), r"row 0 has scale = 6, outside 0..5"),
        (lambda: shapes.factor_values(torch.tensor([[0, 0, 0, 0, -1]])), r"pos_y = -1"),
        (lambda: shapes.from_flat(torch.tensor([shapes.NUM_IMAGES])), r"0..737279"),
        (lambda: shapes.all_indices({"colour": 2}), r"unknown factors \['colour'\]"),
        (lambda: shapes.all_indices({"pos_x": [0, 32]}), r"pos_x=\[0, 32\] must pick distinct indices in 0..31"),
        (lambda: shapes.sample_indices(-1), r"n must be an integer ≥ 0"),
    ],
)
def test_bad_indices_are_one_line_vaekit_errors(call, message):
    with pytest.raises(VaekitError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
