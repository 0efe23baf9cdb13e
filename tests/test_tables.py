"""Tables with holes (issue 25): the mixed likelihood against scipy's float64 densities column by column, the
missing cells out of every value and gradient, the exact log p(x_obs) and E[x_mis|x_obs] of a linear-Gaussian
model against importance sampling, reading CSV and Parquet with their schema, and the CLI end to end."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from run_cli import vaekit_cli
from scipy import stats
from scipy.special import expit, log_softmax

from vaekit import load as vaekit_load
from vaekit.data import load_dataset
from vaekit.data.table_files import read_table
from vaekit.data.tables import Column, Schema
from vaekit.errors import VaekitError
from vaekit.evaluation.estimates import log_likelihood
from vaekit.evaluation.tables import impute, score
from vaekit.model import VAE
from vaekit.parts.likelihoods import LIKELIHOODS, TableInput
from vaekit.runs.config import Config

D64 = torch.float64
SCHEMA = Schema((
    Column("height", "real", shift=170.0, spread=9.0),
    Column("income", "positive", shift=10.0, spread=0.7),
    Column("visits", "count", shift=math.log(12.0)),
    Column("calls", "poisson"),
    Column("colour", "categorical", ("blue", "green", "red")),
    Column("rating", "ordinal", ("1", "2", "3", "4")),
    Column("smoker", "binary", ("no", "yes")),
))


def mixed_reference(head, h, x):
    """log p(x|z) [...]: each observed cell's density by scipy.stats in float64, summed; written from the
    families' definitions, not from vaekit's code."""
    h, x = h.detach().double().numpy(), x.double().numpy()
    x = np.broadcast_to(x, (*h.shape[:-1], x.shape[-1]))
    total = np.zeros(h.shape[:-1])
    for j, c in enumerate(head.schema.columns):
        lo, hi = head.slices[j]
        eta, xj = h[..., lo:hi], x[..., j]
        seen = ~np.isnan(xj)
        xs = np.where(seen, xj, 1.0)
        if c.kind == "real":
            s = float(head.log_sigma[str(j)].detach().exp())
            lp = stats.norm.logpdf(xs, loc=c.shift + c.spread * eta[..., 0], scale=c.spread * s)
        elif c.kind == "positive":
            s = float(head.log_sigma[str(j)].detach().exp())
            lp = stats.lognorm.logpdf(xs, s=c.spread * s, scale=np.exp(c.shift + c.spread * eta[..., 0]))
        elif c.kind == "count":  # mean μ, total count r: scipy's nbinom(n = r, p = r/(r + μ))
            r, mu = math.exp(float(head.log_total_count[str(j)].detach())), np.exp(eta[..., 0] + c.shift)
            lp = stats.nbinom.logpmf(xs, r, r / (r + mu))
        elif c.kind == "poisson":
            lp = stats.poisson.logpmf(xs, np.exp(eta[..., 0] + c.shift))
        elif c.kind == "binary":
            lp = stats.bernoulli.logpmf(xs, expit(eta[..., 0]))
        elif c.kind == "categorical":
            lp = np.take_along_axis(log_softmax(eta, -1), xs.astype(int)[..., None], -1)[..., 0]
        else:  # cumulative logit: θ₀ = a₀, θ_k = θ_{k−1} + log(1 + e^{a_k}); P(x ≤ k) = σ(θ_k − η)
            a = head.cuts[str(j)].detach().double().numpy()
            theta = np.cumsum(np.concatenate([a[:1], np.log1p(np.exp(a[1:]))]))
            cdf = np.concatenate([np.zeros((*eta.shape[:-1], 1)), expit(theta - eta), np.ones((*eta.shape[:-1], 1))], -1)
            k = xs.astype(int)[..., None]
            lp = np.log(np.take_along_axis(cdf, k + 1, -1) - np.take_along_axis(cdf, k, -1))[..., 0]
        total += np.where(seen, lp, 0.0)
    return torch.from_numpy(total)


def rows(n, generator):
    """n rows of SCHEMA's kinds, about 20% of cells missing (NaN)."""
    g = generator
    x = torch.stack([170 + 9 * torch.randn(n, generator=g, dtype=D64),
                     torch.exp(10 + 0.7 * torch.randn(n, generator=g, dtype=D64)),
                     torch.randint(0, 30, (n,), generator=g).double(), torch.randint(0, 6, (n,), generator=g).double(),
                     torch.randint(0, 3, (n,), generator=g).double(), torch.randint(0, 4, (n,), generator=g).double(),
                     torch.randint(0, 2, (n,), generator=g).double()], -1)
    return torch.where(torch.rand(x.shape, generator=g, dtype=D64) < 0.2, torch.nan, x)


