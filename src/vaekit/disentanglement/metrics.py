"""Disentanglement metrics on arrays of codes: MIG, SAP, DCI, and the FactorVAE and BetaVAE scores.

Every function takes `codes` [N, K] (numpy or torch, real: posterior means, or any representation,
vaekit's or not) and `factors` [N, F], the ground-truth factors of the same N rows. An integer (or
bool) `factors` array holds class labels (any integers: a factor's distinct values are its classes);
a floating `factors` array holds real values, which the metrics that need classes (MIG's entropies,
SAP's and DCI's classifiers, the vote scores' groups) discretize into NUM_BINS equal-count bins (ties
stay in one bin, so a real factor with at most NUM_BINS well-filled values keeps them all as classes).
Computation is float64 numpy; everything random draws from `numpy.random.default_rng(seed)`, so the
same arrays and seed give the same number.

Defaults follow disentanglement_lib (Locatello et al. 2019, "Challenging common assumptions in the
unsupervised learning of disentangled representations", ICML) unless a docstring says otherwise.
DCI and BetaVAE fit scikit-learn models (imported when called: `pip install scikit-learn`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..errors import VaekitError

NUM_BINS = 20  # disentanglement_lib's histogram discretization of codes for MIG; also our real-factor bins
TEST_FRACTION = 0.2  # SAP's and DCI's held-out rows: a seeded permutation's first 20 %
VOTE_CHUNK = 1024  # votes whose [votes, batch, K] code gathers are held at once

Array = np.ndarray | torch.Tensor
Seed = int | np.random.Generator


class DCI(NamedTuple):
    """Eastwood & Williams (2018): disentanglement and completeness in [0, 1] (1 best), informativeness
    as the held-out accuracy (R² for real factors) averaged over factors (1 best; the paper reports an
    error, 1 − this), and the importance matrix R [K, F] they were computed from."""

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray


# --- inputs ---------------------------------------------------------------------------------------


def _array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):  # any device; float16/bfloat16 have no numpy twin, so widen first
        x = (x.detach().cpu().double() if x.is_floating_point() else x.detach().cpu()).numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise VaekitError(f"{name} must be [N, {'K' if name == 'codes' else 'F'}] with N ≥ 2, got {list(x.shape)}")
    if x.dtype.kind not in "biuf":
        raise VaekitError(f"{name} must be real numbers, got dtype {x.dtype}")
    return x


def _equal_count_bins(v: np.ndarray, num_bins: int) -> np.ndarray:
    """Labels of num_bins equal-count bins of v; edges are data values, so equal values share a bin. The edge
    at quantile i/B is the (iN/B)-th smallest value and closes bin i−1 (side "left"): N = 1000 in 20 bins gives 50
    each, not 49, 50, …, 51."""
    edges = np.quantile(v, np.arange(1, num_bins) / num_bins, method="inverted_cdf")
    return np.searchsorted(edges, v, side="left")


def _prepare(codes, factors, min_codes: int = 1, min_factors: int = 1):
    """(z float64 [N, K], labels int64 [N, F] in 0..C_j−1, values float64 [N, F], real factors?)."""
    z, y = _array(codes, "codes"), _array(factors, "factors")
    if z.shape[0] != y.shape[0]:
        raise VaekitError(f"codes {list(z.shape)} and factors {list(y.shape)} disagree in N")
    if z.shape[1] < min_codes or y.shape[1] < min_factors:
        raise VaekitError(f"needs ≥ {min_codes} code dimensions and ≥ {min_factors} factors, got codes "
                          f"{list(z.shape)}, factors {list(y.shape)}")
    z, values, real = z.astype(np.float64), y.astype(np.float64), y.dtype.kind == "f"
    if not (np.isfinite(z).all() and np.isfinite(values).all()):
        raise VaekitError("codes and factors must be finite (found NaN or Inf)")
    for _ in range(2 if real else 0):  # scores of a real factor are invariant to its affine rescaling: scaled and
        values = values / np.where(np.abs(values).max(0) > 0, np.abs(values).max(0), 1.0)  # centred, 1e300 overflows
        values = values - values.mean(0)  # nothing (a variance of 1e300 values was inf, its scores NaN)
    columns = [_equal_count_bins(c, NUM_BINS) if real else c for c in (values if real else y).T]  # ints as stored
    labels = np.stack([np.unique(c, return_inverse=True)[1].reshape(-1) for c in columns], axis=1)
    if (single := np.flatnonzero(labels.max(axis=0) == 0)).size:
        raise VaekitError(f"factor {int(single[0])} takes a single value in factors {list(y.shape)}")
    return z, labels.astype(np.int64), values, real


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _split(n: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): the first TEST_FRACTION of a seeded permutation is the test set."""
    perm = _rng(seed).permutation(n)
    n_test = max(1, round(n * TEST_FRACTION))
    return perm[n_test:], perm[:n_test]


