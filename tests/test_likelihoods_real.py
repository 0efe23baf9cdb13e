"""The likelihoods for data as recorded (continuous Bernoulli, 8-bit, counts): log-probabilities against
float64 closed forms, means against samples, the data layer's 8-bit support, and the CLI end to end."""

import json
import math

import numpy as np
import pytest
import torch
from run_cli import vaekit_cli

from vaekit.data import load_dataset
from vaekit.data.builtin import read_builtin
from vaekit.errors import VaekitError
from vaekit.evaluation.estimates import bits_per_dim_of
from vaekit.model import VAE, GenerativeModel
from vaekit.parts.likelihoods import (
    EIGHT_BIT,
    LIKELIHOODS,
    Categorical256,
    ContinuousBernoulliLogits,
    DiscretizedLogistic,
    NegativeBinomialLogMean,
    PoissonLogRate,
    cb_log_norm,
    cb_mean,
    likelihood_support,
)
from vaekit.parts.likelihoods.eight_bit import LOG_SCALE_MAX, LOG_SCALE_MIN

D64 = torch.float64
LEVELS = torch.arange(256, dtype=D64) / 255
NEW = ("continuous-bernoulli", "discretized-logistic", "categorical", "poisson", "negative-binomial")


def logit64(lam):
    lam = torch.as_tensor(lam, dtype=D64)
    return torch.log(lam) - torch.log1p(-lam)


def cb_log_c_lambda(lam):
    """log C(λ) = log[2 artanh(1 − 2λ)/(1 − 2λ)] as Loaiza-Ganem & Cunningham write it, float64."""
    t = 1 - 2 * lam
    return torch.log(2 * torch.atanh(t) / t)


# --- continuous Bernoulli ---------------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.5 + 1e-4, 0.5 - 1e-4, 0.5 + 1e-2, 0.5 - 1e-2, 0.5 + 2e-3, 0.3, 0.9, 1e-3])
def test_cb_log_prob_near_and_far_from_one_half(lam):
    eta = logit64(lam).float()  # the float32 logit the network would give
    lam64 = torch.sigmoid(eta.double())  # the λ it stands for, exactly
    x = torch.tensor([0.0, 0.3, 1.0])
    want = x.double() * torch.log(lam64) + (1 - x.double()) * torch.log1p(-lam64) + cb_log_c_lambda(lam64)
    got = ContinuousBernoulliLogits(eta.expand(3)).log_prob(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=5e-7, rtol=0)


def test_cb_constant_at_one_half_and_for_large_logits():
    assert abs(float(cb_log_norm(torch.tensor(0.0))) - math.log(2)) < 1e-7
    eta = torch.tensor([-1e4, -50.0, -20.0, 20.0, 50.0, 1e4])
    want = torch.log(eta.double() / torch.tanh(eta.double() / 2))  # = log C(λ) without forming λ ≈ 1
    torch.testing.assert_close(cb_log_norm(eta).double(), want, atol=2e-6, rtol=1e-7)
    # why not torch.distributions.ContinuousBernoulli: it clamps λ to [ε, 1 − ε], so in float32 its
    # constant freezes beyond |η| ≈ 16 (0.2 nats per value wrong at η = 20, where ours is exact)
    ours = ContinuousBernoulliLogits(torch.tensor(20.0)).log_prob(torch.tensor(1.0))
    theirs = torch.distributions.ContinuousBernoulli(logits=torch.tensor(20.0)).log_prob(torch.tensor(1.0))
    exact = -math.log1p(math.exp(-20.0)) + float(want[3])
    assert abs(float(ours) - exact) < 1e-5 and abs(float(theirs) - exact) > 0.1