@pytest.fixture
def head():
    torch.manual_seed(0)
    head = LIKELIHOODS.build("mixed", data_dim=len(SCHEMA), schema=SCHEMA).double()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return head


def test_every_column_density_equals_scipy_in_float64(head):
    g = torch.Generator().manual_seed(1)
    x = rows(40, g)
    h = 2 * torch.randn(3, 40, head.width, generator=g, dtype=D64)  # [S, B, H]: draws of z over a batch
    got = head(h).log_prob(x)
    assert got.shape == (3, 40)
    torch.testing.assert_close(got, mixed_reference(head, h, x), rtol=1e-10, atol=1e-10)
    cols = head(h).column_log_prob(x)
    assert bool((cols[..., x.isnan()] == 0).all()) and bool((cols[:, ~x.isnan()] != 0).all())


def test_levels_probabilities_sum_to_one_and_the_ordinal_holds_at_extremes(head):
    h = torch.linspace(-60, 60, 25, dtype=D64)[:, None].expand(25, head.width)
    d = head(h)
    for j in (4, 5, 6):
        p = d.probs(j)
        torch.testing.assert_close(p.sum(-1), torch.ones(25, dtype=D64), rtol=0, atol=1e-12)
        assert bool(torch.isfinite(p.log()).all() | (p == 0).any())
    # the ordinal's last level far right: log P = log σ(η − θ_K−2) ≈ 0 without cancellation
    theta = head.thresholds(5)
    lp = head.level_log_probs(5, SCHEMA.columns[5], torch.tensor([[60.0]], dtype=D64))
    torch.testing.assert_close(lp[0, 0], -torch.nn.functional.softplus(60 - theta[0]), rtol=1e-12, atol=0)


def test_a_missing_cell_leaves_no_trace_in_value_or_gradient(head):
    g = torch.Generator().manual_seed(2)
    x = rows(30, g)
    h = torch.randn(30, head.width, generator=g, dtype=D64, requires_grad=True)
    head(h).log_prob(x).sum().backward()
    assert bool(torch.isfinite(h.grad).all())
    for j in range(len(SCHEMA)):  # a row's outputs for a missing column get no gradient
        lo, hi = head.slices[j]
        assert bool((h.grad[x[:, j].isnan(), lo:hi] == 0).all())
    filled = torch.where(x.isnan(), torch.zeros_like(x), x)  # any value in the holes: the same log p
    torch.testing.assert_close(head(h).log_prob(x), (head(h).column_log_prob(filled) * ~x.isnan()).sum(-1))


@torch.no_grad()
def test_means_match_draws(head):
    g = torch.Generator().manual_seed(3)
    h = 0.5 * torch.randn(1, head.width, generator=g, dtype=D64)
    d = head(h.expand(200_000, -1))
    torch.manual_seed(4)
    x = d.sample()
    mean = head(h).mean[0]
    for j in range(4):  # real, positive, count, poisson: E[x_j|z] against the average of draws
        se = float(x[:, j].std() / math.sqrt(len(x)))
        assert abs(float(x[:, j].mean()) - float(mean[j])) < 5 * se, SCHEMA.columns[j].name
    for j in (4, 5, 6):  # the levels' frequencies against their probabilities; the mean is the mode
        freq = torch.bincount(x[:, j].long(), minlength=len(SCHEMA.columns[j].levels)).double() / len(x)
        torch.testing.assert_close(freq, d.probs(j)[0], rtol=0, atol=5e-3)
        assert float(mean[j]) == float(d.probs(j)[0].argmax())


