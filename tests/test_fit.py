"""The Python user's path: vaekit.fit on in-memory tensors, save/load, encode/decode, real-valued data."""

import json

import numpy as np
import pytest
import torch
from run_cli import vaekit_cli
from torch import nn

import vaekit
from vaekit.errors import VaekitError
from vaekit.parts.likelihoods import GaussianObservation
from vaekit.parts.posteriors import DiagonalGaussian

D = torch.float64


def test_a_gaussian_vae_recovers_the_exact_log_likelihood_of_linear_gaussian_data():
    """The model class contains the truth (linear decoder, known σ): after fitting, the importance-
    sampled log-likelihood of held-out data is within 0.05 nat of the true model's exact marginal."""
    torch.manual_seed(0)
    d, k, sigma = 5, 2, 0.3
    truth = vaekit.LinearGaussian(torch.randn(d, k, dtype=D), torch.randn(d, dtype=D), sigma)
    x = truth.marginal().sample((6000,)).float()
    x_train, x_test = x[:5000], x[5000:]
    model = vaekit.VAE(data_dim=d, latent_dim=k, hidden=(), likelihood={"name": "gaussian", "sigma": sigma}, posterior="full")
    vaekit.fit(model, x_train, epochs=40, batch_size=100, lr=1e-2, seed=0)
    estimate = vaekit.log_likelihood(model, x_test, k=100).mean
    exact_truth = float(truth.log_marginal(x_test.double()).mean())
    exact_fitted = float(vaekit.LinearGaussian.from_model(model.double()).log_marginal(x_test.double()).mean())
    assert abs(estimate - exact_truth) < 0.05, (estimate, exact_truth)
    assert abs(estimate - exact_fitted) < 0.01  # the IW estimate of the fitted model itself (full Q: tight)
    assert exact_fitted <= exact_truth + 0.05  # no better than the truth beyond sampling noise


class MyDecoderNet(nn.Module):
    """A user's own network: nothing vaekit knows about."""

    def __init__(self, k: int, d: int):
        super().__init__()
        self.a, self.b = nn.Linear(k, 16), nn.Linear(16, d)

    def forward(self, z):
        return self.b(torch.tanh(self.a(z)))


def my_model(seed: int = 0) -> vaekit.VAE:
    torch.manual_seed(seed)
    encoder = vaekit.Encoder(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)), DiagonalGaussian())
    decoder = vaekit.Decoder(MyDecoderNet(2, 6), GaussianObservation(0.5), data_dim=6)
    return vaekit.VAE(encoder, decoder, vaekit.parts.priors.StandardNormal(2))


def test_fit_save_load_with_a_users_own_network(tmp_path):
    x = torch.randn(300, 6)
    model = my_model()
    before = [p.detach().clone() for p in model.parameters()]
    result = vaekit.fit(model, x, epochs=3, batch_size=50, lr=1e-2, seed=1)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it trained
    vaekit.save(model, tmp_path / "m")
    with pytest.raises(VaekitError, match="built in Python"):
        vaekit.load(tmp_path / "m")  # never unpickled: the user rebuilds the architecture
    loaded = vaekit.load(tmp_path / "m", model=my_model(seed=5))  # other initial weights, then loaded
    q1, q2 = model.posterior(x), loaded.posterior(x)
    z = q1.rsample((4,)).detach()
    r1 = vaekit.elbo(model, x, q_z=q1, z=z)
    r2 = vaekit.elbo(loaded, x, q_z=q2, z=z)
    assert torch.equal(r1.elbo, r2.elbo)
    # encode is the posterior mean, decode the mean of p(x|z) (for a Gaussian: the network output)
    assert torch.equal(loaded.encode(x), q2.base_dist.loc)
    assert loaded.encode(x, distribution=True).event_shape == (2,)
    assert torch.equal(loaded.decode(z[0]), loaded.decoder.net(z[0]))
    assert loaded.sample(7).shape == (7, 6)