def test_cb_gradients_are_finite_and_right_across_the_band():
    eta = torch.tensor([0.0, 1e-4, -0.01, 0.29, 0.31, -0.31, 3.0], requires_grad=True)
    cb_log_norm(eta).sum().backward()
    e = eta.detach().double()
    # d/dη log(η / tanh(η/2)) = 1/η − 1/sinh(η), and 0 at η = 0 (the series' η/6 − η³/180 …)
    want = torch.where(e.abs() < 1e-3, e / 6, 1 / e - 1 / torch.sinh(e))
    torch.testing.assert_close(eta.grad.double(), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("lam", [0.5 + 1e-4, 0.5 - 1e-2, 0.5 + 0.1, 0.9, 0.02])
def test_cb_mean_is_not_lambda(lam):
    eta = logit64(lam).float()
    lam64 = torch.sigmoid(eta.double())
    want = lam64 / (2 * lam64 - 1) + 1 / (2 * torch.atanh(1 - 2 * lam64))  # Loaiza-Ganem & Cunningham, eq. 7
    torch.testing.assert_close(cb_mean(eta).double(), want, atol=3e-7, rtol=0)
    if abs(lam - 0.5) > 0.3:
        assert abs(float(want) - lam) > 0.2  # the mean is pulled well towards ½: decoding λ would be wrong


def test_decode_returns_the_cb_mean():
    g = GenerativeModel(data_dim=5, latent_dim=2, hidden=(8,), likelihood="continuous-bernoulli")
    z = torch.randn(4, 2)
    torch.testing.assert_close(g.decode(z), cb_mean(g.decoder.net(z)))
    assert not torch.allclose(g.decode(z), torch.sigmoid(g.decoder.net(z)), atol=1e-3)


# --- discretized logistic and categorical over the 8-bit levels --------------------------------------

def dl_reference(k, loc, s):
    """P(x = k/255) in float64 from explicit CDF differences; the far right tail as survival differences."""
    lo, hi = (k - 0.5) / 255, (k + 0.5) / 255
    cdf_lo, cdf_hi = torch.sigmoid((lo - loc) / s), torch.sigmoid((hi - loc) / s)
    sf_lo, sf_hi = torch.sigmoid(-(lo - loc) / s), torch.sigmoid(-(hi - loc) / s)
    if k == 0:
        return cdf_hi
    if k == 255:
        return sf_lo
    return sf_lo - sf_hi if lo > loc else cdf_hi - cdf_lo


@pytest.mark.parametrize("k,loc,s", [
    (0, 0.02, 0.05), (255, 0.9, 0.05), (0, 0.5, 0.01), (255, 0.3, 0.2), (128, 0.5, 0.03), (17, 0.1, 0.002),
    (200, 0.2, 0.02),  # 35 s above loc: 1 − F rounds to 0 in float32, and PixelCNN++ falls back to density × width
    (3, 0.9, 0.05),  # the far left tail
])
def test_discretized_logistic_bins_against_cdf_differences(k, loc, s):
    loc64, s64 = torch.tensor(loc, dtype=D64), torch.tensor(s, dtype=D64)
    want = torch.log(dl_reference(k, loc64, s64))
    d = DiscretizedLogistic(torch.tensor([loc]), torch.tensor([math.log(s)]))
    got = d.log_prob(torch.tensor([k / 255]))
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got.double()[0], want, atol=2e-5, rtol=2e-6)


@pytest.mark.parametrize("loc,log_s", [(0.3, -2.0), (-0.4, -3.0), (1.6, -1.0), (0.5, -20.0), (0.5, 4.0), (0.77, -6.0)])
def test_discretized_logistic_sums_to_one_over_the_256_levels(loc, log_s):
    d = DiscretizedLogistic(torch.tensor([loc]), torch.tensor([log_s]))
    p = d.log_prob(LEVELS.float()[:, None]).double().exp()
    assert abs(float(p.sum()) - 1) < 2e-6
    torch.testing.assert_close(d.mean.double(), (p * LEVELS[:, None]).sum(0), atol=1e-6, rtol=0)


def test_categorical_against_log_softmax():
    logits = torch.randn(3, 4, 256)
    d = Categorical256(logits)
    k = torch.randint(0, 256, (2, 3, 4))
    want = torch.log_softmax(logits.double(), -1).expand(2, 3, 4, 256).gather(-1, k[..., None])[..., 0]
    torch.testing.assert_close(d.log_prob(k / 255.0).double(), want, atol=1e-5, rtol=0)
    total = d.log_prob(LEVELS.float()[:, None, None].expand(256, 3, 4)).double().exp().sum(0)
    torch.testing.assert_close(total, torch.ones(3, 4, dtype=D64), atol=1e-5, rtol=0)


