"""The seventh held-out attack's faults (issue 27), each made for real: a table column beyond what a run can store,
data in small units under --standardize, a train_state.pt whose generator bytes are no state, a model with a lazy
layer resumed and loaded, the API's bounds, imputation and evaluation given what a user may pass."""

import logging

import numpy as np
import pytest
import torch
from test_trust_attack5 import one_line
from torch import nn

import vaekit
from vaekit.cli import main
from vaekit.data.dataset import standardization


def test_a_table_column_beyond_what_a_run_stores_is_refused_before_training(tmp_path, capsys):
    """A column of masses near 5e19 trained (exit 0) into a run whose config.json every later command refused."""
    rng = np.random.default_rng(0)
    rows = "".join(f"{rng.uniform(-1, 1) * 1e19 + 5e19:.6e},{'ab'[i % 2]}\n" for i in range(60))
    (tmp_path / "big.csv").write_text("mass,c\n" + rows)
    said = one_line(capsys, "train", "--dataset", tmp_path / "big.csv", "--likelihood", "mixed", "--epochs", 1,
                    "--latent-dim", 2, "--hidden", 8, "--out", tmp_path / "r")
    assert said.startswith("big.csv: column 'mass': values reach ") and said.endswith(
        "beyond what vaekit standardizes (±1e+18); rescale the column (divide it by a power of ten)")
    assert float(said.split("values reach ")[1].split(",")[0]) >= 4e19
    assert not (tmp_path / "r" / "config.json").exists()


def test_a_column_float32_cannot_tell_apart_is_said_to_merge(tmp_path, caplog):
    """ids near 1e17 become one float32 value: the column carried nothing, without a word (seventh and eighth
    attacks); counts beyond 2**24, positives below float32's range and spreads below 1e-12 are refused."""
    (tmp_path / "ids.csv").write_text("id,c\n" + "".join(f"{10**17 + k},{'ab'[k % 2]}\n" for k in range(100)))
    with caplog.at_level(logging.WARNING):
        table = vaekit.read_table(tmp_path / "ids.csv", overrides={"id": "real"})
    distinct = len({float(10**17 + k) for k in range(100)})  # as the cells are read (float64: 7 of them)
    assert f"{tmp_path / 'ids.csv'}: column 'id': float32 merges some of its distinct values (1 of {distinct} kept)" \
        in caplog.text
    assert len(table.codes[:, 0].unique()) == 1
    for name, kind, cells, said in [
            ("n.csv", "count", [10**15 + k for k in range(10)], (r"line 2, column 'n': 1e\+15 is beyond the counts float32 "
             r"holds exactly \(16,777,216\); give the column another kind \(--column-type n=positive\)$")),
            ("p.csv", "positive", [1e-300 * (k + 1) for k in range(10)], (r"line 2, column 'n': 1e-300 is below float32's "
             r"smallest normal number \(1.18e-38\); multiply the column by a power of ten$"))]:
        (tmp_path / name).write_text("n,c\n" + "".join(f"{v!r},{'ab'[i % 2]}\n" for i, v in enumerate(cells)))
        with pytest.raises(vaekit.VaekitError, match=said):
            vaekit.read_table(tmp_path / name, overrides={"n": kind})
    from vaekit.data.tables import Column, Schema

    with pytest.raises(vaekit.VaekitError, match=r"^column 'x': values spread by 2.89e-20, below what vaekit standardizes"):
        Schema((Column("x", "real"),)).fitted(torch.arange(100, dtype=torch.float64)[:, None] * 1e-21)