def test_table_input_is_the_zero_filled_standardized_row_and_its_mask():
    x = torch.tensor([[179.0, math.exp(10.7), 4.0, 2.0, 2.0, math.nan, 1.0],
                      [math.nan, math.nan, math.nan, math.nan, math.nan, 3.0, math.nan]])
    got = TableInput(SCHEMA)(x)
    want = torch.tensor([[1.0, 1.0, math.log(5 / 12), math.log(3), 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1],
                         [0.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0]])  # missing: 0, not −shift
    # features: height, income, visits, calls, smoker (numeric), colour one-hot, rating one-hot, then the 7-cell mask
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_a_table_of_levels_only_is_its_one_hot_codes_and_mask_and_trains(tmp_path):
    """No numeric column (a survey of levels, one column of small counts read as ordinal): the encoder's input
    built its numeric flags as float tensors and torch.where failed (fifth attack)."""
    schema = Schema((Column("colour", "categorical", ("blue", "green", "red")), Column("rating", "ordinal", ("1", "2"))))
    got = TableInput(schema)(torch.tensor([[2.0, 0.0], [math.nan, 1.0]]))
    want = torch.tensor([[0.0, 0, 1, 1, 0, 1, 1], [0, 0, 0, 0, 1, 0, 1]])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    rng = np.random.default_rng(0)
    rows = "".join(f"{rng.choice(['red', 'green', 'blue'])},{rng.integers(1, 6)}\n" for _ in range(120))
    (tmp_path / "survey.csv").write_text("colour,rating\n" + rows)
    run = tmp_path / "r"
    vaekit_cli("train", "--dataset", tmp_path / "survey.csv", "--likelihood", "mixed", "--epochs", "2",
               "--latent-dim", "2", "--hidden", "16", "--out", run, "--quiet")
    model = vaekit_load(run)
    table = read_table(tmp_path / "survey.csv", model.decoder.head.schema)
    ll = log_likelihood(model, table.codes, k=2000, seed=0)
    s = score(model, table.codes, k=2000, seed=1)
    assert bool(torch.isfinite(ll.per_example).all()) and float(ll.per_example.max()) < 0
    assert bool(((-s.score - ll.per_example).abs() < 6 * s.mc_stderr + 1e-3).all())


# ---- a linear-Gaussian model: log p(x_obs) and E[x_mis|x_obs] in closed form ---------------------------

@pytest.fixture
def linear():
    torch.manual_seed(5)
    schema = Schema(tuple(Column(f"x{j}", "real", shift=0.5 * j, spread=1.0 + 0.5 * j) for j in range(4)))
    model = VAE(data_dim=4, latent_dim=2, hidden=(32,), decoder_hidden=(), likelihood="mixed", columns=schema).double()
    with torch.no_grad():
        for p in model.decoder.head.log_sigma.values():
            p.fill_(math.log(0.6))
    return model


def gaussian_of(model):
    """x = shift + spread·(W z + b + σ ε): the mean and covariance of x in the data's units."""
    lin, head = model.decoder.net, model.decoder.head
    lin = lin if isinstance(lin, torch.nn.Linear) else next(m for m in lin.modules() if isinstance(m, torch.nn.Linear))
    shift = torch.tensor([c.shift for c in head.schema.columns], dtype=D64)
    spread = torch.tensor([c.spread for c in head.schema.columns], dtype=D64)
    sigma = torch.stack([head.log_sigma[str(j)].exp() for j in range(4)]).detach()
    w, b = lin.weight.detach() * spread[:, None], shift + spread * lin.bias.detach()
    return b, w @ w.T + torch.diag((spread * sigma) ** 2)


def test_log_p_of_the_observed_cells_equals_the_gaussian_marginal(linear):
    g = torch.Generator().manual_seed(6)
    mean, cov = gaussian_of(linear)
    x = torch.distributions.MultivariateNormal(mean, cov).sample((6,))
    x[0, 1] = x[1, 0] = x[1, 3] = x[2, 2] = math.nan
    want = torch.stack([torch.distributions.MultivariateNormal(mean[~r.isnan()], cov[~r.isnan()][:, ~r.isnan()])
                        .log_prob(r[~r.isnan()]) for r in x])
    got = log_likelihood(linear, x, k=20_000, seed=int(torch.randint(0, 99, (1,), generator=g)))
    se = torch.sqrt(torch.tensor([0.0]) + (got.ess.new_tensor(20_000) / got.ess - 1) / 19_999)
    assert bool(((got.per_example - want).abs() < 6 * se + 1e-3).all()), (got.per_example - want, se)
    s = score(linear, x, k=20_000, seed=1)
    assert bool(((-s.score - want).abs() < 6 * s.mc_stderr + 1e-3).all())


def test_a_row_with_no_observed_cell_scores_exactly_zero(linear):
    """log p(x_obs) of an empty x_obs is log ∫ p(z) dz = 0: it scored an importance-sampling noise of ±0.05 nats,
    said to come "most from" a column it does not have."""
    mean, cov = gaussian_of(linear)
    x = torch.distributions.MultivariateNormal(mean, cov).sample((3,))
    x[1] = math.nan
    s = score(linear, x, k=50, seed=2)
    assert (float(s.score[1]), float(s.mc_stderr[1])) == (0.0, 0.0) and bool((s.columns[1] == 0).all())
    assert bool((s.score[[0, 2]] != 0).all())