def log_prob64(name, h, x, log_r=0.0):
    """log p(x | head output h) per value [B, D] in float64, written out here for each family: the
    discretized logistic's bin masses as differences of sigmoids (1 − F in the right tail, both taken
    in log space so a mass of e^−10⁵ is not 0), the edge bins taking the tails, log s clamped as
    documented; the categorical's log_softmax over 256 blocks of D logits; the others' closed forms."""
    h, x = h.double(), x.double()
    if name == "discretized-logistic":
        loc, log_s = h.chunk(2, -1)
        k, s = (x * 255).round(), log_s.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()
        a, b = ((k + 0.5) / 255 - loc) / s, ((k - 0.5) / 255 - loc) / s  # the bin's edges, in units of s
        ls = torch.nn.functional.logsigmoid
        right, left = b > 0, a < 0  # whole bin right of loc: 1 − F(b) − (1 − F(a)); left of it: F(a) − F(b)
        ar, br = torch.where(right, a, 2.0), torch.where(right, b, 1.0)  # other cases fed safe values,
        al, bl = torch.where(left, a, -1.0), torch.where(left, b, -2.0)  # so no NaN gradient leaks back
        am, bm = torch.where(right | left, 1.0, a), torch.where(right | left, -1.0, b)
        inner = torch.where(right, ls(-br) + torch.log(-torch.expm1(ls(-ar) - ls(-br))),
                            torch.where(left, ls(al) + torch.log(-torch.expm1(ls(bl) - ls(al))),
                                        torch.log(torch.sigmoid(am) - torch.sigmoid(bm))))
        return torch.where(k == 0, ls(a), torch.where(k == 255, ls(-b), inner))
    if name == "categorical":
        logits = h.unflatten(-1, (256, -1)).movedim(-2, -1)  # [B, D, 256]
        k = (x * 255).round().long().expand(logits.shape[:-1])
        return torch.log_softmax(logits, -1).gather(-1, k[..., None])[..., 0]
    if name == "continuous-bernoulli":  # x log λ + (1 − x) log(1 − λ) + log C(λ), C = η / tanh(η/2)
        return x * h - torch.nn.functional.softplus(h) + torch.log(h / torch.tanh(h / 2))
    if name == "poisson":
        return x * h - h.exp() - torch.lgamma(x + 1)
    r, mu = math.exp(log_r), h.exp()  # negative binomial: C(x + r − 1, x) (r/(r + μ))^r (μ/(r + μ))^x
    return torch.lgamma(x + r) - math.lgamma(r) - torch.lgamma(x + 1) - r * torch.log1p(mu / r) - x * torch.log1p(r / mu)


