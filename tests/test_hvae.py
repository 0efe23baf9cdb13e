"""Tomczak & Welling's (2018) HVAE (`--inference hvae`): Q(z₂|x) Q(z₁|x, z₂), p(z₁|z₂) p(x|z₁, z₂), the VampPrior
over z₂ mixing Q(z₂|u_k). Its densities against float64 formulas written from the paper; the exact posterior of
a linear-Gaussian HVAE is an HVAE Q, so every bound equals log p(x); DReG; gated layers; the refusals. (Resume,
evaluate = Python and one process = two are rows of tests/test_contract.py.)"""

import math

import pytest
import torch
from dreg_check import check_dreg
from test_hierarchical import assert_exact_until_perturbed

import vaekit
from vaekit.errors import VaekitError

D = torch.float64
LOG_2PI = math.log(2 * math.pi)


def hvae(**settings):
    torch.manual_seed(0)
    return vaekit.VAE(data_dim=12, latent_dim=(3, 2), hidden=(16, 16), arch="gated", inference="hvae",
                      layer_hidden=(8, 8), prior={"name": "vampprior", "components": 4}, **settings).to(D)


def binary(n, seed=1):
    return (torch.rand(n, 12, generator=torch.Generator().manual_seed(seed), dtype=D) < 0.4).to(D)


def normal64(z, loc, log_var):
    return (-0.5 * (LOG_2PI + log_var + (z - loc) ** 2 / log_var.exp())).sum(-1)


def gated64(net, v):
    """The gated MLP written out: each GatedDense (W v + b) ⊙ σ(V v + c), then the linear output."""
    for layer in net[:-1]:
        v = (v @ layer.h.weight.T + layer.h.bias) * torch.sigmoid(v @ layer.g.weight.T + layer.g.bias)
    return v @ net[-1].weight.T + net[-1].bias


def test_densities_are_the_papers_written_out_in_float64():
    model = hvae()
    x = binary(5)
    q_z = model.posterior(x)
    z = q_z.sample((3,))
    z1, z2 = z[..., :3], z[..., 3:]
    xs = x.expand(3, *x.shape)
    top = gated64(model.encoder.first.net, x).chunk(2, -1)
    below = gated64(model.encoder.lower[0].net, torch.cat([xs, z2], -1)).chunk(2, -1)
    want_q = normal64(z2, *top) + normal64(z1, *below)
    u = model.prior.top.inputs()  # the VampPrior: (1/K) Σ_k Q(z₂|u_k), Q(z₂|·) the encoder's top
    comps = gated64(model.encoder.first.net, u).chunk(2, -1)
    vamp = torch.logsumexp(normal64(z2[..., None, :], comps[0], comps[1]), -1) - math.log(4)
    want_p = vamp + normal64(z1, *gated64(model.prior.lower[0].net, z2).chunk(2, -1))
    logits = gated64(model.decoder.net, z)  # the decoder sees both layers
    want_x = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)
    with torch.no_grad():
        torch.testing.assert_close(q_z.log_prob(z), want_q, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model.prior().log_prob(z), want_p, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model.p_x_given_z(z).log_prob(x), want_x, rtol=1e-12, atol=1e-12)


def linear_gaussian_hvae():
    """(model, p(x)): z₂ ~ N(0, 1), z₁|z₂ ~ N(a z₂ + c, s²), x|z ~ N(V [z₁, z₂] + b, σ²I), every network linear;
    Q(z₂|x) and Q(z₁|x, z₂) set to the exact conditionals of that joint (float64 Gaussian conditioning)."""
    g = torch.Generator().manual_seed(4)
    n, a, c, s, sigma = 4, 0.9, 0.3, 0.6, 0.5
    V, b = torch.randn(n, 2, generator=g, dtype=D), torch.randn(n, generator=g, dtype=D) * 0.3
    M = torch.zeros(2 + n, 2 + n, dtype=D)  # u = (z₂, z₁, x) = c_u + M u + S ε
    M[1, 0], M[2:, 1], M[2:, 0] = a, V[:, 0], V[:, 1]
    inv = torch.linalg.inv(torch.eye(2 + n, dtype=D) - M)
    mean = inv @ torch.cat([torch.tensor([0.0, c], dtype=D), b])
    cov = inv @ torch.diag(torch.tensor([1.0, s**2] + [sigma**2] * n, dtype=D)) @ inv.T

    def conditional(i, given):
        gain = cov[i, given] @ torch.linalg.inv(cov[given][:, given])
        return gain, mean[i] - gain @ mean[given], cov[i, i] - gain @ cov[given, i]

    model = vaekit.VAE(data_dim=n, latent_dim=(1, 1), hidden=(), decoder_hidden=(), layer_hidden=(), inference="hvae",
                       likelihood={"name": "gaussian", "sigma": sigma}).to(D)
    xs = list(range(2, 2 + n))
    with torch.no_grad():
        for net, (gain, shift, var) in ((model.encoder.first.net[0], conditional(0, xs)),
                                        (model.encoder.lower[0].net[0], conditional(1, [*xs, 0]))):  # input [x, z₂]
            net.weight.zero_()
            net.weight[0], net.bias[:] = gain, torch.stack([shift, var.log()])
        between = model.prior.lower[0].net[0]
        between.weight.zero_()
        between.weight[0, 0], between.bias[:] = a, torch.tensor([c, math.log(s**2)], dtype=D)
        model.decoder.net[0].weight.copy_(V)
        model.decoder.net[0].bias.copy_(b)
    return model, torch.distributions.MultivariateNormal(mean[2:], cov[2:, 2:])


def test_the_exact_posterior_of_a_linear_gaussian_hvae_is_an_hvae_q():
    assert_exact_until_perturbed(*linear_gaussian_hvae(), lambda m: m.encoder.lower[0].net[0].bias[:1].add_(0.3))


def test_dreg_is_unbiased_with_the_encoder_shared_by_the_vampprior():
    check_dreg(hvae(), binary(2), copies=16, repeats=40, of_q=("encoder.",))


def test_an_hvae_needs_two_layers_and_no_labels():
    with pytest.raises(VaekitError, match="needs two or more stochastic layers"):
        vaekit.VAE(data_dim=12, latent_dim=4, inference="hvae")
    with pytest.raises(VaekitError, match="and no --condition"):
        vaekit.VAE(data_dim=12, latent_dim=(4, 2), inference="hvae", condition="label", condition_classes=3)