def test_data_in_small_units_are_standardized_by_their_own_spread():
    """An absolute threshold (1e-12) made data of sd 1e-20 "constant": spread 1, samples 10¹⁹ sds off."""
    x = torch.from_numpy((np.random.default_rng(0).standard_normal((300, 3)) * [1e-20, 1e-13, 1.0]).astype(np.float32))
    x = torch.cat([x, torch.full((300, 1), 5.0) + torch.randn(300, 1, generator=torch.Generator().manual_seed(1)) * 1e-8],
                  1)
    _shift, spread = standardization(x)
    want = x.double().std(0, correction=0)
    torch.testing.assert_close(spread[:3].double(), want[:3], rtol=1e-6, atol=0)
    assert float(spread[3]) == 1.0  # 5 + 1e-8 noise is 5 in float32: one value, constant
    near = torch.full((200, 1), 1e10) + torch.arange(200.0)[:, None] * 20.0  # sd ≈ 1155 about 1e10: its own spread
    torch.testing.assert_close(standardization(near)[1].double(), near.double().std(0, correction=0), rtol=1e-6, atol=0)


def test_small_unit_data_sample_at_their_scale(tmp_path, capsys):
    x = (np.random.default_rng(0).standard_normal((300, 4)) * 1e-20).astype(np.float32)
    np.save(tmp_path / "s.npy", x)
    assert main(["--quiet", "train", "--dataset", str(tmp_path / "s.npy"), "--likelihood", "gaussian", "--standardize",
                 "--epochs", "2", "--latent-dim", "2", "--hidden", "8", "--out", str(tmp_path / "r")]) == 0
    assert main(["--quiet", "sample", str(tmp_path / "r"), "--n", "50", "--out", str(tmp_path / "s2.npy")]) == 0
    samples = np.load(tmp_path / "s2.npy")
    assert np.abs(samples).max() < 1e-18 and samples.std() > 1e-22  # the data's scale, not the network's (≈ 0.1)


def test_a_state_whose_generator_bytes_are_no_state_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "8",
                 "--out", str(run)]) == 0
    state = torch.load(run / "train_state.pt", weights_only=True)
    state["rng"] = torch.zeros_like(state["rng"])
    torch.save(state, run / "train_state.pt")
    said = one_line(capsys, "train", "--out", run, "--resume", "--epochs", 2)
    assert said.startswith(f"{run / 'train_state.pt'}: rng is not a valid generator state; ")


def lazy_model():
    enc = vaekit.Encoder(nn.Sequential(nn.LazyLinear(16), nn.Tanh(), nn.Linear(16, 4)), "diagonal")
    dec = vaekit.Decoder(nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 64)), "bernoulli", data_dim=64)
    return vaekit.VAE(enc, dec, vaekit.StandardNormal(2))


