"""Disentanglement metrics on constructed representations, where the right number is known: the true
factors (perfect), the factors mixed by a rotation (entangled), and Gaussian noise (chance)."""

import importlib.util
import itertools
import math

import numpy as np
import pytest
import torch

from vaekit import metrics
from vaekit.errors import VaekitError

SIZES = (4, 6, 10)  # three factors, every combination once: on this grid they are exactly independent
GRID = np.array(list(itertools.product(*map(range, SIZES))))  # [240, 3] int64
N_TEST = round(len(GRID) * metrics.TEST_FRACTION)
TILES = 20  # the noise tests repeat the grid: N = 4800 rows
# DCI's forests and BetaVAE's classifier are scikit-learn's, an optional dependency
needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn is not installed")


def perfect(grid=GRID):
    """The factors themselves as codes, with two constant codes between them: [N, 5]."""
    f = grid.astype(np.float64)
    return np.stack([f[:, 0], np.zeros(len(f)), f[:, 1], f[:, 2], np.full(len(f), 3.7)], axis=1)


def standardized(grid=GRID):
    f = grid.astype(np.float64)
    return (f - f.mean(0)) / f.std(0)


def hadamard_mixed():
    """Each of the 4 codes = (±f0 ± f1 ± f2)/2 of the standardized factors (a Hadamard rotation of
    [f, 0]): every code carries every factor equally, the most entangled a rotation can be."""
    h4 = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0
    return np.c_[standardized(), np.zeros(len(GRID))] @ h4.T


