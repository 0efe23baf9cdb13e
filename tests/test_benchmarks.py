"""Smoke runs of the benchmark scripts on the real MNIST files (a sliver of the budget)."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


def _mnist_folder() -> Path:
    from common import default_data_dir  # the benchmarks' data root: $VAEKIT_DATA, else ../shared/data

    return Path(default_data_dir()) / "mnist"


@pytest.mark.skipif(not _mnist_folder().is_dir(), reason=f"{_mnist_folder()} not found (shared data)")
def test_mnist_nll_protocol_smoke():
    import mnist_nll

    cfg = mnist_nll.protocol_config("iwae", 5, mnist_nll.default_data_dir())
    assert (cfg.model.hidden, cfg.model.latent_dim, cfg.model.activation, cfg.model.init) == ((200, 200), (50,), "tanh", "glorot")
    assert (cfg.train.batch_size, cfg.train.adam_eps, cfg.data.val_size) == (20, 1e-4, 400)
    stages = mnist_nll.schedule(1.0)
    assert sum(p for p, _ in stages) == 3280 and stages[7][1] == pytest.approx(1e-4)
    out = mnist_nll.main(["--objective", "iwae", "--k", "2", "--passes-scale", "0.0003", "--eval-k", "20", "--eval-n", "100"])
    # a sliver of training already beats the untrained model's ~550 nats; the bound holds: NLL ≤ −ELBO on average
    assert 100 < out["nll"] < 400 and out["nll"] <= -out["elbo"] + 3 * out["stderr"]


def test_disentanglement_study_settings_and_its_mean_and_sd():
    """Every method's settings make a valid config with its paper's value, and the summary's mean and
    sample sd over seeds are those of the rows (computed by hand here)."""
    import argparse

    import disentanglement as study

    args = argparse.Namespace(epochs=3)
    cfgs = {name: study.config(settings, args, seed=2) for name, (settings, _) in study.METHODS.items()}
    assert cfgs["beta-vae-4"].train.objective["beta"] == 4.0 and cfgs["beta-tcvae"].train.objective.name == "beta-tcvae"
    assert cfgs["factorvae"].train.objective["gamma"] == 40.0
    assert cfgs["factorvae"].train.objective["discriminator_hidden"] == (256, 256, 256)
    assert all(c.train.seed == 2 and c.train.epochs == 3 and c.data.dataset == "shapes2d" for c in cfgs.values())
    rows = [{"method": "m", "seed": s, "test_elbo": e, **dict.fromkeys(study.METRIC_KEYS, v)}
            for s, (e, v) in enumerate([(-80.0, 0.1), (-82.0, 0.4), (-87.0, 0.4)])]
    (entry,) = study.summarize(rows)
    assert entry["seeds"] == 3 and entry["test_elbo"]["mean"] == pytest.approx(-83.0)
    assert entry["test_elbo"]["sd"] == pytest.approx(((9 + 1 + 16) / 2) ** 0.5)  # n − 1 in the denominator
    assert entry["mig"] == pytest.approx({"mean": 0.3, "sd": (0.06 / 2) ** 0.5, "min": 0.1, "max": 0.4})


def test_the_best_recipes_are_the_runs_they_report():
    """`mnist_best.py`'s default is the families benchmark's VampPrior row (the same config, so the same run:
    83.61 at 125 epochs), and its 2-layer preset the bf16 IWAE run; a flag overrides its preset."""
    import argparse

    import families
    import mnist_best

    vamp = mnist_best.parse([])
    same = families.config("vampprior", argparse.Namespace(epochs=125, data_dir=vamp.data_dir, seed=0))
    cosine = {"lr_schedule": "cosine", "epochs": 125}  # the script's stages make the cosine; the recipe's config says it
    assert vamp.epochs == 125 and mnist_best.recipe_config(vamp).replace(train=cosine) == same
    two = mnist_best.recipe_config(mnist_best.parse(["--recipe", "2-layer-iwae", "--epochs", "7"]))
    assert two.model.latent_dim == (64, 32) and two.train.precision == "bf16"
    assert two.train.objective.as_dict() == {"name": "iwae", "k": 5, "dreg": True} and mnist_best.parse(["--recipe", "2-layer-iwae"]).epochs == 360


def test_the_deep_recipes_share_everything_but_the_structure():
    """`deep.py`'s three recipes differ only in how the latents hang together: the same trunk, decoder,
    guards, EMA and per-group objective; `plain` is one layer of Σ d_l latents."""
    import deep

    args = deep.argparse.Namespace(latent_dim=[16, 8], warmup=10.0, epochs=200, free_bits=0.25, data_dir="x", arch="mlp",
                                   seed=3, ema=None, grad_clip=None, grad_skip=None, prior="standard", components=500,
                                   precision="fp32", compile=False, cuda_graphs=False, recipe="top-down", width=512,
                                   spectral_reg=0.0)
    cfgs = {r: deep.recipe_config(args, r) for r in ("top-down", "bottom-up", "plain")}
    assert [c.model.inference for c in cfgs.values()] == ["top-down", "bottom-up", "bottom-up"]
    assert [c.model.latent_dim for c in cfgs.values()] == [(16, 8), (16, 8), (24,)]
    for c in cfgs.values():
        assert (c.model.hidden, c.model.decoder_hidden, c.train.grad_clip, c.train.grad_skip, c.train.ema) == (
            (512, 512), (512, 512), 200.0, 0.0, 0.999)
        assert c.train.objective["free_bits"] == 0.25 and c.train.objective["kl_warmup_epochs"] == 10.0
    assert cfgs["top-down"].train.objective["kl_balance"] and not cfgs["plain"].train.objective["kl_balance"]
    # the ladders: Sønderby et al.'s five layers, batch norm and leaky ReLU, no guards; the same networks both ways
    args.latent_dim, args.free_bits = None, 0.0
    ladders = {r: deep.recipe_config(args, r) for r in ("ladder", "ladder-bottom-up")}
    assert [c.model.inference for c in ladders.values()] == ["ladder-unshared", "bottom-up"]
    for c in ladders.values():
        assert c.model.latent_dim == (64, 32, 16, 8, 4) and c.model.arch["norm"] == "batch"
        assert (c.model.activation, c.model.layer_hidden, c.train.batch_size) == ("leaky-relu", (256, 256), 256)
        assert (c.train.grad_clip, c.train.grad_skip, c.train.ema) == (0.0, 0.0, 0.0)
        assert not c.train.objective["kl_balance"]


def test_the_tables_benchmark_masks_exactly_and_its_vaekit_rows_keep_observed_cells(monkeypatch):
    """tables.py's MCAR mask removes exactly ⌊frac·n⌋ observed cells and leaves no row empty; its vaekit imputer
    (a few epochs here) returns the observed cells bit for bit, and beats the mean on correlated columns."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("sklearn")
    import tables

    rng = np.random.default_rng(0)
    observed = rng.random((40, 6)) < 0.9
    removed = tables.mcar(observed, 0.5, rng)
    assert removed.sum() == observed.sum() // 2 and not (removed & ~observed).any()
    assert (observed & ~removed).any(axis=1).all()
    z = rng.standard_normal((200, 1))
    x = z + 0.1 * rng.standard_normal((200, 5))  # five noisy copies of one factor
    miss = tables.mcar(np.ones_like(x, bool), 0.3, rng)
    monkeypatch.setitem(tables.VAEKIT, "epochs", 60)
    filled = tables.vaekit_impute(np.where(miss, np.nan, x), ~miss, seed=0)
    assert np.array_equal(filled[~miss], x[~miss].astype(np.float32).astype(np.float64))
    mse, mean_mse = np.mean((filled - x)[miss] ** 2), np.mean((np.nanmean(np.where(miss, np.nan, x), 0) - x)[miss] ** 2)
    assert mse < 0.3 * mean_mse
