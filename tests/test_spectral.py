"""Spectral regularization (NVAE): the loss gains λ·Σ σ_max(W) over the model's layers. Held to what it is defined
to be: σ against the float64 SVD, the penalty's gradient against autograd through the exact matrix 2-norm, the
trained loss against the objective's plus λΣσ, and a run with it resumed bit for bit (its vectors are state)."""

import pytest
import torch
from test_loop import DATA

import vaekit
from vaekit.cli import main
from vaekit.runs.checkpoint import STATE, load_state, save_state
from vaekit.runs.config import TrainConfig
from vaekit.training.loss import VAEObjective
from vaekit.training.spectral import SpectralPenalty, regularized_layers


def conv_and_mlp_model():
    torch.manual_seed(0)
    cfg = vaekit.Config.from_dict({"model": {"data_shape": [1, 8, 8], "latent_dim": [3], "hidden": [8, 16],
                                             "arch": "conv"}})
    return vaekit.build_model(cfg.model).double()


def exact_sigmas(model):
    """σ_max of each layer's weight as [out, in·k…]: a transposed convolution's [in, out, k…] output first (torch's
    `spectral_norm`, dim 1; it was read as [in, out·k…])."""
    def matrix(m):
        w = m.weight.detach().transpose(0, 1) if isinstance(m, torch.nn.ConvTranspose2d) else m.weight.detach()
        return w.reshape(w.shape[0], -1)

    return torch.stack([torch.linalg.matrix_norm(matrix(m), ord=2) for _, m in regularized_layers(model)])


@pytest.mark.parametrize("build, iterations", [
    (lambda: vaekit.VAE(data_dim=64, latent_dim=(4, 2), hidden=(32,)).double(), 2000),
    (conv_and_mlp_model, 20000),  # a ConvTranspose2d's σ₂/σ₁ is 0.998: the error falls as (σ₂/σ₁)^(2n)
])
def test_power_iteration_converges_to_the_largest_singular_value_of_each_layer(build, iterations):
    torch.manual_seed(0)
    model = build()
    kinds = {type(m).__name__ for _, m in regularized_layers(model)}
    assert "Linear" in kinds and (build is not conv_and_mlp_model or {"Conv2d", "ConvTranspose2d"} <= kinds)
    spectral = SpectralPenalty(model, 0.1)
    for _ in range(iterations):
        spectral._iterate()
    torch.testing.assert_close(spectral.sigmas().detach(), exact_sigmas(model), rtol=1e-9, atol=0)


def test_the_penalty_gradient_is_that_of_lambda_times_the_exact_two_norms():
    torch.manual_seed(0)
    model = vaekit.VAE(data_dim=64, latent_dim=(4, 2), hidden=(32,)).double()
    spectral = SpectralPenalty(model, 0.3)
    for _ in range(500):
        spectral.penalty()
    penalty, total = spectral.penalty()
    penalty.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    exact = 0.3 * sum(torch.linalg.matrix_norm(m.weight.reshape(m.weight.shape[0], -1), ord=2)
                      for _, m in regularized_layers(model))
    exact.backward()
    want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert set(want) == {n for n, g in got.items() if g.abs().sum() > 0} and len(want) == len(regularized_layers(model))
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(penalty.detach(), exact.detach(), rtol=1e-10, atol=0)
    assert float(total) == pytest.approx(float(exact.detach()) / 0.3, rel=1e-10)


def test_the_trained_loss_is_the_objectives_plus_lambda_times_the_sigmas():
    torch.manual_seed(0)
    model = vaekit.VAE(data_dim=64, latent_dim=3, hidden=(32,))
    batch = DATA.split("train")[:40]
    plain = VAEObjective(model, TrainConfig(), DATA)
    regularized = VAEObjective(model, TrainConfig(spectral_reg=0.05), DATA)
    torch.manual_seed(5)
    loss, metrics = plain(batch, 1.0)
    torch.manual_seed(5)
    reg_loss, reg_metrics = regularized(batch, 1.0)
    after = regularized.spectral.sigmas().detach()  # after the step's own iteration, which the loss used
    torch.testing.assert_close(reg_loss, loss + 0.05 * after.sum(), rtol=1e-6, atol=1e-6)
    assert float(reg_metrics["spectral_sum"]) == pytest.approx(float(after.sum()), rel=1e-6)
    assert float(reg_metrics["elbo"].detach()) == float(metrics["elbo"].detach())  # the bound logged is the model's, not the loss


