"""The conditional VAE (`--condition label`, Sohn et al. 2015): against the unconditional model when
the decoder ignores y, p(z|y) against its closed form, labels checked, and from the command line:
training, evaluation on the test labels, `sample --label`, encode → decode, resume and two processes."""

import json
import math

import numpy as np
import pytest
import torch
from run_cli import assert_resumed_equals_straight, straight_and_resumed, vaekit_cli

import vaekit
from vaekit.errors import VaekitError
from vaekit.evaluation.estimates import evaluate_all
from vaekit.objectives.estimators import elbo, iwae_bound
from vaekit.runs.checkpoint import load_run
from vaekit.runs.experiment import load_data
from vaekit.runs.saving import to_data_units

D = torch.float64
LOG_2PI = math.log(2 * math.pi)


def conditional(prior="standard", classes=4):
    torch.manual_seed(0)
    return vaekit.VAE(data_dim=12, latent_dim=3, hidden=(8,), condition="label", condition_classes=classes,
                      prior=prior).to(D)


def data(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 12, generator=g, dtype=D) < 0.4).to(D), torch.randint(0, 4, (n,), generator=g)


def test_with_a_decoder_that_ignores_y_the_elbo_is_the_unconditional_models():
    model, (x, y) = conditional(), data()
    plain = vaekit.VAE(data_dim=12, latent_dim=3, hidden=(8,)).to(D)
    with torch.no_grad():
        first = model.decoder.net[0]
        first.weight[:, 3:] = 0  # the decoder's weights on the one-hot y: it ignores y
        plain.decoder.net[0].weight.copy_(first.weight[:, :3])
        plain.decoder.net[0].bias.copy_(first.bias)
        plain.decoder.net[2].load_state_dict(model.decoder.net[2].state_dict())
    given = model.given(y)
    q_z = given.posterior(x)  # Q(z|x, y) still sees y
    torch.manual_seed(2)
    z = q_z.rsample((5,))
    for kl in ("analytic", "mc"):
        torch.testing.assert_close(elbo(given, x, z=z, num_samples=5, kl=kl).elbo,
                                   elbo(plain, x, q_z=q_z, z=z, num_samples=5, kl=kl).elbo, rtol=0, atol=1e-12)
    torch.testing.assert_close(iwae_bound(given, x, 5, z=z), iwae_bound(plain, x, 5, q_z=q_z, z=z), rtol=0, atol=1e-12)


def test_the_encoder_and_decoder_see_one_hot_y_beside_x_and_z():
    model, (x, y) = conditional(), data()
    one_hot = torch.nn.functional.one_hot(y, 4).to(D)
    h = model.encoder.net(torch.cat([x, one_hot], 1))
    torch.testing.assert_close(model.given(y).posterior(x).mean, h[:, :3], rtol=0, atol=0)
    z = torch.randn(2, 6, 3, dtype=D)
    logits = model.decoder.net(torch.cat([z, one_hot.expand(2, 6, 4)], -1))
    by_hand = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)
    torch.testing.assert_close(model.given(y).p_x_given_z(z).log_prob(x), by_hand, rtol=0, atol=1e-12)


def test_label_prior_is_a_gaussian_per_label_with_the_closed_form_kl():
    model, (x, y) = conditional(prior="label"), data(200)
    assert model.latent_dim == 3 == model.given(y).latent_dim  # k is known without the labels too
    with torch.no_grad():
        model.prior.means.normal_()
        model.prior.log_scales.normal_(0, 0.3)
    given = model.given(y)
    z = torch.randn(200, 3, dtype=D)
    mu, log_s = model.prior.means[y], model.prior.log_scales[y]
    by_hand = (-0.5 * LOG_2PI - log_s - 0.5 * ((z - mu) / log_s.exp()) ** 2).sum(-1)
    torch.testing.assert_close(given.prior().log_prob(z), by_hand, rtol=0, atol=1e-12)
    torch.manual_seed(3)  # the closed-form KL against its Monte Carlo estimate, within 5 standard errors
    analytic = elbo(given, x, kl="analytic").kl
    q_z = given.posterior(x)
    z = q_z.sample((4000,))
    terms = q_z.log_prob(z) - given.prior().log_prob(z)  # [S, B]
    se = terms.std(0) / math.sqrt(4000)
    assert ((analytic - terms.mean(0)).abs() < 5 * se).all(), ((analytic - terms.mean(0)) / se).abs().max()