def _positive(**kwargs) -> None:
    for name, (value, least) in kwargs.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise VaekitError(f"{name} must be an integer ≥ {least}, got {value}")


# --- MIG ------------------------------------------------------------------------------------------


def _histogram_bins(z: np.ndarray, num_bins: int) -> np.ndarray:
    """Each column cut into num_bins equal-width bins over [min, max] (np.histogram's edges, as
    disentanglement_lib's histogram_discretize); a constant column is one bin."""
    lo, hi = z.min(axis=0), z.max(axis=0)
    width = np.where(hi > lo, (hi - lo) / num_bins, 1.0)
    return np.clip(np.floor((z - lo) / width), 0, num_bins - 1).astype(np.int64)


def _plug_in_mi(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two label arrays, from their empirical joint distribution."""
    nb = int(b.max()) + 1
    joint = np.bincount(a * nb + b, minlength=(int(a.max()) + 1) * nb).reshape(-1, nb) / a.size
    outer = np.outer(joint.sum(axis=1), joint.sum(axis=0))
    nz = joint > 0
    return max(float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz]))), 0.0)


def _entropy(labels: np.ndarray) -> float:
    p = np.bincount(labels)[np.bincount(labels) > 0] / labels.size
    return float(-np.sum(p * np.log(p)))


def _mi_matrix(z: np.ndarray, labels: np.ndarray, num_bins: int) -> np.ndarray:
    bins = _histogram_bins(z, num_bins)
    return np.array([[_plug_in_mi(bins[:, k], labels[:, j]) for j in range(labels.shape[1])]
                     for k in range(z.shape[1])])


def mutual_information(codes: Array, factors: Array, num_bins: int = NUM_BINS) -> np.ndarray:
    """The plug-in mutual information [K, F] in nats between each code, cut into `num_bins` equal-width
    bins, and each factor (its classes, or its equal-count bins if real). Under independence it is
    biased upwards by ≈ (B − 1)(C − 1)/(2N) nats for B occupied code bins and C factor classes."""
    _positive(num_bins=(num_bins, 2))
    z, labels, _, _ = _prepare(codes, factors)
    return _mi_matrix(z, labels, num_bins)


def mig(codes: Array, factors: Array, num_bins: int = NUM_BINS) -> float:
    """Mutual information gap (Chen et al. 2018, "Isolating sources of disentanglement in VAEs", eq. 6):
    per factor, the gap between the two codes most informative about it, over the factor's entropy;
    averaged over factors. In [0, 1]; invariant to permuting codes and to any affine map of a code.

    MI is disentanglement_lib's: codes binned into 20 equal-width bins, plug-in estimate. A perfect code
    of a factor with more than `num_bins` values scores below 1 (its values share bins): a 40-valued
    factor gets log 20 / log 40 ≈ 0.81."""
    _positive(num_bins=(num_bins, 2))
    z, labels, _, _ = _prepare(codes, factors, min_codes=2)
    top = -np.sort(-_mi_matrix(z, labels, num_bins), axis=0)
    entropy = np.array([_entropy(labels[:, j]) for j in range(labels.shape[1])])
    return float(np.mean((top[0] - top[1]) / entropy))


# --- SAP ------------------------------------------------------------------------------------------


def _threshold_accuracy(z_tr, y_tr, z_te, y_te) -> float:
    """Balanced accuracy of a 1-D thresholded classifier: thresholds halfway between the (sorted) class
    means of the training rows, i.e. the nearest class mean. Invariant to affine maps of the code."""
    counts = np.bincount(y_tr)
    classes = np.flatnonzero(counts)
    means = np.bincount(y_tr, weights=z_tr)[classes] / counts[classes]
    pred = classes[np.argmin(np.abs(z_te[:, None] - means[None, :]), axis=1)]
    return float(np.mean([np.mean(pred[y_te == c] == c) for c in np.unique(y_te)]))


def _r_squared(a: np.ndarray, b: np.ndarray) -> float:
    """R² of the least-squares line through (a, b): their squared correlation (0 if either is constant)."""
    va, vb = a.var(), b.var()
    return float(np.mean((a - a.mean()) * (b - b.mean())) ** 2 / (va * vb)) if va > 0 and vb > 0 else 0.0


def sap_matrix(codes: Array, factors: Array, seed: Seed = 0) -> np.ndarray:
    """SAP's score matrix S [K, F] (Kumar et al. 2018, §3): how well code k alone predicts factor j.
    Discrete factors: balanced held-out accuracy of a thresholded 1-D classifier (nearest class mean;
    trained on 80 % of the rows, tested on the other 20 %, a permutation drawn from `seed`). Real
    factors: R² of a linear regression on all rows, as the paper. disentanglement_lib fits a
    LinearSVC(C=0.01) instead, whose regularization makes the score depend on each code's scale."""
    z, labels, values, real = _prepare(codes, factors)
    if real:
        return np.array([[_r_squared(z[:, k], values[:, j]) for j in range(values.shape[1])]
                         for k in range(z.shape[1])])
    tr, te = _split(z.shape[0], seed)
    return np.array([[_threshold_accuracy(z[tr, k], labels[tr, j], z[te, k], labels[te, j])
                      for j in range(labels.shape[1])] for k in range(z.shape[1])])


def sap(codes: Array, factors: Array, seed: Seed = 0) -> float:
    """Separated attribute predictability (Kumar et al. 2018, "Variational inference of disentangled
    latent concepts from unlabeled observations", ICLR): per factor, the gap between the two best
    entries of its column of `sap_matrix`, averaged over factors. Invariant to permuting codes and to
    positive rescaling of a code."""
    s = sap_matrix(codes, factors, seed)
    if s.shape[0] < 2:
        raise VaekitError(f"sap needs ≥ 2 code dimensions, got codes with {s.shape[0]}")
    top = -np.sort(-s, axis=0)
    return float(np.mean(top[0] - top[1]))


# --- DCI ------------------------------------------------------------------------------------------


def _sklearn():
    try:
        import sklearn.base
        import sklearn.ensemble
        import sklearn.linear_model
    except ImportError:
        raise VaekitError("dci and betavae_score need scikit-learn: pip install scikit-learn") from None
    return sklearn


def _model(regressor, real: bool, seed: int):
    """A fresh predictor of one factor from all codes; see `dci` for the choices."""
    sk = _sklearn()
    if not isinstance(regressor, str):
        return sk.base.clone(regressor)
    if regressor == "forest":
        kind = sk.ensemble.RandomForestRegressor if real else sk.ensemble.RandomForestClassifier
        return kind(n_estimators=20, max_features=None, min_samples_leaf=2, random_state=seed, n_jobs=1)
    if regressor == "gbt":
        kind = sk.ensemble.GradientBoostingRegressor if real else sk.ensemble.GradientBoostingClassifier
        return kind(random_state=seed)
    raise VaekitError(f"regressor must be 'forest', 'gbt' or a scikit-learn estimator, got {regressor!r}")


def _importance(model) -> np.ndarray:
    if hasattr(model, "feature_importances_"):
        return np.abs(model.feature_importances_)
    coef = np.abs(np.atleast_2d(model.coef_))  # a linear model: [classes, K] or [1, K]
    return coef.sum(axis=0)


def _one_minus_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """1 − H(p normalized along axis) / log(size along axis); 0 log 0 = 0, an all-zero slice gives 0."""
    mass = p.sum(axis=axis, keepdims=True)
    q = np.divide(p, mass, out=np.full_like(p, 1.0 / p.shape[axis]), where=mass > 0)
    h = -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), axis=axis)
    return 1.0 - h / np.log(p.shape[axis])