@pytest.mark.parametrize("name", ["discretized-logistic", "categorical"])
def test_8bit_heads_fit_a_conv_decoder(name):
    """The conv decoder's channels are the head's blocks (loc then log s; the 256 levels' logits): each
    value's log-mass equals the float64 formula on the network's output."""
    model = VAE(data_dim=64, latent_dim=3, hidden=(16,), arch="conv", data_shape=(1, 8, 8), likelihood=name)
    z = torch.randn(5, 3)
    p = model.p_x_given_z(z)
    assert p.batch_shape == (5,) and p.event_shape == (64,) and model.decode(z).shape == (5, 64)
    x = torch.randint(0, 256, (5, 64)) / 255.0
    x[:, :2] = torch.tensor([0.0, 1.0])  # both edge bins in every example
    with torch.no_grad():
        want = log_prob64(name, model.decoder.net(z), x)
        torch.testing.assert_close(p.base_dist.log_prob(x).double(), want, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(p.log_prob(x).double(), want.sum(-1), atol=1e-3, rtol=1e-6)


# --- counts ----------------------------------------------------------------------------------------

def test_poisson_against_the_formula():
    log_rate = torch.tensor([-3.0, 0.0, 2.0, 5.0, 9.2])
    x = torch.tensor([0.0, 1.0, 7.0, 150.0, 9876.0])
    want = [xi * r - math.exp(r) - math.lgamma(xi + 1) for xi, r in zip(x.double().tolist(), log_rate.double().tolist())]
    got = PoissonLogRate(log_rate).log_prob(x)
    torch.testing.assert_close(got.double(), torch.tensor(want, dtype=D64), atol=1e-5, rtol=1e-7)


def test_negative_binomial_against_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy is not installed (it comes with scikit-learn)")
    log_mean = torch.tensor([-2.0, 0.5, 3.0, 3.0, 6.0, 1.0])
    log_r = torch.tensor([0.0, -1.5, 2.0, 9.2, 0.7, 12.0])  # r from 0.22 to 1.6·10⁵ (almost Poisson)
    x = torch.tensor([0.0, 4.0, 25.0, 19.0, 1000.0, 2.0])
    got = NegativeBinomialLogMean(log_mean, log_r).log_prob(x).double()
    mu, r = log_mean.double().exp().numpy(), log_r.double().exp().numpy()
    want = stats.nbinom.logpmf(x.numpy(), r, r / (r + mu))  # scipy: failures before r successes, p = r/(r + μ)
    torch.testing.assert_close(got, torch.from_numpy(want), atol=2e-5, rtol=1e-6)
    torch.testing.assert_close(NegativeBinomialLogMean(log_mean, log_r).mean, log_mean.exp())


# --- every new likelihood: samples, means, supports --------------------------------------------------

def head_output(name, b=3, dim=4):
    """Decoder outputs in the range a trained decoder gives: rates around e^1.5, logistic locations in
    [0.2, 0.8] with scales of 1–3 levels' width."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(b, LIKELIHOODS.build(name, data_dim=dim).out_features(dim), generator=g)
    if name == "discretized-logistic":
        return torch.cat([0.2 + 0.6 * torch.rand(b, dim, generator=g), -5.5 + torch.rand(b, dim, generator=g)], -1)
    return h + 1.5 if name in ("poisson", "negative-binomial") else h


@pytest.mark.parametrize("name", NEW)
def test_samples_have_the_mean_within_monte_carlo_error(name):
    head = LIKELIHOODS.build(name, data_dim=4)
    if name == "negative-binomial":
        with torch.no_grad():
            head.log_total_count.copy_(torch.tensor([-1.0, 0.0, 1.0, 3.0]))
    p = head(head_output(name))
    n = 100_000
    x = p.sample((n,))
    assert x.shape == (n, 3, 4)
    support = likelihood_support(name)
    if support == "discrete256":
        assert bool(EIGHT_BIT.check(x).all())
    elif support == "count":
        assert bool((x == x.round()).all() and (x >= 0).all())
    else:
        assert bool(((x >= 0) & (x <= 1)).all())
    se = x.double().std(0) / math.sqrt(n)
    z = (x.double().mean(0) - p.mean.double()) / se
    assert z.abs().max() < 5, z  # 12 values: |z| < 5 fails by chance with probability ~10⁻⁵


@pytest.mark.parametrize("name", ["discretized-logistic", "categorical", "poisson", "negative-binomial"])
def test_sampled_frequencies_match_the_probabilities(name):
    head = LIKELIHOODS.build(name, data_dim=4)
    p = head(head_output(name, b=1))
    n = 100_000
    x = p.sample((n,))[:, 0]  # [n, 4]
    values = LEVELS.float() if likelihood_support(name) == "discrete256" else torch.arange(60.0)
    prob = p.base_dist.log_prob(values[:, None, None].expand(len(values), 1, 4))[:, 0].double().exp()  # [V, 4]
    freq = (x[None] == values[:, None, None]).double().mean(1)  # [V, 4]
    bound = 5 * (prob * (1 - prob) / n).sqrt() + 5 / n  # binomial error per value, and a floor for p ≈ 0
    assert ((freq - prob).abs() < bound).all(), (freq - prob).abs().max()


@pytest.mark.parametrize("name", NEW)
def test_log_prob_and_its_gradient_stay_finite_at_extremes(name):
    """Finite, and right: log p and its gradient in h equal the float64 formula's (`log_prob64`, by
    autograd), for outputs far beyond any sensible network's (logistic scales at the clamp, masses of
    e^−7·10⁵, rates of e^86, logits of ±150)."""
    h = (head_output(name) * 40).requires_grad_(True)  # far beyond any sensible network output
    head = LIKELIHOODS.build(name, data_dim=4)
    counts = likelihood_support(name) == "count"
    x = torch.tensor([0.0, 1.0, 30.0, 500.0]) if counts else torch.tensor([0.0, 255.0, 128.0, 1.0]) / 255
    p = head(h)
    lp = p.log_prob(x.expand(3, 4))
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(h.grad).all()
    h64 = h.detach().double().requires_grad_(True)
    want = log_prob64(name, h64, x)  # negative binomial: the head's initial r = 1
    want.sum().backward()
    # per value, to float32's precision: a logistic mass of e^−7·10⁵ is right to ~0.1 nats
    torch.testing.assert_close(p.base_dist.log_prob(x.expand(3, 4)).double(), want.detach(), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(lp.double(), want.detach().sum(-1), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(h.grad.double(), h64.grad, atol=1e-4, rtol=1e-4)


def test_supports_and_what_bits_per_dim_measures():
    want = {"continuous-bernoulli": "unit", "discretized-logistic": "discrete256", "categorical": "discrete256",
            "poisson": "count", "negative-binomial": "count"}
    assert {n: likelihood_support(n) for n in NEW} == want
    kinds = {n: bits_per_dim_of(VAE(data_dim=4, latent_dim=2, hidden=(), likelihood=n)) for n in (*NEW, "gaussian")}
    assert kinds == {"continuous-bernoulli": "density", "discretized-logistic": "probability mass",
                     "categorical": "probability mass", "poisson": "probability mass",
                     "negative-binomial": "probability mass", "gaussian": "density"}


# --- the data layer's 8-bit support --------------------------------------------------------------------

def digits_8bit(path):
    x, _, _ = read_builtin("digits", None)
    np.save(path, np.round(x.astype(np.float64) * 255 / 16).astype(np.uint8))  # 0..16 onto 0..255
    return path


def test_discrete256_data_are_8bit_levels_never_binarized(tmp_path):
    ds = load_dataset(str(digits_8bit(tmp_path / "d8.npy")), support="discrete256")
    assert ds.binarize == "none" and ds.scale == 255.0
    x = ds.prepare(ds.split("train"))
    assert bool(EIGHT_BIT.check(x).all()) and len(x.unique()) == 17  # the 17 levels of the digits, not 0/1
    floats = np.load(tmp_path / "d8.npy").astype(np.float32) / 255  # k/255 stored as floats: accepted
    np.save(tmp_path / "f.npy", floats)
    assert load_dataset(str(tmp_path / "f.npy"), support="discrete256").scale == 1.0
    with pytest.raises(VaekitError, match=r"digits \[\w+\]: support 'discrete256' takes 8-bit grey levels k/255"):
        load_dataset("digits", support="discrete256")  # 0..16 / 16: not 8-bit levels
    np.save(tmp_path / "p.npy", floats * 255)  # 0..255 as floats: out of [0, 1], with the hint
    with pytest.raises(VaekitError, match="values must lie in \\[0, 1\\].*divided by 255 when stored as uint8"):
        load_dataset(str(tmp_path / "p.npy"), support="discrete256")
    with pytest.raises(VaekitError, match="binarize='dynamic' applies to a Bernoulli"):
        load_dataset(str(tmp_path / "d8.npy"), binarize="dynamic", support="discrete256")


# --- end to end through the CLI ------------------------------------------------------------------------

def train_and_evaluate(tmp_path, dataset, likelihood, *extra):
    out = tmp_path / likelihood
    proc = vaekit_cli("train", "--dataset", dataset, "--likelihood", likelihood, "--latent-dim", "3", "--hidden", "32",
                      "--epochs", "1", "--out", out, *extra)
    result = json.loads(vaekit_cli("evaluate", out, "--k", "20", "--elbo-samples", "10", "--json").stdout)
    return proc, result


def check_nats_and_bits(result, dim, kind):
    assert result["nll"] == -result["log_likelihood"] and result["bound_check"] == "ok"
    assert abs(result["bits_per_dim"] - result["nll"] / (dim * math.log(2))) < 1e-9
    assert result["bits_per_dim_of"] == kind
    if kind == "probability mass":
        assert result["elbo"] < result["log_likelihood"] < 0  # log P(x) ≤ 0 for a mass


@pytest.mark.parametrize("likelihood", ["discretized-logistic", "categorical"])
def test_cli_8bit_digits_in_bits_per_dim(tmp_path, likelihood):
    _, result = train_and_evaluate(tmp_path, digits_8bit(tmp_path / "d8.npy"), likelihood)
    check_nats_and_bits(result, 64, "probability mass")
    assert 0 < result["bits_per_dim"] < 8  # below the uniform 8 bits after one epoch
    assert result["protocol"]["binarization"] == "none"


def test_cli_grey_digits_with_the_continuous_bernoulli(tmp_path):
    _, result = train_and_evaluate(tmp_path, "digits", "continuous-bernoulli")
    check_nats_and_bits(result, 64, "density")
    assert result["protocol"]["binarization"] == "none"


@pytest.mark.parametrize("likelihood", ["poisson", "negative-binomial"])
def test_cli_counts_in_nats(tmp_path, likelihood):
    rng = np.random.default_rng(0)
    rates = rng.gamma(2.0, 2.0, size=(300, 1)) * np.linspace(0.2, 3.0, 10)  # overdispersed counts
    np.save(tmp_path / "counts.npy", rng.poisson(rates).astype(np.int64))
    proc, result = train_and_evaluate(tmp_path, tmp_path / "counts.npy", likelihood)
    assert "count data, values used as stored (scale 1)" in proc.stderr
    check_nats_and_bits(result, 10, "probability mass")


def counts_file(path):
    rng = np.random.default_rng(0)
    rates = rng.gamma(2.0, 2.0, size=(300, 1)) * np.linspace(0.2, 3.0, 10)  # overdispersed counts
    np.save(path, rng.poisson(rates).astype(np.int64))
    return path


DATA = {"continuous-bernoulli": lambda tmp: "digits", "discretized-logistic": lambda tmp: digits_8bit(tmp / "d8.npy"),
        "categorical": lambda tmp: digits_8bit(tmp / "d8.npy"), "poisson": lambda tmp: counts_file(tmp / "c.npy"),
        "negative-binomial": lambda tmp: counts_file(tmp / "c.npy")}

# --- the edges: the 8-bit support, the edge bins in samples, the scale's floor and ceiling ------------

def test_eight_bit_support_is_exactly_the_256_levels():
    values = torch.tensor([-1 / 255, 0.0, 1 / 255, 0.5, 128 / 255, 1.0, 256 / 255, 0.5 / 255])
    assert EIGHT_BIT.check(values).tolist() == [False, True, True, False, True, True, False, False]
    assert EIGHT_BIT.is_discrete and EIGHT_BIT.event_dim == 0  # what torch reads of a support: discrete, per value


def test_discretized_logistic_samples_the_edge_bins_as_often_as_their_mass():
    """With loc at 0 (resp. 1) about half the mass is in the bottom (top) bin, which takes the tail."""
    d = DiscretizedLogistic(torch.tensor([0.0, 1.0]), torch.full((2,), math.log(0.01)))
    n = 20_000
    x = d.sample((n,))
    for j, level in ((0, 0.0), (1, 1.0)):
        p = float(d.log_prob(torch.full((2,), level))[j].exp())
        freq = float((x[:, j] == level).double().mean())
        assert 0.4 < p < 0.6 and abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n), (level, freq, p)


@pytest.mark.parametrize("log_s, s", [(-50.0, math.exp(-10.0)), (50.0, math.exp(10.0))])
def test_log_scale_beyond_the_floor_or_ceiling_is_e_to_the_minus_10_or_10(log_s, s):
    """s is clamped to [e^−10, e^10]: the mass of bin 100 against the float64 CDF difference at that s, at
    a location 1.1 s below the bin's upper edge (for the floor; mid-range for the ceiling)."""
    loc = torch.tensor([(100.5 / 255 - 1.1 * s) if s < 1 else 0.5])
    want = torch.log(dl_reference(100, loc.double()[0], torch.tensor(s, dtype=D64)))
    got = DiscretizedLogistic(loc, torch.tensor([log_s])).log_prob(torch.tensor([100 / 255]))
    torch.testing.assert_close(got.double()[0], want, atol=1e-3, rtol=0)  # float32 edges; e^±1 off is 0.2 nats or more