def test_labels_are_checked_and_an_unconditioned_call_is_refused():
    model, (x, y) = conditional(), data()
    with pytest.raises(VaekitError, match=r"labels must lie in 0…3"):
        model.given(torch.tensor([0, 4, 1, 1, 1, 1])).posterior(x)
    with pytest.raises(VaekitError, match="whole numbers"):
        model.given(y.double()).posterior(x)
    with pytest.raises(VaekitError, match="model.given"):
        model.posterior(x)
    with pytest.raises(VaekitError, match="needs a conditional VAE"):
        vaekit.VAE(data_dim=12, latent_dim=3, prior="label")
    with pytest.raises(VaekitError, match="carry no label"):
        vaekit.VAE(data_dim=12, latent_dim=3, condition="label", condition_classes=4, prior="vampprior")


def test_data_without_labels_are_refused_in_one_line(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((50, 6)).astype(np.float32))
    proc = vaekit_cli("train", "--dataset", tmp_path / "x.npy", "--likelihood", "gaussian", "--condition", "label",
                      "--epochs", "1", "--out", tmp_path / "run", check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert last.startswith("vaekit: error: ") and "has no labels" in last and "--condition label" in last


def test_a_csv_label_column_gives_each_row_its_label(tmp_path):
    """A header column named `label` (or `y`) holds the labels and leaves x; each example keeps its own
    label through the seeded test and validation splits; a conditional VAE trains on it."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)).round(4), rng.integers(0, 3, 60)
    x[:, 0] += 10 * y  # the label is recoverable from the first column: a check that rows and labels stay paired
    path = tmp_path / "d.csv"
    rows = (f"{a},{int(c)},{b},{d}" for (a, b, d), c in zip(x, y))
    path.write_text('a, "Label" ,b,c\n' + "\n".join(rows) + "\n")
    ds = vaekit.data.load_dataset(str(path), binarize="none", support="real", val_size=6)
    assert ds.shape == (3,) and set(ds.labels) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        rows_x = ds.split(split)
        assert torch.equal(ds.labels[split], torch.div(rows_x[:, 0] + 5, 10, rounding_mode="floor").long())
    assert sum(ds.split(s).shape[0] for s in ("train", "val", "test")) == 60
    vaekit_cli("--quiet", "train", "--dataset", path, "--likelihood", "gaussian", "--condition", "label",
               "--latent-dim", "2", "--epochs", "1", "--out", tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["condition_classes"] == 3
    (tmp_path / "two.csv").write_text("y,label,b\n1,2,3\n")
    with pytest.raises(VaekitError, match="two.csv: the header names 2 label columns"):
        vaekit.data.load_dataset(str(tmp_path / "two.csv"), binarize="none", support="real")


TRAIN = ["--quiet", "train", "--dataset", "digits", "--condition", "label", "--prior", "label", "--latent-dim", "4",
         "--hidden", "64", "--lr", "3e-3", "--seed", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return straight_and_resumed(TRAIN, tmp_path_factory.mktemp("conditional"), epochs=3)


def test_evaluation_conditions_on_the_test_labels(runs):
    run = runs / "straight"
    result = json.loads(vaekit_cli("evaluate", run, "--k", "50", "--json").stdout)
    cfg, model = load_run(run)
    assert cfg.model.condition_classes == 10
    ds = load_data(cfg)
    x, y = ds.eval_split("test"), ds.labels_of("test")
    again = evaluate_all(model, x, k=50, seed=0, y=y)
    assert again["elbo"] == result["elbo"] and again["log_likelihood"] == result["log_likelihood"]
    wrong = evaluate_all(model, x, k=50, seed=0, y=(y + 1) % 10)  # the labels matter: wrong ones fit worse
    assert wrong["elbo"] < result["elbo"] - 1.0, (wrong["elbo"], result["elbo"])


def test_sample_with_a_label_is_the_models_draw(runs, tmp_path):
    run = runs / "straight"
    vaekit_cli("sample", run, "--label", "3", "--n", "6", "--out", tmp_path / "s.npy")
    cfg, model = load_run(run)
    torch.manual_seed(0)
    expected = to_data_units(cfg, run, model.given(torch.full((6,), 3)).sample(6))
    saved = np.load(tmp_path / "s.npy")
    assert saved.shape == (6, 1, 8, 8)
    np.testing.assert_array_equal(saved.reshape(6, -1), expected.numpy())
    proc = vaekit_cli("sample", run, "--label", "10", "--out", tmp_path / "t.png", check=False)
    assert proc.returncode == 2 and "--label 10: the model's labels are 0…9" in proc.stderr


def test_decode_of_encode_is_reconstruct_with_the_labels(runs, tmp_path):
    run = runs / "straight"
    vaekit_cli("encode", run, "--out", tmp_path / "z.npz")
    vaekit_cli("decode", run, "--latents", tmp_path / "z.npz", "--out", tmp_path / "x.npy")
    cfg, model = load_run(run)
    ds = load_data(cfg)
    x, y = ds.eval_split("test"), ds.labels_of("test")
    with np.load(tmp_path / "z.npz") as f:
        np.testing.assert_array_equal(f["labels"], y.numpy())
    expected = to_data_units(cfg, run, model.given(y).reconstruct(x))
    np.testing.assert_allclose(np.load(tmp_path / "x.npy").reshape(len(x), -1), expected.numpy(), rtol=0, atol=1e-6)


def test_report_samples_one_row_per_label(runs):
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("PIL.Image")

    run = runs / "straight"
    vaekit_cli("plot", run)
    with image.open(run / "samples.png") as png:
        width, height = png.size
    assert height > 1.1 * width  # ten rows of eight: taller than wide


TWO_LAYERS = ["--quiet", "train", "--dataset", "digits", "--condition", "label", "--prior", "label", "--latent-dim", "6",
              "--latent-dim", "3", "--hidden", "64", "--seed", "1"]
CONV = ["--quiet", "train", "--dataset", "digits", "--arch", "conv", "--condition", "label", "--prior", "label",
        "--latent-dim", "4", "--hidden", "32", "--seed", "3"]


@pytest.mark.parametrize("train", [TWO_LAYERS, CONV], ids=["two-layers", "conv"])
def test_resume_is_bit_identical_and_evaluate_takes_the_test_labels(train, tmp_path):
    """A conditional hierarchical VAE and a conditional conv VAE from the command line: resume equals the
    straight run, and the evaluation's ELBO is that of the test labels (other labels give another number)."""
    root = straight_and_resumed(train, tmp_path, epochs=2)
    assert any(k.startswith("prior.") and k.endswith("means") for k in assert_resumed_equals_straight(root))  # p(z|y)
    cfg, model = load_run(root / "straight")
    data = load_data(cfg)
    x, y = data.eval_split("test"), data.labels_of("test")
    shown = json.loads(vaekit_cli("evaluate", root / "straight", "--k", "20", "--json").stdout)
    mine = evaluate_all(model, x, k=20, seed=0, y=y)
    assert shown["elbo"] == mine["elbo"] and shown["log_likelihood"] == mine["log_likelihood"]
    assert mine["elbo"] != pytest.approx(evaluate_all(model, x, k=20, seed=0, y=(y + 1) % 10)["elbo"], rel=1e-3)


def test_a_conv_model_whose_label_weights_are_zero_is_the_unconditional_conv_model():
    """`--arch conv --condition label`: the label's one-hot joins the encoder after its convolutions and
    the decoder beside z. With those weights zeroed, the ELBO is the unconditional conv model's on the
    same draws (1e-12); with them, the labels change it."""
    shape, kw = (1, 8, 8), {"data_dim": 64, "latent_dim": 3, "hidden": (16,), "arch": "conv"}
    torch.manual_seed(0)
    model = vaekit.VAE(**kw, data_shape=shape, condition="label", condition_classes=4).to(D)
    plain = vaekit.VAE(**kw, data_shape=shape).to(D)
    g = torch.Generator().manual_seed(1)
    x, y = (torch.rand(5, 64, generator=g, dtype=D) < 0.4).to(D), torch.randint(0, 4, (5,), generator=g)
    torch.manual_seed(2)
    z = model.given(y).posterior(x).rsample((3,))
    before = elbo(model.given(y), x, z=z, num_samples=3).elbo
    with torch.no_grad():
        enc_first, dec_first = model.encoder.net.head[0], model.decoder.net.stem[0][0]
        assert enc_first.in_features == plain.encoder.net.head[0].in_features + 4
        assert dec_first.in_features == 3 + 4
        enc_first.weight[:, -4:] = 0
        dec_first.weight[:, 3:] = 0
        state = model.state_dict()
        state["encoder.net.head.0.weight"] = enc_first.weight[:, :-4]
        state["decoder.net.stem.0.0.weight"] = dec_first.weight[:, :3]
        plain.load_state_dict(state)
    q_z = model.given(y).posterior(x)
    torch.testing.assert_close(q_z.mean, plain.posterior(x).mean, rtol=0, atol=1e-12)
    ours = elbo(model.given(y), x, z=z, num_samples=3).elbo
    torch.testing.assert_close(ours, elbo(plain, x, z=z, num_samples=3).elbo, rtol=0, atol=1e-12)
    assert (ours - before).abs().max() > 1e-3  # the label weights did matter before they were zeroed