def test_imputation_is_the_conditional_gaussian_mean_and_keeps_observed_cells(linear):
    mean, cov = gaussian_of(linear)
    torch.manual_seed(7)
    full = torch.distributions.MultivariateNormal(mean, cov).sample((5,))
    x = full.clone()
    x[:, 1] = math.nan
    x[0, 2] = math.nan
    r = impute(linear, x, k=20_000, draws=4000, seed=3)
    seen = ~x.isnan()
    torch.testing.assert_close(impute(linear, full, seen, k=20_000, seed=3).filled, r.filled, rtol=0, atol=0)
    assert torch.equal(r.filled[seen], x[seen]) and torch.equal(r.draws[:, seen], x[seen].expand(4000, -1))
    for i in range(5):
        o, m = seen[i], ~seen[i]
        cond = mean[m] + cov[m][:, o] @ torch.linalg.solve(cov[o][:, o], x[i, o] - mean[o])
        var = torch.diag(cov[m][:, m] - cov[m][:, o] @ torch.linalg.solve(cov[o][:, o], cov[o][:, m]))
        torch.testing.assert_close(r.filled[i, m], cond, rtol=0, atol=0.03)  # IS error ≪ the spread
        torch.testing.assert_close(r.draws[:, i, m].mean(0), cond, rtol=0, atol=float(6 * (var / 4000).sqrt().max()) + 0.03)
        torch.testing.assert_close(r.draws[:, i, m].var(0), var, rtol=0.15, atol=0)


# ---- reading tables ---------------------------------------------------------------------------------

PENGUIN_LIKE = """species,mass,rating,smoker,visits,ratio,note
Adelie,3750,2,no,0,0.5,a
Gentoo,NA,3,yes,12,1.5,b
Adelie,4100,,no,30,7.0,
Chinstrap,3900,5,?,3,NaN,c
Gentoo,5000,1,yes,7,2.5,a
"""


def write(path, text):
    path.write_text(text)
    return path


def test_kinds_are_inferred_and_missing_tokens_read_as_holes(tmp_path):
    t = read_table(write(tmp_path / "t.csv", PENGUIN_LIKE))
    kinds = {c.name: c.kind for c in t.schema.columns}
    assert kinds == {"species": "categorical", "mass": "real", "rating": "ordinal", "smoker": "binary",
                     "visits": "count", "ratio": "positive", "note": "categorical"}
    assert t.schema.columns[2].levels == ("1", "2", "3", "5")
    assert t.codes[1, 1].isnan() and t.codes[2, 2].isnan() and t.codes[3, 3].isnan() and t.codes[3, 5].isnan()
    assert t.codes[2, 6].isnan() and t.codes[0].tolist()[:4] == [0.0, 3750.0, 1.0, 0.0]
    assert t.lines.tolist() == [2, 3, 4, 5, 6]


def test_overrides_and_the_saved_schema_read_the_same_codes(tmp_path):
    path = write(tmp_path / "t.csv", PENGUIN_LIKE)
    t = read_table(path, overrides={"visits": "poisson", "rating": {"kind": "ordinal", "levels": [5, 3, 2, 1]}})
    assert t.schema.columns[4].kind == "poisson" and t.codes[:, 2].tolist()[:2] == [2.0, 1.0]
    saved = Config.from_dict({"model": {"columns": t.schema.as_plain()}}).model.columns  # through config.json
    assert saved == t.schema
    again = read_table(path, saved)
    assert torch.equal(again.codes.isnan(), t.codes.isnan()) and torch.equal(again.codes.nan_to_num(-1),
                                                                             t.codes.nan_to_num(-1))


def test_parquet_reads_as_the_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = write(tmp_path / "t.csv", PENGUIN_LIKE)
    t = read_table(path)
    cols = list(zip(*csv.reader(path.read_text().splitlines())))
    arrays = {c[0]: [None if v in ("", "NA", "NaN", "?") else v for v in c[1:]] for c in cols}
    for name in ("mass", "ratio"):
        arrays[name] = [None if v is None else float(v) for v in arrays[name]]
    pq.write_table(pa.table(arrays), tmp_path / "t.parquet")
    p = read_table(tmp_path / "t.parquet", t.schema)
    assert torch.equal(p.codes.nan_to_num(-1), t.codes.nan_to_num(-1))