def _weighted(per: np.ndarray, mass: np.ndarray) -> float:
    return float(np.sum(per * mass) / mass.sum()) if mass.sum() > 0 else 0.0


def _canonical_ranks(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each code's dense ranks over all rows, in a canonical column order; that order). A tree depends
    on a code only through the order of its values, so nothing is lost; but scikit-learn breaks ties
    between equally good splits (common on factor grids) by a random feature order, and a threshold
    halfway between two values can meet a test value exactly. Fed ranks in this order, the trees (and
    R) follow any permutation or increasing map of the codes exactly."""
    ranks = np.stack([np.unique(c, return_inverse=True)[1].reshape(-1) for c in z.T], axis=1).astype(np.float64)
    order = np.lexsort(ranks[::-1])  # columns sorted by their rank vectors, row 0 first
    return ranks[:, order], order


def dci(codes: Array, factors: Array, regressor="forest", seed: int = 0) -> DCI:
    """DCI (Eastwood & Williams 2018, "A framework for the quantitative evaluation of disentangled
    representations", ICLR): R[k, j] = importance of code k in predicting factor j; disentanglement =
    Σ_k ρ_k (1 − H_F(R[k, :])), ρ_k = code k's share of all importance; completeness likewise over each
    factor's column (H_K); informativeness = held-out accuracy (R² for real factors). Rows split 80/20
    by a permutation drawn from `seed`.

    regressor: "forest" (default) is the paper's random forest, 20 trees using every code at each split
    and 2 rows per leaf: a few tenths of a second per factor on thousands of rows, where "gbt",
    disentanglement_lib's choice (GradientBoostingClassifier's defaults: 100 stages of depth-3 trees,
    one tree per class per stage), takes 10 to 100 times longer. Both see each code's ranks (see
    `_canonical_ranks`): exactly invariant to permuting codes and to increasing maps of a code. Any other
    scikit-learn estimator with `feature_importances_` or `coef_` may be given: it is cloned and fit
    on the raw codes. The numbers depend on the regressor: compare them only for the same one."""
    z, labels, values, real = _prepare(codes, factors, min_codes=2, min_factors=2)
    x, order = _canonical_ranks(z) if isinstance(regressor, str) else (z, np.arange(z.shape[1]))
    tr, te = _split(z.shape[0], seed)
    importance, info = np.zeros((z.shape[1], labels.shape[1])), []
    for j in range(labels.shape[1]):
        target = values[:, j] if real else labels[:, j]
        model = _model(regressor, real, seed).fit(x[tr], target[tr])
        importance[order, j] = _importance(model)
        info.append(model.score(x[te], target[te]))
    d = _weighted(_one_minus_entropy(importance, axis=1), importance.sum(axis=1))
    c = _weighted(_one_minus_entropy(importance, axis=0), importance.sum(axis=0))
    return DCI(d, c, float(np.mean(info)), importance)


# --- the vote scores ------------------------------------------------------------------------------


class _Groups:
    """Rows grouped by each factor's class: draws rows that share factor k's class with given rows."""

    def __init__(self, labels: np.ndarray):
        self.order = np.argsort(labels, axis=0, kind="stable").T  # [F, N]
        counts = [np.bincount(labels[:, j], minlength=int(labels.max()) + 1) for j in range(labels.shape[1])]
        self.count = np.stack(counts)  # [F, C_max]
        self.start = np.cumsum(self.count, axis=1) - self.count
        self.labels = labels
        j, c = np.nonzero(self.count == 1)
        if j.size:
            raise VaekitError(f"factor {int(j[0])}'s class {int(c[0])} has one row of factors "
                              f"{list(labels.shape)}: the vote scores need several rows per factor value")

    def partners(self, rows: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each entry of rows (any shape, k broadcast to it), a uniform row with the same class of k."""
        cls = self.labels[rows, k]
        offset = np.floor(rng.random(rows.shape) * self.count[k, cls]).astype(np.int64)
        return self.order[k, self.start[k, cls] + offset]