def test_a_model_with_a_lazy_layer_resumes_bit_identical_and_load_says_what_to_do(tmp_path):
    x = (torch.rand(120, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.manual_seed(0)
    whole = vaekit.fit(lazy_model(), x, epochs=3, out=tmp_path / "whole", progress=False)
    torch.manual_seed(0)
    vaekit.fit(lazy_model(), x, epochs=2, out=tmp_path / "part", progress=False)
    torch.manual_seed(7)  # the lazy layer's first values differ: the checkpoint's replace them
    resumed = vaekit.fit(lazy_model(), x, epochs=3, out=tmp_path / "part", resume=True, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()))
    with pytest.raises(vaekit.VaekitError, match=r"^vaekit.load: the model's lazy layers have no weights yet "
                       r"\(encoder.net.0.weight\); run one batch through it first \(model\(x\[:1\]\)\), then load$"):
        vaekit.load(tmp_path / "part", model=lazy_model())
    ready = lazy_model()
    ready(x[:1])
    loaded = vaekit.load(tmp_path / "part", model=ready)
    assert torch.equal(loaded.encode(x), resumed.model.encode(x))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vaekit.VAE(data_dim=10, latent_dim=2, hidden=(16,))


X = (torch.rand(7, 10, generator=torch.Generator().manual_seed(1)) > 0.5).float()


@pytest.mark.parametrize("call, said", [
    (lambda m: vaekit.elbo(m, X, num_samples=0), r"^num_samples must be a whole number of draws from 1 to 1,000,000, got 0$"),
    (lambda m: vaekit.elbo(m, X, num_samples=-2), r"^num_samples must be a whole number of draws"),
    (lambda m: vaekit.iwae(m, X, k=1.5), r"^k must be a whole number of importance samples from 1 to 1,000,000, got 1.5$"),
    (lambda m: vaekit.iwae_bound(m, X, k=-1), r"^k must be a whole number of importance samples"),
    (lambda m: vaekit.elbo(m, X, kl="foo"), r"^kl must be one of auto, analytic, mc, got 'foo'$"),
    (lambda m: vaekit.elbo(m, X * float("nan")), r"^x: example 0 contains NaN or Inf$"),
    (lambda m: vaekit.elbo(m, torch.rand(7, 10)), r"^x holds values other than 0 and 1, which a Bernoulli model"),
    (lambda m: vaekit.iwae_bound(torch.nn.Linear(2, 2), X, k=2), r"^model must be a VAE"),
    (lambda m: vaekit.evaluate_elbo(m, X, num_samples=0), r"^num_samples must be a whole number of draws"),
    (lambda m: m.encode(X.to("meta")), (r"^x must be a dense tensor of values, got a meta tensor \(a meta tensor has "
     r"shapes, no values\)$")),
    (lambda m: m.decode(torch.zeros(3, 2, device="meta")), r"^decode: z must be a dense tensor of values, got a meta"),
    (lambda m: vaekit.elbo(m, X, q_z=m.posterior(X), z=m.posterior(X).rsample()), (r"^z must hold draws \[S, 7, 2\] "
     r"\(S ≥ 1: q_z.rsample\(\(S,\)\)\), got \(7, 2\)$")),
    (lambda m: vaekit.iwae(m, X, k=5, z=m.posterior(X).rsample((3,))), r"^z must hold draws \[S, 7, 2\] \(S = k = 5"),
    (lambda m: vaekit.iwae_bound(m, X, 2, q_z=m.posterior(X[:3])), r"^q_z must have batch shape \(7,\) and event shape"),
    (lambda m: vaekit.elbo(m, X, q_z=5), r"^q_z must be a torch Distribution over z"),
    (lambda m: vaekit.elbo(m, X, z=m.posterior(X).rsample((2,)) * float("nan")), r"^z must be finite floating-point draws"),
    (lambda m: m.encode(X.to_sparse()), (r"^x must be a dense tensor of values, got a torch.sparse_coo tensor "
     r"\(x.to_dense\(\)\)$")),
    (lambda m: vaekit.fit(m, X.to_sparse(), epochs=1, progress=False), r"^x must be a dense tensor of values"),
])
def test_the_apis_bounds_and_inputs_are_one_line(model, call, said):
    with pytest.raises(vaekit.VaekitError, match=said):
        call(model)


def test_the_apis_bounds_take_what_encode_takes_and_give_the_same_numbers(model):
    """NumPy arrays, lists, float64 or half tensors were raw errors in vaekit.elbo/iwae/iwae_bound (encode takes
    them); each is the model's examples now, with the numbers of the float32 tensor."""
    for f in (lambda x: vaekit.elbo(model, x, num_samples=3).elbo, lambda x: vaekit.iwae(model, x, k=4).bound,
              lambda x: vaekit.iwae_bound(model, x, 4)):
        torch.manual_seed(0)
        want = f(X)
        for given in (X.numpy(), X.tolist(), X.double(), X.half(), X.bfloat16()):
            torch.manual_seed(0)
            assert torch.equal(f(given), want)
    np_int = vaekit.evaluate_elbo(model, X, num_samples=np.int32(5))
    assert np_int.elbo == vaekit.evaluate_elbo(model, X, num_samples=5).elbo


def test_fit_on_bfloat16_data_trains_as_on_float32(tmp_path):
    def build():
        torch.manual_seed(0)
        return vaekit.VAE(data_dim=10, latent_dim=2, hidden=(16,))

    xs = (torch.rand(80, 10, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    a = vaekit.fit(build(), xs, epochs=2, progress=False).model
    b = vaekit.fit(build(), xs.bfloat16(), epochs=2, progress=False).model
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("attack7t")
    rng = np.random.default_rng(0)
    lines = [f"{'' if i % 9 == 0 else f'{rng.normal():.3f}'},{'ab'[i % 2]},{i % 4}" for i in range(80)]
    (base / "t.csv").write_text("x,c,n\n" + "\n".join(lines) + "\n")
    assert main(["--quiet", "train", "--dataset", str(base / "t.csv"), "--likelihood", "mixed", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--out", str(base / "r")]) == 0
    model = vaekit.load(base / "r")
    return base, model, vaekit.read_table(base / "t.csv", model.decoder.head.schema)


def test_impute_keeps_float64_observed_cells_and_refuses_a_mask_that_is_no_mask(table_run):
    _, model, table = table_run
    exact = table.codes.double()
    exact[exact[:, 0].isfinite(), 0] += 1e-9  # a value float32 cannot hold
    filled = vaekit.impute(model, exact, k=10).filled
    seen = ~exact.isnan()
    assert filled.dtype == torch.float64 and torch.equal(filled[seen], exact[seen])
    for mask in ("abc", [[True], [True, False]], np.array([object()] * 3)):
        with pytest.raises(vaekit.VaekitError, match=r"^mask must be bool of x's shape \(80, 3\)"):
            vaekit.impute(model, table, mask=mask, k=5)


def test_impute_and_score_take_the_table_itself_as_its_codes(table_run):
    _, model, table = table_run
    a, b = vaekit.impute(model, table, k=20, seed=3), vaekit.impute(model, table.codes, k=20, seed=3)
    assert torch.equal(a.filled, b.filled) and bool(a.filled.isnan().sum() == 0)
    assert torch.equal(vaekit.score(model, table, k=20).score, vaekit.score(model, table.codes.numpy(), k=20).score)
    assert torch.equal(vaekit.impute(model, table.codes.double(), k=20, seed=3).filled.float(), b.filled)


@pytest.mark.parametrize("given, said", [
    (lambda base, t: str(base / "t.csv"), (r"^x must be a table's codes \[N, C\] \(vaekit.read_table\(path, schema\).codes\), "
     r"got the path")),
    (lambda base, t: t.codes[:0], r"^x must be a table's codes \[N, C\] with at least one row, got torch.float32 \(0, 3\)$"),
    (lambda base, t: torch.cat([t.codes[:2], torch.tensor([[float("inf"), 0.0, 1.0]])]),
     r"^column 'x' \(real\) takes finite numbers \(NaN where missing\); row 2 holds"),
])
def test_impute_and_score_refuse_what_is_no_table_in_one_line(table_run, given, said):
    base, model, table = table_run
    for f in (vaekit.impute, vaekit.score):
        with pytest.raises(vaekit.VaekitError, match=said):
            f(model, given(base, table), k=5)


def test_integer_factors_beyond_float64s_whole_numbers_keep_their_values():
    """uint64 factors 2**63 + c merged in float64 into one value: "factor 0 takes a single value"."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 4, size=(400, 2))
    codes = small + rng.normal(scale=0.3, size=(400, 2))
    big = small.astype(np.uint64) + np.uint64(2**63)
    assert vaekit.metrics.mig(codes, big) == vaekit.metrics.mig(codes, small)


def test_disentanglement_json_writes_undefined_scores_as_null(tmp_path, capsys):
    import json

    rng = np.random.default_rng(0)
    x = (rng.random((240, 16)) > 0.5).astype(np.float32)
    factors = np.stack([rng.integers(0, 3, 240).astype(np.float64) * 1e300, rng.integers(0, 2, 240) * 1.0], 1)
    np.savez(tmp_path / "f.npz", x=x, factors=factors)
    assert main(["--quiet", "train", "--dataset", str(tmp_path / "f.npz"), "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "8", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["--quiet", "disentanglement", str(tmp_path / "r"), "--dataset", str(tmp_path / "f.npz"), "--json"]) == 0
    printed = capsys.readouterr().out

    def strict(name):
        raise AssertionError(f"{name} is no JSON")

    scores = json.loads(printed, parse_constant=strict)
    assert all(v is None or isinstance(v, (int, float, str, list)) for v in scores.values())


def test_impute_draws_beside_a_column_named_draw_get_their_own_name(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"{'' if i % 7 == 0 else f'{rng.normal():.3f}'},{i % 3}" for i in range(60)]
    (tmp_path / "t.csv").write_text("x,draw\n" + "\n".join(lines) + "\n")
    assert main(["--quiet", "train", "--dataset", str(tmp_path / "t.csv"), "--likelihood", "mixed", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--out", str(tmp_path / "r")]) == 0
    assert main(["--quiet", "impute", str(tmp_path / "r"), "--data", str(tmp_path / "t.csv"), "--draws", "2", "--k", "5",
                 "--out", str(tmp_path / "i.csv")]) == 0
    header, *rows = (tmp_path / "i.csv").read_text().splitlines()
    assert header == "draw_1,x,draw" and len(rows) == 120 and {r.split(",")[0] for r in rows} == {"1", "2"}
    assert [r.split(",", 1)[1].split(",")[1] for r in rows[:60]] == [line.split(",")[1] for line in lines]


def test_a_states_running_sums_of_other_names_blame_the_state(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "8",
                 "--out", str(run)]) == 0
    state = torch.load(run / "train_state.pt", weights_only=True)
    state["sums"] = {"train/elbo": torch.tensor(1.0)}
    torch.save(state, run / "train_state.pt")
    said = one_line(capsys, "train", "--out", run, "--resume", "--epochs", 2)
    assert said == (f"{run / 'train_state.pt'}: its running sums name 'train/elbo', but the objective returns elbo, "
                    "kl, reconstruction; the file is damaged or belongs to another run; restore it, or delete it and "
                    "model.safetensors and pass --resume to start the run again from step 0")
    state["sums"] = {"x" * 1000: torch.tensor(1.0)}
    torch.save(state, run / "train_state.pt")
    said = one_line(capsys, "train", "--out", run, "--resume", "--epochs", 2)
    assert len(said) < 400 and "sums is not a dict of named sums (names of at most 100 characters)" in said


def test_num_samples_is_bounded_and_fit_takes_numpy_scalars(tmp_path, capsys):
    said = one_line(capsys, "train", "--dataset", "digits", "--epochs", 1, "--num-samples", 10**6, "--out", tmp_path / "r")
    assert said.startswith("--num-samples must be") and "1000000" in said and "10000" in said.replace(",", "")
    x = (torch.rand(60, 10, generator=torch.Generator().manual_seed(3)) > 0.5).float()

    def build():
        torch.manual_seed(0)
        return vaekit.VAE(data_dim=10, latent_dim=2, hidden=(8,))

    a = vaekit.fit(build(), x, epochs=np.int64(2), lr=np.float32(2e-3), progress=False).model
    b = vaekit.fit(build(), x, epochs=2, lr=float(np.float32(2e-3)), progress=False).model
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_parquet_file_naming_a_column_twice_is_one_line(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_arrays([pa.array([1.0, 2.0]), pa.array([3.0, 4.0])], names=["a", "a"]),
                   tmp_path / "d.parquet")
    with pytest.raises(vaekit.VaekitError, match=r"d.parquet: the header names column 'a' twice$"):
        vaekit.read_table(tmp_path / "d.parquet")


def test_a_post_hoc_samplers_folder_resumed_by_train_names_fit_sampler(tmp_path, capsys):
    """`vaekit train --out RUN/samplers/two-stage --resume` advised vaekit.fit in Python, which the user never called."""
    run = tmp_path / "run"
    assert main(["--quiet", "train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "16",
                 "--out", str(run)]) == 0
    assert main(["--quiet", "fit-sampler", str(run), "--sampler", "two-stage", "--epochs", "1", "--hidden", "8"]) == 0
    said = one_line(capsys, "train", "--out", run / "samplers" / "two-stage", "--resume", "--epochs", 3)
    assert said == (f"{run / 'samplers' / 'two-stage'}: a post-hoc sampler, trained on its run's codes: fit it again with "
                    f"vaekit fit-sampler {run} --sampler two-stage --epochs N")