def test_a_table_of_more_cells_than_vaekit_reads_is_refused_before_its_cells_are_built(tmp_path, monkeypatch):
    """A 31 kB Parquet file of 3,000,000 × 3 cells took 1.65 GB (a 526 kB one over 4 GB): its metadata are read
    first; a CSV is counted as it is read (fifth attack)."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from vaekit.data import table_files

    monkeypatch.setattr(table_files, "MAX_TABLE_CELLS", 10_000)
    pq.write_table(pa.table({"x": np.zeros(6000), "c": ["a"] * 6000}), tmp_path / "t.parquet", compression="zstd")
    assert (tmp_path / "t.parquet").stat().st_size < 2000
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("the cells were read"))
    with pytest.raises(VaekitError, match=r"t.parquet: 6,000 rows × 2 columns is more than the 10,000 cells vaekit "
                                          r"reads from a table; split it, or keep the columns the model needs$"):
        read_table(tmp_path / "t.parquet")
    (tmp_path / "t.csv").write_text("x,c\n" + "0,a\n" * 6000)
    with pytest.raises(VaekitError, match=r"t.csv: .* rows × 2 columns is more than the 10,000 cells"):
        read_table(tmp_path / "t.csv")
    (tmp_path / "ok.csv").write_text("x,c\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(5000)))
    assert read_table(tmp_path / "ok.csv").codes.shape == (5000, 2)


@pytest.mark.parametrize("text, schema, message", [
    ("a,b\n1,2\n3\n", None, "line 3 has 1 cells; the header names 2 columns"),
    ("a,a\n1,2\n", None, "names column 'a' twice"),
    ("a,b\nx,1\nx,2\n", None, "column 'a': one level only"),
    ("a,b\n,1\nNA,2\n", None, "column 'a': every cell is missing"),
    ("a,b\n1.5,x\n2.5,y\n9,z\n", {"a": "count"}, "line 2, column 'a': 1.5 is not a whole number"),
    ("a,b\n1.5,x\n-2.5,y\n", {"a": "positive"}, "line 3, column 'a': -2.5 is not > 0"),
    ("a,b\n1.5,x\n2.5,y\n", {"c": "real"}, "the schema names column 'c'"),
    ("a,b\n1.5,x\n2.5,y\n", {"a": "normal"}, "expected a kind"),
])
def test_bad_tables_are_refused_naming_line_and_column(tmp_path, text, schema, message):
    with pytest.raises(VaekitError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_table(write(tmp_path / "bad.csv", text), overrides=schema)


def test_a_run_schema_refuses_an_unknown_level_naming_its_line(tmp_path):
    t = read_table(write(tmp_path / "t.csv", PENGUIN_LIKE))
    new = write(tmp_path / "new.csv", PENGUIN_LIKE.replace("Chinstrap", "Emperor"))
    with pytest.raises(VaekitError, match="line 5, column 'species': 'Emperor' is not one of its levels"):
        read_table(new, t.schema)


def test_the_penguins_split_and_schema_fitted_on_train():
    pytest.importorskip("palmerpenguins")
    ds = load_dataset("penguins", support="table")
    assert sum(len(s) for s in ds.splits.values()) == 344 and ds.shape == (8,)
    kinds = [c.kind for c in ds.schema.columns]
    assert kinds == ["categorical", "categorical", "real", "real", "real", "real", "binary", "ordinal"]
    bill = ds.split("train")[:, 2].double()
    bill = bill[~bill.isnan()]
    assert ds.schema.columns[2].shift == pytest.approx(float(bill.mean()), rel=1e-12)
    assert int(sum(s.isnan().sum() for s in ds.splits.values())) == 19  # 2 rows without measurements, 11 sexes
    with pytest.raises(VaekitError, match="a table of mixed columns; it takes --likelihood mixed"):
        load_dataset("penguins", support="real")


# ---- the CLI ---------------------------------------------------------------------------------------

def test_train_impute_and_score_from_the_command_line(tmp_path):
    pytest.importorskip("palmerpenguins")
    run = tmp_path / "run"
    vaekit_cli("train", "--dataset", "penguins", "--likelihood", "mixed", "--latent-dim", "2", "--hidden", "32",
               "--epochs", "3", "--batch-size", "32", "--column-type", "year=categorical", "--out", run)
    cfg = json.loads((run / "config.json").read_text())
    assert [c["kind"] for c in cfg["model"]["columns"]][-1] == "categorical"
    table = tmp_path / "t.csv"
    table.write_text("species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year\n"
                     "Adelie,Dream,39.1,NA,181,3750,,2007\nGentoo,Biscoe,,,230,5500,female,2009\n")
    vaekit_cli("impute", run, "--data", table, "--out", tmp_path / "filled.csv", "--k", "50")
    got = list(csv.reader((tmp_path / "filled.csv").read_text().splitlines()))
    assert got[1][:3] == ["Adelie", "Dream", "39.1"] and got[1][4:6] == ["181", "3750"] and got[1][7] == "2007"
    assert float(got[1][3]) > 0 and got[1][6] in ("female", "male") and float(got[2][2]) > 0
    vaekit_cli("impute", run, "--data", table, "--out", tmp_path / "many.csv", "--k", "50", "--draws", "3")
    assert len((tmp_path / "many.csv").read_text().splitlines()) == 1 + 3 * 2
    vaekit_cli("score", run, "--data", table, "--out", tmp_path / "scores.csv", "--k", "50")
    scores = list(csv.DictReader((tmp_path / "scores.csv").read_text().splitlines()))
    assert sorted(int(r["line"]) for r in scores) == [2, 3] and [r["rank"] for r in scores] == ["1", "2"]
    assert float(scores[0]["score"]) >= float(scores[1]["score"])


def test_the_report_measures_each_column_against_its_mean_or_mode(tmp_path):
    """Column b repeats column a (three levels) and c is a's index plus small noise: hidden cells of b and c
    are predictable from the rest, and the report's table says so against the mode and the mean."""
    g = np.random.default_rng(0)
    a = g.integers(0, 3, 400)
    lines = ["a,b,c"] + [f"L{v},M{v},{v + 0.05 * g.standard_normal():.4f}" for v in a]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    vaekit_cli("train", "--dataset", path, "--likelihood", "mixed", "--latent-dim", "2", "--hidden", "32",
               "--epochs", "40", "--batch-size", "32", "--lr", "3e-3", "--out", run)
    from vaekit.pictures.report import table_quality

    q = {c.name: c for c in table_quality(run)}
    assert q["b"].measure == "accuracy" and q["b"].imputation >= 0.9 and q["b"].baseline <= 0.6
    assert q["c"].measure == "rmse/sd" and q["c"].imputation < 0.3 and q["c"].baseline > 0.8
    truth, guess = q["b"].pairs
    assert len(truth) == len(guess) > 0 and q["a"].reconstruction >= 0.9
    vaekit_cli("report", run, "--k", "20")
    assert "<h2>Columns</h2>" in (run / "report.html").read_text() and (run / "columns.png").stat().st_size > 1000