def _factorvae_votes(zn, groups: _Groups, batch_size: int, num: int, rng) -> np.ndarray:
    """votes [F, K']: for each of `num` votes, a factor k, batch_size rows sharing k's value (that of a
    uniformly drawn row), and the code of least variance over them."""
    num_factors = groups.labels.shape[1]
    votes = np.zeros((num_factors, zn.shape[1]), dtype=np.int64)
    for size in np.diff(np.r_[np.arange(0, num, VOTE_CHUNK), num]):
        k = rng.integers(num_factors, size=size)
        anchor = rng.integers(zn.shape[0], size=size)
        rows = groups.partners(np.repeat(anchor[:, None], batch_size, axis=1), k[:, None], rng)
        np.add.at(votes, (k, np.argmin(zn[rows].var(axis=1, ddof=1), axis=1)), 1)
    return votes


def _check_votes(batch_size, num_train, num_eval, min_batch: int) -> None:
    _positive(batch_size=(batch_size, min_batch), num_train=(num_train, 1), num_eval=(num_eval, 1))


def factorvae_score(codes: Array, factors: Array, batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                    prune: float = 0.05, seed: Seed = 0) -> float:
    """FactorVAE score (Kim & Mnih 2018, "Disentangling by factorising", ICML, §4): codes are divided by
    their standard deviation over all rows; each vote fixes a factor k (uniform), draws batch_size
    rows sharing k's value, and votes (k, the code of least variance over them); a majority-vote
    classifier (each code → its most voted factor) is fit on num_train votes and its accuracy on
    num_eval fresh votes returned (chance: 1/F).

    Instead of rendering new images, the rows are drawn (with replacement) from the given arrays, so
    every factor value needs several rows: a full factor grid or a large sample. Codes whose std is at
    most `prune` × the largest std are left out, as the paper prunes collapsed dimensions
    (disentanglement_lib's threshold is 0, where an exactly constant code would divide 0 by 0).
    Defaults are disentanglement_lib's. Invariant to permuting codes and to positive rescaling of a
    code that leaves it on the same side of the pruning threshold."""
    _check_votes(batch_size, num_train, num_eval, min_batch=2)
    if not 0 <= prune < 1:
        raise VaekitError(f"prune must be in [0, 1), got {prune}")
    z, labels, _, _ = _prepare(codes, factors, min_factors=2)
    groups, rng = _Groups(labels), _rng(seed)
    size = np.abs(z).max(axis=0)
    size = np.where(size > 0, size, 1.0)
    z = z / size  # a positive rescaling, which the score ignores: codes of 1e300 would square to inf
    zs = z.std(axis=0, ddof=1)
    std = zs * size  # each code's std in its own units (at most its largest value: no overflow), for `prune`
    active = std > prune * std.max()
    if not active.any():
        return 0.0  # every code is constant: no vote can say anything
    zn = z[:, active] / zs[active]
    classifier = np.argmax(_factorvae_votes(zn, groups, batch_size, num_train, rng), axis=0)
    votes = _factorvae_votes(zn, groups, batch_size, num_eval, rng)
    return float(votes[classifier, np.arange(zn.shape[1])].sum() / votes.sum())