@pytest.mark.parametrize("name, bad", [("bernoulli", 0.5), ("discretized-logistic", 0.5), ("categorical", 0.5),
                                       ("poisson", 0.5), ("negative-binomial", 0.5), ("continuous-bernoulli", 1.5)])
def test_validation_refuses_a_value_off_the_support_only_when_on(name, bad):
    """A value off the support (0.5: not 0/1, a level k/255 or a count; 1.5: not in [0, 1]) is refused with
    validation on, and not looked at with it off."""
    head = LIKELIHOODS.build(name, data_dim=2)
    h = torch.zeros(1, head.out_features(2))
    x = torch.tensor([[0.0, bad]])
    head.validate_args = True
    with pytest.raises(ValueError, match="support"):
        head(h).log_prob(x)
    head.validate_args = False
    assert head(h).log_prob(x).shape == (1,)


def test_continuous_bernoulli_at_logit_zero_samples_the_uniform():
    """η = 0 is CB(½) = U(0, 1) (|η| floored at 10⁻⁶ in the inverse CDF): finite samples with mean ½ and variance 1/12."""
    n = 20_000
    x = ContinuousBernoulliLogits(torch.zeros(3)).sample((n,)).double()
    assert bool(((x >= 0) & (x <= 1)).all())
    assert (x.mean(0) - 0.5).abs().max() < 5 * math.sqrt(1 / 12 / n)
    assert (x.var(0) - 1 / 12).abs().max() < 0.005