@pytest.mark.parametrize("column, value, message", [
    (4, 3.0, "column 'colour' (categorical) takes level indices 0…2 (NaN where missing); row 1 holds 3"),
    (5, 0.5, "column 'rating' (ordinal) takes level indices 0…3"),
    (2, -1.0, "column 'visits' (count) takes whole numbers ≥ 0"),
    (1, 0.0, "column 'income' (positive) takes numbers > 0"),
])
def test_codes_the_schema_does_not_admit_are_refused_naming_the_column(head, column, value, message):
    x = rows(3, torch.Generator().manual_seed(8)).nan_to_num(1.0)
    x[1, column] = value
    with pytest.raises(VaekitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        head(torch.zeros(3, head.width, dtype=D64)).log_prob(x)


def test_a_numeric_level_written_another_way_is_that_level(tmp_path):
    """A column of 0, 1 and 1.0 (or -0) is inferred binary with levels (0, 1); its own "1.0" cell was then refused as
    not one of them, so a file that trains was refused by its inferred schema."""
    rows = ["a,b"] + [f"{0.1 * i:.1f},{('0', '1', '1.0', '-0')[i % 4]}" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    table = read_table(tmp_path / "t.csv")
    b = table.codes[:, 1].tolist()
    assert table.schema.columns[1].levels == ("0", "1") and b == [(0.0, 1.0, 1.0, 0.0)[i % 4] for i in range(40)]


def test_a_cell_with_an_underscore_is_text_not_a_number(tmp_path):
    """Python's float("1_000") is 1000; a column of "1_000", "2_5" … was read as numbers (pandas reads text)."""
    rows = ["a,b"] + [f"{0.1 * i:.1f},{i % 3}_000" for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    column = read_table(tmp_path / "t.csv").schema.columns[1]
    assert (column.kind, column.levels) == ("categorical", ("0_000", "1_000", "2_000"))