def rotated(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return standardized() @ q


def partly_disentangled():
    """A generic representation, neither perfect nor chance: factors and noise rotated, plus noise."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    return np.c_[standardized(), rng.normal(size=(len(GRID), 2))] @ q + 0.5 * rng.normal(size=(len(GRID), 5))


def noise():
    grid = np.tile(GRID, (TILES, 1))
    return np.random.default_rng(7).normal(size=(len(grid), 5)), grid


# --- (a) the true factors score 1 ------------------------------------------------------------------


def test_perfect_codes_have_mig_one_and_exact_mutual_information():
    # Each factor has ≤ 20 values, so each value of its code falls in a bin of its own: MI = H(factor)
    # exactly. On the full grid the other factors are exactly independent of it (the empirical joint is
    # the product of marginals) and a constant code is one bin: MI = 0. Only rounding is left.
    m = metrics.mutual_information(perfect(), GRID)
    expected = np.zeros((5, 3))
    expected[[0, 2, 3], [0, 1, 2]] = np.log(SIZES)
    np.testing.assert_allclose(m, expected, rtol=0, atol=1e-12)
    assert metrics.mig(perfect(), GRID) == pytest.approx(1.0, abs=1e-12)
    assert metrics.mig(torch.from_numpy(perfect()).float(), torch.from_numpy(GRID)) == pytest.approx(1.0, abs=1e-12)


def test_a_factor_with_more_values_than_bins_keeps_only_the_bins_information():
    # 40 values over 20 equal-width bins of [0, 39] (width 1.95): floor(v / 1.95) puts exactly two values
    # in each bin, so the perfect code carries log 20 of the factor's log 40 nats.
    grid = np.array(list(itertools.product(range(40), range(3))))
    codes = grid.astype(np.float64)
    assert metrics.mig(codes, grid) == pytest.approx((math.log(20) / math.log(40) + 1) / 2, abs=1e-12)


def test_perfect_codes_reach_sap_ceiling():
    # Its own code predicts a factor exactly (balanced accuracy 1); a constant code predicts one class
    # (balanced accuracy exactly 1/C); the other factors' codes are independent of it: chance, 1/C, give
    # or take 1/sqrt(C · N_test) (the balanced accuracy's standard deviation bound). So SAP's ceiling for
    # discrete factors is mean(1 − 1/C), not 1, and the perfect code reaches it within 3 such deviations.
    s = metrics.sap_matrix(perfect(), GRID)
    np.testing.assert_array_equal(s[[0, 2, 3], [0, 1, 2]], 1.0)
    np.testing.assert_allclose(s[[1, 4]], np.tile(1 / np.array(SIZES), (2, 1)), rtol=0, atol=1e-12)
    ceiling = np.mean(1 - 1 / np.array(SIZES))
    slack = np.mean(3 / np.sqrt(np.array(SIZES) * N_TEST))
    assert ceiling - slack <= metrics.sap(perfect(), GRID) <= ceiling + 1e-12
    # Real-valued factors use R² (the paper's choice): the grid's factors are exactly uncorrelated, so 1.
    assert metrics.sap(perfect(), GRID * 0.1 + 0.5) == pytest.approx(1.0, abs=1e-12)


@needs_sklearn
def test_perfect_codes_have_dci_one():
    # A tree only splits on the factor's own code (it separates the classes; no other code helps on the
    # full grid) and never on a constant code: R has one non-zero entry per factor column and per used
    # code row, so both entropies are 0.
    d = metrics.dci(perfect(), GRID)
    assert (d.disentanglement, d.completeness, d.informativeness) == pytest.approx((1, 1, 1), abs=1e-12)
    assert np.count_nonzero(d.importance) == 3 and d.importance[[0, 2, 3], [0, 1, 2]].all()


@needs_sklearn
def test_real_valued_factors_with_few_values_keep_them_as_classes():
    # Floating factors are real: cut into 20 equal-count bins whose edges are data values, so a factor
    # with ≤ 20 values, each holding ≥ 1/20 of the rows, keeps every value as a class: the same MI and
    # MIG as the integer labels. DCI then regresses (R²) instead of classifying: still exactly 1.
    real = GRID * 0.1 + 0.5
    np.testing.assert_allclose(metrics.mutual_information(perfect(), real),
                               metrics.mutual_information(perfect(), GRID), rtol=0, atol=1e-12)
    d = metrics.dci(torch.from_numpy(perfect()).to(torch.bfloat16), torch.from_numpy(real).float())
    assert (d.disentanglement, d.completeness, d.informativeness) == pytest.approx((1, 1, 1), abs=1e-12)
    assert metrics.factorvae_score(perfect(), real, num_train=500, num_eval=500) == 1.0


@needs_sklearn
def test_perfect_codes_win_every_vote():
    # Fixing factor k makes its code constant over the batch (variance exactly 0) while every other
    # active code varies, and the constant codes are pruned: every vote is (k, k's code). In BetaVAE's
    # points k's code difference is exactly 0 and every other factor's positive: linearly separable.
    assert metrics.factorvae_score(perfect(), GRID, num_train=2000, num_eval=1000) == 1.0
    assert metrics.betavae_score(perfect(), GRID, num_train=2000, num_eval=1000) == 1.0


# --- (b) a rotation entangles ----------------------------------------------------------------------


@needs_sklearn
def test_the_hadamard_mixture_has_no_mutual_information_gap():
    # Every code is (±f0 ± f1 ± f2)/2 of symmetric standardized factors: flipping a factor's sign maps one
    # code's joint distribution with any factor onto another's, so all codes are equally informative.
    m = metrics.mutual_information(hadamard_mixed(), GRID)
    np.testing.assert_allclose(m, np.tile(m[0], (4, 1)), rtol=0, atol=1e-12)
    assert metrics.mig(hadamard_mixed(), GRID) == pytest.approx(0.0, abs=1e-12)
    assert metrics.dci(hadamard_mixed(), GRID).disentanglement < 0.05


@needs_sklearn
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_rotations_lower_mig_and_dci_markedly(seed):
    # Four seeded rotations of the three standardized factors: each factor now spreads over several codes.
    codes = rotated(seed)
    assert metrics.mig(codes, GRID) < 0.6
    d = metrics.dci(codes, GRID)
    assert d.disentanglement < 0.6 and d.completeness < 0.6
    assert d.informativeness > 0.5  # the information is still there, only mixed


# --- (c) noise scores chance -----------------------------------------------------------------------


def test_noise_mutual_information_is_the_plug_in_bias():
    # Under independence 2N·MI_plug-in ≈ χ² with (B − 1)(C − 1) degrees of freedom (the G-test), B the
    # occupied code bins: mean (B − 1)(C − 1)/(2N) nats, standard deviation sqrt(2 (B − 1)(C − 1))/(2N).
    # The average over the 5 codes lies within 4 of its standard deviations (σ/√5) of that bias.
    z, grid = noise()
    n = len(z)
    m = metrics.mutual_information(z, grid)
    bins = np.floor((z - z.min(0)) / ((z.max(0) - z.min(0)) / 20)).clip(0, 19)
    occupied = np.array([np.unique(bins[:, k]).size for k in range(5)])
    for j, c in enumerate(SIZES):
        dof = (occupied - 1) * (c - 1)
        bias, sd = dof / (2 * n), np.sqrt(2 * dof) / (2 * n)
        assert abs(m[:, j].mean() - bias.mean()) < 4 * sd.mean() / math.sqrt(5)
    # MIG takes the gap between the top two such draws, well within 3σ/H of 0 per factor; a MIG that
    # forgot the gap (the largest MI alone, ≈ bias/H ≈ 0.006) would fail.
    tol = np.mean([3 * math.sqrt(2 * 19 * (c - 1)) / (2 * n) / math.log(c) for c in SIZES])
    assert 0 <= metrics.mig(z, grid) < tol


@needs_sklearn
def test_noise_sap_and_dci_are_near_zero():
    z, grid = noise()
    n_test = round(len(z) * metrics.TEST_FRACTION)
    # Every code's balanced accuracy is 1/C ± 1/sqrt(C · N_test): the top-two gap stays within 3 of those.
    assert metrics.sap(z, grid) < np.mean(3 / np.sqrt(np.array(SIZES) * n_test))
    # A forest spreads each factor's importance (normalized to 1 per factor) evenly over noise codes, so
    # each row is near uniform: 1 − H/log F ≈ mean(ε²)/(2 log F) for relative spread ε, < 0.05 even for
    # ε = 0.3. Informativeness is the chance accuracy mean(1/C) ≈ 0.17, give or take a few points.
    d = metrics.dci(z, grid)
    assert d.disentanglement < 0.05 and d.completeness < 0.05
    assert d.informativeness == pytest.approx(np.mean(1 / np.array(SIZES)), abs=0.03)


@needs_sklearn
def test_noise_vote_scores_are_chance():
    # With codes independent of the factor, each eval vote is right with probability 1/F: the score is
    # Binomial(num_eval, 1/3)/num_eval, σ = 0.0067 for 5000 votes. Drawing from finite groups (480 to
    # 1200 rows) ties each group to its own sample variances, a bias of well under a point; 5σ covers both.
    z, grid = noise()
    assert metrics.factorvae_score(z, grid) == pytest.approx(1 / 3, abs=0.035)
    assert metrics.betavae_score(z, grid) == pytest.approx(1 / 3, abs=0.035)


# --- (d) invariances -------------------------------------------------------------------------------

PERM = [3, 0, 4, 1, 2]
SCALE = np.array([3.0, 0.5, 2.0, 1.0, 0.7])  # within a factor 6: no code crosses FactorVAE's 0.05 prune line


def _all_scores(codes):
    d = metrics.dci(codes, GRID)
    return {
        "mig": metrics.mig(codes, GRID),
        "sap": metrics.sap(codes, GRID),
        "dci_d": d.disentanglement,
        "dci_c": d.completeness,
        "dci_i": d.informativeness,
        "factorvae": metrics.factorvae_score(codes, GRID, num_train=2000, num_eval=2000),
        "betavae": metrics.betavae_score(codes, GRID, num_train=2000, num_eval=2000),
    }


@needs_sklearn
def test_permuting_codes_changes_no_metric():
    z = partly_disentangled()
    before, after = _all_scores(z), _all_scores(z[:, PERM])
    assert 0.1 < before["mig"] < 0.9 and before["factorvae"] < 1  # not a trivially perfect case
    assert after == pytest.approx(before, abs=1e-12)


@needs_sklearn
def test_positive_rescaling_changes_the_invariant_metrics_only():
    # MIG (equal-width bins move with the scale), SAP (thresholds between class means), DCI (trees see
    # ranks) and FactorVAE (codes divided by their std) are invariant; BetaVAE is not (its logistic
    # regression's L2 penalty sees the scales), so it is left out here.
    z = partly_disentangled()
    before, after = _all_scores(z), _all_scores(z * SCALE)
    del before["betavae"], after["betavae"]
    assert after == pytest.approx(before, abs=1e-12)


def test_same_seed_same_scores_and_seed_matters_for_votes():
    z = partly_disentangled()
    a = metrics.factorvae_score(z, GRID, num_train=500, num_eval=500, seed=5)
    assert a == metrics.factorvae_score(z, GRID, num_train=500, num_eval=500, seed=5)
    scores = {metrics.factorvae_score(z, GRID, num_train=500, num_eval=500, seed=s) for s in range(4)}
    assert len(scores) > 1


# --- (e) bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.mig(perfect()[:-1], GRID), r"codes \[239, 5\] and factors \[240, 3\] disagree in N"),
        (lambda: metrics.sap(perfect()[:, 0], GRID), r"codes must be \[N, K\].*\[240\]"),
        (lambda: metrics.dci(perfect(), GRID[:, :1]), r"≥ 2 factors.*factors \[240, 1\]"),
        (lambda: metrics.mig(perfect()[:, :1], GRID), r"≥ 2 code dimensions"),
        (lambda: metrics.mig(perfect(), np.c_[GRID, np.zeros(240, int)]), r"factor 3 takes a single value"),
        (lambda: metrics.mig(perfect() * np.nan, GRID), r"finite"),
        (lambda: metrics.mig(perfect() + 0j, GRID), r"real numbers"),
        (lambda: metrics.mig(perfect(), GRID, num_bins=1), r"num_bins must be an integer ≥ 2"),
        (lambda: metrics.dci(perfect(), GRID, regressor="lasso"), r"regressor must be"),
        (lambda: metrics.factorvae_score(perfect(), GRID, batch_size=1), r"batch_size must be an integer ≥ 2"),
        (lambda: metrics.factorvae_score(perfect(), GRID, prune=1.0), r"prune must be in \[0, 1\)"),
        (lambda: metrics.betavae_score(perfect()[:3], GRID[[0, 1, 239]]), r"has one row.*several rows"),
    ],
)
def test_bad_input_is_one_line_vaekit_error(call, message):
    with pytest.raises(VaekitError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_the_factorvae_score_ignores_a_rescaling_up_to_1e300():
    """Issue 27: codes scaled by 1e300 squared to inf and the score collapsed; it is invariant to positive
    rescaling, so the same votes must come out (the same seed draws the same batches)."""
    rng = np.random.default_rng(0)
    f = np.stack([rng.integers(0, 3, 2000), rng.integers(0, 4, 2000)], 1)
    z = np.stack([f[:, 0] + 2.5 * rng.standard_normal(2000), f[:, 1] + 2.5 * rng.standard_normal(2000),
                  rng.standard_normal(2000)], 1)
    base = metrics.factorvae_score(z, f, seed=0, num_train=2000, num_eval=1000)
    assert 0.6 < base < 1.0  # not trivially perfect: a real vote
    for scale in (1e-300, 1e300):  # one scale for all codes: per code, `prune` would see collapsed ones
        assert metrics.factorvae_score(z * scale, f, seed=0, num_train=2000, num_eval=1000) == base


def test_the_betavae_score_ignores_a_global_rescaling_of_the_codes():
    """Issue 27: raw, an L2-penalized classifier made codes scaled by 1e-3 score at chance and 1e300 overflow; the
    points are now in units of their RMS, so one scale on every code gives the same classifier, the same score."""
    rng = np.random.default_rng(0)
    f = np.stack([rng.integers(0, 5, 3000), rng.integers(0, 5, 3000)], 1)
    z = np.stack([f[:, 0] + 1.5 * rng.standard_normal(3000), f[:, 1] + 1.5 * rng.standard_normal(3000),
                  rng.standard_normal(3000)], 1)
    base = metrics.betavae_score(z, f, seed=0, num_train=1000, num_eval=500)
    assert 0.6 < base < 1.0
    for scale in (2.0 ** -990, 1e-3, 2.0 ** 990):  # powers of two: z·s and its RMS scale exactly
        assert metrics.betavae_score(z * scale, f, seed=0, num_train=1000, num_eval=500) == base