def test_the_penalty_lowers_the_trained_networks_sigmas(tmp_path):
    flags = ["--quiet", "train", "--dataset", "digits", "--latent-dim", "3", "--hidden", "32", "--seed", "2",
             "--epochs", "4"]
    assert main([*flags, "--out", str(tmp_path / "plain")]) == 0
    assert main([*flags, "--out", str(tmp_path / "reg"), "--spectral-reg", "1.0"]) == 0
    plain, reg = vaekit.load(tmp_path / "plain"), vaekit.load(tmp_path / "reg")
    assert float(exact_sigmas(reg).sum()) < 0.9 * float(exact_sigmas(plain).sum())


def test_a_run_with_spectral_regularization_resumes_bit_identical_and_refuses_a_state_without_it(tmp_path, capsys):
    flags = ["--quiet", "train", "--dataset", "digits", "--latent-dim", "3", "--hidden", "32", "--seed", "1",
             "--batch-size", "64", "--spectral-reg", "0.01"]
    assert main([*flags, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main([*flags, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main([*flags, "--epochs", "2", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    for name in ("model.safetensors", STATE):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes()
    state = load_state(tmp_path / "straight")
    model = vaekit.load(tmp_path / "straight")
    assert set(state["spectral"]) == {f"{n}.{w}" for n, _ in regularized_layers(model) for w in "uv"}
    for bad in (0.0, 1e30):  # a crafted state: zero (or huge) vectors switched the penalty off for good
        crafted = {**state, "spectral": {k: v * bad for k, v in state["spectral"].items()}}
        save_state(tmp_path / "straight", crafted)
        assert main([*flags, "--epochs", "3", "--out", str(tmp_path / "straight"), "--resume"]) == 2
        said = capsys.readouterr().err.strip().splitlines()
        assert len(said) == 1 and "train_state.pt: spectral." in said[0] and "is not a unit vector" in said[0], said
    del state["spectral"]
    save_state(tmp_path / "straight", state)
    assert main([*flags, "--epochs", "3", "--out", str(tmp_path / "straight"), "--resume"]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "train_state.pt: spectral is missing" in said[0], said


def test_a_layer_that_starts_at_zero_is_tracked_once_it_grows():
    """A top-down VAE's posterior heads start at zero (Δ = 0): u and v became 0 and stayed 0, so those layers went
    unregularized for a whole run (σ 15.5 where 0 was tracked; found after the 190-epoch run of issue 24)."""
    torch.manual_seed(0)
    model = vaekit.VAE(data_dim=64, latent_dim=(4, 2), hidden=(32,), inference="top-down").double()
    zero = [n for n, m in regularized_layers(model) if not bool(m.weight.detach().any())]
    assert zero  # the residual heads' last layers
    spectral = SpectralPenalty(model, 0.1)
    assert float(spectral.sigmas().detach()[[n for n, _ in regularized_layers(model)].index(zero[0])]) == 0.0
    with torch.no_grad():
        for _, m in regularized_layers(model):
            if not bool(m.weight.any()):
                m.weight.normal_()
    for _ in range(3000):
        spectral._iterate()
    torch.testing.assert_close(spectral.sigmas().detach(), exact_sigmas(model), rtol=1e-9, atol=0)


def test_a_lazy_layer_joins_the_penalty_once_it_has_its_weight():
    """A model with `nn.LazyLinear`: the penalty built before the first forward pass skipped the layer for good (the
    sixth attack); it joins at the first step after it has its weight, and σ then meets the SVD."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LazyLinear(3)).double()
    spectral = SpectralPenalty(model, 0.1)
    assert [n for n, _ in spectral.layers] == ["0"]
    model(torch.zeros(2, 5, dtype=torch.float64))  # the lazy layer gets its weight
    _, total = spectral.penalty()
    assert [n for n, _ in spectral.layers] == ["0", "1"] and set(spectral.state_dict()) == {"0.u", "0.v", "1.u", "1.v"}
    torch.testing.assert_close(total, spectral.sigmas().detach().sum(), rtol=1e-12, atol=0)  # both layers counted
    for _ in range(3000):
        spectral._iterate()
    exact = torch.stack([torch.linalg.matrix_norm(m.weight.detach(), ord=2) for m in model])
    torch.testing.assert_close(spectral.sigmas().detach(), exact, rtol=1e-9, atol=0)
