"""Batch normalization (`--norm batch`, `parts.networks.BatchNorm`) against torch's own BatchNorm1d in float64:
the training-mode output and its gradients, the running averages over several steps, the evaluation-mode
output; importance samples [k, B, C] normalized as their k·B rows; and where the layers go (every hidden layer
of the MLPs, the networks between stochastic layers too, never an output). One process against two is a row
of tests/test_contract.py."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import vaekit
from vaekit.errors import VaekitError
from vaekit.parts.networks import BatchNorm

D = torch.float64
X = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=D)


def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), BatchNorm(4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).to(D)


def _rank(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = torch.nn.parallel.DistributedDataParallel(net())
        model(X[rank * 4:(rank + 1) * 4]).pow(2).mean().backward()  # each rank half the batch
        out[rank] = [p.grad.clone() for p in model.module.parameters()] + [model.module[1].running_mean.clone(),
                                                                           model.module[1].running_var.clone()]
    finally:
        dist.destroy_process_group()


def test_batch_norm_is_torchs_batchnorm1d_in_training_and_in_evaluation():
    torch.manual_seed(0)
    mine, theirs = BatchNorm(5).to(D), torch.nn.BatchNorm1d(5).to(D)
    with torch.no_grad():
        for m in (mine, theirs):
            m.weight.copy_(torch.linspace(0.5, 2.0, 5, dtype=D))
            m.bias.copy_(torch.linspace(-1.0, 1.0, 5, dtype=D))
    for step in range(4):  # the running averages follow the same recursion
        h = (torch.randn(32, 5, dtype=D) * torch.arange(1, 6) + 3.0).requires_grad_()
        h2 = h.detach().clone().requires_grad_()
        out, ref = mine(h), theirs(h2)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        weights = torch.randn(32, 5, dtype=D)
        (out * weights).sum().backward()
        (ref * weights).sum().backward()
        torch.testing.assert_close(h.grad, h2.grad, rtol=0, atol=1e-12)
        torch.testing.assert_close(mine.running_mean, theirs.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(mine.running_var, theirs.running_var, rtol=0, atol=1e-12)
    torch.testing.assert_close(mine.weight.grad, theirs.weight.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(mine.bias.grad, theirs.bias.grad, rtol=0, atol=1e-10)
    mine.eval(), theirs.eval()
    h = torch.randn(7, 5, dtype=D)
    torch.testing.assert_close(mine(h), theirs(h), rtol=0, atol=1e-12)
    assert not torch.allclose(mine(h), mine.train()(h))  # evaluation is not the batch's statistics


def test_two_processes_normalize_by_the_global_batch_and_get_one_process_gradients():
    """Under DistributedDataParallel (gloo, two processes, half the batch each) the statistics are the whole
    batch's and, after DDP's average, every gradient and running average is one process's on the whole batch."""
    model = net()
    model(X).pow(2).mean().backward()
    expected = [p.grad for p in model.parameters()] + [model[1].running_mean, model[1].running_var]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(port, out), nprocs=2)
    for rank in (0, 1):
        for mine, one in zip(out[rank], expected, strict=True):
            torch.testing.assert_close(mine, one, rtol=0, atol=1e-12)


def test_importance_samples_are_normalized_as_their_rows():
    torch.manual_seed(1)
    norm = BatchNorm(3).to(D)
    h = torch.randn(4, 6, 3, dtype=D) * 2 + 1
    flat = h.reshape(24, 3)
    expected = (flat - flat.mean(0)) / (flat.var(0, unbiased=False) + 1e-5).sqrt()
    torch.testing.assert_close(norm(h), expected.reshape(4, 6, 3), rtol=0, atol=1e-12)


def test_every_hidden_layer_of_the_mlps_is_normalized_and_no_output():
    model = vaekit.VAE(data_dim=12, latent_dim=(4, 2), hidden=(8, 8), layer_hidden=(6,), activation="leaky-relu",
                       arch={"name": "mlp", "norm": "batch"}, inference="ladder-unshared")
    norms = {name: m.weight.shape[0] for name, m in model.named_modules() if isinstance(m, BatchNorm)}
    # the encoder trunk (2), Q(z₂|z₁), Q's own step z₂ → z₁, p(z₁|z₂) (1 each), the decoder (2)
    assert sorted(norms.values()) == [6, 6, 6, 8, 8, 8, 8]
    activations = [m for m in model.modules() if isinstance(m, torch.nn.LeakyReLU | torch.nn.ReLU)]
    assert len(activations) == 7 and all(type(m) is torch.nn.LeakyReLU for m in activations)
    hvae = vaekit.VAE(data_dim=12, latent_dim=(4, 2), hidden=(8,), layer_hidden=(6,), inference="hvae",
                      arch={"name": "mlp", "norm": "batch"})
    assert [m.weight.shape[0] for m in hvae.prior.lower.modules() if isinstance(m, BatchNorm)] == [6]  # p(z₁|z₂)
    plain = vaekit.VAE(data_dim=12, latent_dim=(4, 2), hidden=(8, 8), layer_hidden=(6,))
    assert not any(isinstance(m, BatchNorm) for m in plain.modules())
    with pytest.raises(VaekitError, match="'gated' has no setting 'norm'"):
        vaekit.VAE(data_dim=12, latent_dim=4, arch={"name": "gated", "norm": "batch"})


def test_a_batch_of_one_leaves_the_running_averages_and_batch_size_one_is_refused():
    """A last batch of one example moved the running variance toward 0 (evaluation then divided by √ε: ELBO −inf);
    a batch size of 1 with batch normalization trained a constant network and ended in exit 0 with val ELBO −inf."""
    from vaekit.runs.config import Config

    bn = BatchNorm(3)
    bn(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    assert not torch.equal(var, torch.ones(3))  # a batch of five moved them
    bn(torch.randn(1, 3))
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    with pytest.raises(VaekitError, match=r"\[train\] batch_size 1 with batch normalization"):
        Config.from_dict({"model": {"arch": {"name": "mlp", "norm": "batch"}}, "train": {"batch_size": 1}})