def _betavae_points(z, groups: _Groups, batch_size: int, num: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(features [num, K], factor k [num]): the mean |z1 − z2| over batch_size pairs of rows sharing k."""
    num_factors = groups.labels.shape[1]
    features, ks = [], []
    for size in np.diff(np.r_[np.arange(0, num, VOTE_CHUNK), num]):
        k = rng.integers(num_factors, size=size)
        first = rng.integers(z.shape[0], size=(size, batch_size))
        second = groups.partners(first, k[:, None], rng)
        features.append(np.abs(z[first] - z[second]).mean(axis=1))
        ks.append(k)
    return np.concatenate(features), np.concatenate(ks)


def betavae_score(codes: Array, factors: Array, batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                  seed: Seed = 0) -> float:
    """BetaVAE score (Higgins et al. 2017, "β-VAE: learning basic visual concepts with a constrained
    variational framework", ICLR, §3): each point fixes a factor k (uniform) and averages |z1 − z2|
    over batch_size pairs of rows sharing k's value (each pair its own value); a linear classifier
    (scikit-learn LogisticRegression, as disentanglement_lib) learns k from num_train points, and its
    accuracy on num_eval fresh points is returned (chance 1/F). Rows come from the given arrays, as in
    `factorvae_score`. One departure from disentanglement_lib: the points are divided by their root mean
    square over the training points (one number), so the score does not change when every code is scaled by
    the same factor (raw, the classifier's L2 penalty turned codes scaled by 1e-3 to chance, and 1e300
    overflowed); rescaling one code against the others still changes it."""
    _check_votes(batch_size, num_train, num_eval, min_batch=1)
    z, labels, _, _ = _prepare(codes, factors, min_factors=2)
    sk = _sklearn()
    groups, rng = _Groups(labels), _rng(seed)
    x_tr, k_tr = _betavae_points(z, groups, batch_size, num_train, rng)
    x_ev, k_ev = _betavae_points(z, groups, batch_size, num_eval, rng)
    if np.unique(k_tr).size < 2:
        raise VaekitError(f"num_train={num_train} points drew a single factor: give more")
    top = float(np.abs(x_tr).max())
    unit = top * float(np.sqrt(np.mean(np.square(x_tr / top)))) if top > 0 else 1.0  # the RMS, without overflow
    model = sk.linear_model.LogisticRegression(max_iter=2000, random_state=0).fit(x_tr / unit, k_tr)
    return float(model.score(x_ev / unit, k_ev))