def test_save_and_load_a_model_of_registered_parts(tmp_path):
    torch.manual_seed(0)
    model = vaekit.VAE(data_dim=64, latent_dim=3, hidden=(16,), prior={"name": "mog", "components": 4}, posterior="full")
    with torch.no_grad():
        model.prior.means.add_(1.0)  # a trained-looking prior: loaded from the weights, not re-initialised
    vaekit.save(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model"]["prior"] == {"name": "mog", "components": 4} and config["model"]["posterior"] == {"name": "full"}
    loaded = vaekit.load(tmp_path / "m")  # rebuilt from config.json alone
    x = torch.bernoulli(torch.full((10, 64), 0.3))
    torch.manual_seed(1)
    a = vaekit.iwae_bound(model, x, 5)
    torch.manual_seed(1)
    b = vaekit.iwae_bound(loaded, x, 5)
    assert torch.equal(a, b)
    # a Bernoulli decode is a probability, not a logit
    p = loaded.decode(torch.zeros(1, 3))
    assert torch.equal(p, torch.sigmoid(loaded.decoder.net(torch.zeros(1, 3))))


def test_fit_checks_data_against_the_likelihood():
    model = vaekit.VAE(data_dim=4, latent_dim=2, hidden=(8,))  # Bernoulli
    with pytest.raises(VaekitError, match="0/1 data"):
        vaekit.fit(model, torch.rand(50, 4), epochs=1)
    result = vaekit.fit(model, torch.rand(50, 4), epochs=1, binarize="dynamic")
    assert result.config.data.binarize == "dynamic"
    with pytest.raises(VaekitError, match="unknown key 'epoch'"):
        vaekit.fit(model, torch.rand(50, 4).round(), epoch=1)


def test_fit_trains_a_conditional_vae_on_each_examples_label():
    """y_train / y_val reach the loop: the validation ELBO it records is the trained model's ELBO
    given the validation labels (the same seed's draws), not given other labels."""
    from vaekit.evaluation.estimates import evaluate_elbo

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (90,), generator=g)
    x = (torch.rand(90, 6, generator=g) < 0.2 + 0.3 * y.unsqueeze(1)).float()  # the label sets the density
    torch.manual_seed(0)
    model = vaekit.VAE(data_dim=6, latent_dim=2, hidden=(8,), condition="label", condition_classes=3)
    result = vaekit.fit(model, x[:70], x[70:], y_train=y[:70], y_val=y[70:], epochs=3, lr=1e-2, progress=False)
    assert result.config.model.condition == "label" and result.config.model.condition_classes == 3
    recorded = result.history[-1]["val/elbo"]
    assert recorded == pytest.approx(evaluate_elbo(model, x[70:], seed=0, y=y[70:])["elbo"], rel=1e-6)
    assert recorded != pytest.approx(evaluate_elbo(model, x[70:], seed=0, y=(y[70:] + 1) % 3)["elbo"], rel=1e-3)
    with pytest.raises(VaekitError, match="conditioned on labels: pass y_train"):
        vaekit.fit(model, x, epochs=1)
    with pytest.raises(VaekitError, match="takes no labels"):
        vaekit.fit(vaekit.VAE(data_dim=6, latent_dim=2), x, y_train=y, epochs=1)
    with pytest.raises(VaekitError, match=r"y_train: \(89,\) labels for the 90 examples of x_train"):
        vaekit.fit(model, x, y_train=y[:89], epochs=1)


def cli_stdout(*args):
    return vaekit_cli("--quiet", *args).stdout


def test_real_tabular_data_standardized_train_and_evaluate_in_nats(tmp_path):
    run = tmp_path / "wine"
    cli_stdout("train", "--dataset", "wine", "--likelihood", "gaussian-learned-per-dim", "--sigma", "1",
               "--standardize", "--latent-dim", "2", "--hidden", "32", "--epochs", "30", "--batch-size", "32",
               "--lr", "3e-3", "--out", run)
    m = json.loads(cli_stdout("evaluate", run, "--k", "200", "--json"))
    assert m["elbo"] == pytest.approx(m["reconstruction"] - m["kl"], abs=1e-6)
    # 13 standardized features: a good model beats independent N(0, 1) per feature, −13·½·log(2πe) ≈ −18.4
    assert -18.4 < m["elbo"] <= m["log_likelihood"] + 3 * m["log_likelihood_stderr"]
    # samples come back in the data's units: proline (the last feature) is in the hundreds
    cli_stdout("sample", run, "--n", "400", "--draw")
    samples = np.load(run / "samples.npy")
    data = vaekit.load_dataset("wine", support="real").split("train").numpy()
    assert samples.shape == (400, 13)
    assert abs(samples[:, 12].mean() - data[:, 12].mean()) < 0.5 * data[:, 12].std()
    assert 0.3 < samples[:, 12].std() / data[:, 12].std() < 2.0