def test_cb_series_in_float64_to_their_truncation_error_and_the_mean_beyond_its_band():
    """Float64 resolves the series' coefficients: log C at |η| = 0.2, where the next term is < 10⁻¹⁰; and
    the mean from |η| = 0.5 (the band's edge, excluded) to 1.4 is the closed form (the series would be off by up to 10⁻⁵)."""
    eta = torch.tensor([-0.3, -0.2, 0.2, 0.3], dtype=D64)  # 0.3: the band's edge, excluded (the closed form)
    torch.testing.assert_close(cb_log_norm(eta), torch.log(eta / torch.tanh(eta / 2)), atol=1e-10, rtol=0)
    eta = torch.tensor([-1.4, -0.6, -0.5, 0.5, 0.6, 1.0, 1.4], dtype=D64)
    torch.testing.assert_close(cb_mean(eta), -1 / torch.expm1(-eta) - 1 / eta, atol=1e-12, rtol=0)
    eta = torch.tensor([-0.3, 0.3], dtype=D64)  # the mean's series in its band, to its truncation error (2·10⁻¹⁰)
    torch.testing.assert_close(cb_mean(eta), -1 / torch.expm1(-eta) - 1 / eta, atol=1e-9, rtol=0)


def test_float64_log_densities_are_exact_to_the_last_digits():
    """Issue 27's outside check: softplus above 20, the continuous Bernoulli's series at the band edges and
    the discretized logistic's bin edges, against mpmath at 50 digits (errors were 2e-9, 1.7e-9, 6.5e-9)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    from vaekit.parts.likelihoods import BernoulliLogits

    logits = torch.tensor([[20.5, 25.0, 30.0, 36.9, -22.0]], dtype=D64)
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0]], dtype=D64)
    want = sum(float(xi * li - mpmath.log(1 + mpmath.exp(li))) for xi, li in zip(x[0].tolist(), logits[0].tolist()))
    assert abs(float(BernoulliLogits(logits).log_prob(x)) - want) < 1e-13 * abs(want)
    etas = torch.tensor([-0.4999, -0.31, -0.2999, -0.1, 1e-4, 0.05, 0.2999, 0.3001, 0.4999, 0.5001, 2.0], dtype=D64)
    for eta, got_norm, got_mean in zip(etas.tolist(), cb_log_norm(etas).tolist(), cb_mean(etas).tolist()):
        e = mpmath.mpf(eta)
        assert abs(got_norm - float(mpmath.log(e / mpmath.tanh(e / 2)))) < 1e-14, eta
        assert abs(got_mean - float(1 / (1 - mpmath.exp(-e)) - 1 / e)) < 1e-14, eta


def test_equal_count_bins_are_equal_when_n_allows():
    from vaekit.disentanglement.metrics import _equal_count_bins

    v = np.random.default_rng(0).standard_normal(1000)
    assert np.bincount(_equal_count_bins(v, 20)).tolist() == [50] * 20
    ties = np.repeat(np.arange(10.0), 100)  # equal values share a bin, whatever the count
    labels = _equal_count_bins(ties, 20)
    assert all(len(set(labels[ties == t])) == 1 for t in range(10))


@pytest.mark.parametrize("name", ["poisson", "negative-binomial"])
def test_counts_in_the_hundreds_train_where_raw_inputs_overflowed(tmp_path, name):
    """Issue 27: a count likelihood on counts of 8–238 (the Frey faces' range) overflowed within three steps,
    the encoder fed raw counts and the rate starting at 1. With data_scale (the default) the encoder sees
    log(1 + x) and the log-rate starts at the log of the training mean: it trains; without it, as before, NaN."""
    rng = np.random.default_rng(1)
    faces = rng.integers(8, 239, size=(1, 200)) * rng.uniform(0.7, 1.0, size=(400, 1))
    path = tmp_path / "c.npy"
    np.save(path, rng.poisson(faces).astype(np.int64))
    flags = ["train", "--dataset", path, "--likelihood", name, "--epochs", "2", "--latent-dim", "4", "--hidden", "64"]
    vaekit_cli(*flags, "--out", tmp_path / "scaled")
    from vaekit.runs.checkpoint import load_run

    _, model = load_run(tmp_path / "scaled")
    assert model.decoder.head.data_scale and isinstance(model.encoder.inputs, torch.nn.Module)
    raw = vaekit_cli(*flags, "--no-data-scale", "--out", tmp_path / "raw", check=False)
    scaled = json.loads((tmp_path / "scaled" / "metrics.jsonl").read_text().splitlines()[-1])["val/elbo"]
    if raw.returncode:  # the Poisson overflows, saying what to try
        assert raw.returncode == 2 and "NaN or Inf" in raw.stderr and "Try a smaller --lr" in raw.stderr
    else:  # the negative binomial survives, tens of thousands of nats worse
        worse = json.loads((tmp_path / "raw" / "metrics.jsonl").read_text().splitlines()[-1])["val/elbo"]
        assert scaled > worse + 10_000, (scaled, worse)
    assert scaled > -3000  # 200 counts of ~150: a few nats each


def test_the_rate_starts_at_the_training_mean_and_old_count_runs_keep_raw_inputs(tmp_path):
    head = LIKELIHOODS.build("poisson", data_dim=3)
    head.initialize(torch.tensor([150.0, 0.0, 2.5]))
    torch.testing.assert_close(head.offset.data, torch.tensor([150.0, 1e-3, 2.5]).log())
    torch.testing.assert_close(head(torch.zeros(1, 3)).mean, torch.tensor([[150.0, 1e-3, 2.5]]))
    run = tmp_path / "old"  # a run written by vaekit 0.3: its count likelihood read raw counts, no offset
    vaekit_cli("train", "--dataset", counts_file(tmp_path / "c.npy"), "--likelihood", "poisson", "--no-data-scale",
               "--epochs", "1", "--latent-dim", "2", "--hidden", "16", "--out", run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["versions"]["vaekit"] = "0.3.0"
    cfg["model"]["likelihood"] = "poisson"
    (run / "config.json").write_text(json.dumps(cfg))
    from vaekit.runs.checkpoint import load_run

    loaded, model = load_run(run)
    assert loaded.model.likelihood["data_scale"] is False and model.encoder.inputs is None
    assert not hasattr(model.decoder.head, "offset")