def test_the_config_of_a_python_built_model_says_what_is_known_and_marks_the_rest(tmp_path, caplog):
    import json
    import logging

    x = torch.randn(300, 6)
    with caplog.at_level(logging.INFO, logger="vaekit"):
        vaekit.fit(my_model(), x, out=tmp_path / "fitted", epochs=2, batch_size=50, seed=1, progress=False)
    assert "built in Python (latent 2; encoder: vaekit.parts.modules.Encoder" in caplog.text
    fitted = json.loads((tmp_path / "fitted" / "config.json").read_text())
    m = fitted["model"]
    assert (m["latent_dim"], m["data_shape"], m["built_in_python"]) == ([2], [6], True)
    assert m["python_parts"] == ["encoder: vaekit.parts.modules.Encoder", "decoder: vaekit.parts.modules.Decoder",
                                 "likelihood: vaekit.parts.likelihoods.real.GaussianObservation",
                                 "prior: vaekit.parts.priors.StandardNormal"]
    assert {"model.hidden", "model.likelihood", "model.posterior", "model.prior"} <= set(m["unknown"])
    assert "model.latent_dim" not in m["unknown"] and "train" not in m["unknown"]
    assert (fitted["train"]["epochs"], fitted["train"]["batch_size"], fitted["data"]["dataset"]) == (2, 50, "tensors")
    vaekit.save(my_model(), tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["model"]["unknown"]
    assert saved[-2:] == ["data", "train"] and "model.hidden" in saved  # saved, not trained: no data, no training


def test_a_run_trained_on_tensors_says_how_to_continue_it_from_the_shell(tmp_path):
    """`train --resume` or `evaluate` on a vaekit.fit run: no file holds its data; the one line says so and how to
    go on (it said "tensors: no such file or directory")."""
    model = vaekit.build_model(vaekit.ModelConfig(latent_dim=2, hidden=(8,), data_shape=(12,)))
    x = (torch.rand(120, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    vaekit.fit(model, x, out=tmp_path / "fitted", epochs=1, batch_size=40, progress=False)
    for args in (["train", "--out", tmp_path / "fitted", "--resume", "--epochs", "2"], ["evaluate", tmp_path / "fitted"]):
        proc = vaekit_cli(*args, check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "vaekit.fit(model, x, out=RUN, resume=True)" in proc.stderr and "--dataset FILE" in proc.stderr
    csv = tmp_path / "x.csv"
    np.savetxt(csv, x.numpy(), delimiter=",", fmt="%d")
    shown = vaekit_cli("evaluate", tmp_path / "fitted", "--dataset", csv, "--k", "10").stdout
    assert "nats" in shown


def test_save_never_writes_over_a_run(tmp_path):
    """vaekit.save replaced a trained run's config.json and weights (then it could neither resume nor evaluate), even
    while another process trained into it; it may replace only an earlier save."""
    from vaekit.files import RunLock

    vaekit_cli("--quiet", "train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "16",
               "--out", tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file() and p.name != ".vaekit.lock"}
    with pytest.raises(VaekitError, match=r"run: holds a run \(train_state.pt\); vaekit.save writes only into a new"):
        vaekit.save(my_model(), tmp_path / "run")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file() and p.name != ".vaekit.lock"} == before
    (tmp_path / "live").mkdir()
    with RunLock(tmp_path / "live"), pytest.raises(VaekitError, match=r"another vaekit process \(pid \d+\) is training"):
        vaekit.save(my_model(), tmp_path / "live")  # a run being trained: the lock refuses
    assert not (tmp_path / "live" / "config.json").exists()
    vaekit.save(my_model(), tmp_path / "saved")
    vaekit.save(my_model(), tmp_path / "saved")  # over an earlier save: allowed
    for bad, said in ((None, "must be a VAE"), (my_model(), r"name a folder to write the model into \(got ''\)")):
        with pytest.raises(VaekitError, match=said):
            vaekit.save(bad, "" if bad is not None else tmp_path / "x")


def test_fit_draws_its_training_noise_from_its_seed():
    """The same model and data with the same seed train to the same weights, whatever the process drew before (the
    noise came from the global stream, so a second-stage sampler fitted twice with one --seed differed)."""
    first = my_model()
    second = my_model()
    second.load_state_dict(first.state_dict())
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(1))
    trained = []
    for model in (first, second):
        torch.rand(11)  # the process's stream moves between the two
        trained.append(vaekit.fit(model, x, epochs=2, batch_size=50, seed=3, progress=False).model.state_dict())
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


def test_fit_checks_its_device_in_one_line():
    with pytest.raises(VaekitError, match=r"^device= 'tpu': use cpu, cuda, cuda:N or auto$"):
        vaekit.fit(my_model(), torch.randn(20, 6), device="tpu", progress=False)
