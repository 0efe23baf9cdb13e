"""The deep top-down VAE (`--inference top-down`, `parts.topdown`): with linear networks and groups of one
latent, the exact posterior of the linear-Gaussian model the path describes *is* a top-down Q, so every
bound equals the closed-form log p(x); the remembered walk is never stale; DReG over the networks Q shares
with the prior; drawing at a temperature; the refusals. (Resume, evaluate = Python and one process = two
are rows of tests/test_contract.py.)"""

import math

import pytest
import torch
from dreg_check import check_dreg
from test_hierarchical import assert_exact_until_perturbed
from torch import nn

import vaekit
from vaekit.errors import VaekitError
from vaekit.parts.topdown import LOG_SCALE_BOUND

D = torch.float64
L, X = 3, 4  # groups (of one latent each), data dimensions
W = L + X  # the path's width: slot j of h holds the j-th group drawn, slots L… of a hold x


def deep(**settings):
    """A small top-down VAE as training leaves it: Q's heads no longer start at Δ = 0 (where the bottom-up
    path gets no gradient yet)."""
    torch.manual_seed(0)
    model = vaekit.VAE(data_dim=12, latent_dim=(3, 2, 2), hidden=(16,), activation="tanh", inference="top-down",
                       **settings).to(D)
    with torch.no_grad():
        model.prior.path.top.normal_()  # (at 0, the top prior head's weights see no input)
        for head in model.prior.path.posterior_heads:
            head[-1].weight.normal_(0, 0.3)
            head[-1].bias.normal_(0, 0.3)
    return model


def binary(n, seed=1):
    return (torch.rand(n, 12, generator=torch.Generator().manual_seed(seed), dtype=D) < 0.4).to(D)


def raw_log_scale(log_scale):
    """The pre-clamp value whose soft clamp is log_scale."""
    return LOG_SCALE_BOUND * math.atanh(log_scale / LOG_SCALE_BOUND)


def linear_gaussian_top_down():
    """(model, p(x)): identity cells, linear heads, h_l = [z drawn so far, 0…], a = [0, x]; z_i|z_<i ~
    N(c_i + B_i·z_<i, e^{2s_i}), x|z ~ N(Vz + b, σ²I); Q's heads set to the exact Gaussian conditionals
    p(z_i | z_<i, x) of that joint, computed here by Gaussian conditioning in float64."""
    g = torch.Generator().manual_seed(3)
    B = torch.randn(L, L, generator=g, dtype=D).tril(-1) * 0.8
    c, s = torch.randn(L, generator=g, dtype=D) * 0.5, torch.tensor([0.3, -0.4, 0.1], dtype=D)
    V, b, sigma = torch.randn(X, L, generator=g, dtype=D), torch.randn(X, generator=g, dtype=D) * 0.3, 0.4
    # u = (z₀ … z_{L−1}, x) = c_u + M u + S ε  ⇒  u ~ N((I − M)⁻¹ c_u, (I − M)⁻¹ S² (I − M)⁻ᵀ)
    M = torch.zeros(L + X, L + X, dtype=D)
    M[:L, :L], M[L:, :L] = B, V
    inv = torch.linalg.inv(torch.eye(L + X, dtype=D) - M)
    mean = inv @ torch.cat([c, b])
    cov = inv @ torch.diag(torch.cat([(2 * s).exp(), torch.full((X,), sigma**2, dtype=D)])) @ inv.T
    model = vaekit.VAE(data_dim=X, latent_dim=(1,) * L, hidden=(), decoder_hidden=(), layer_hidden=(W,),
                       inference="top-down", likelihood={"name": "gaussian", "sigma": sigma}).to(D)
    path = model.prior.path
    with torch.no_grad():
        path.top.zero_()
        for cell in [*path.cells, *model.encoder.up]:  # identity cells
            cell.inner[-1].weight.zero_()
        trunk = model.encoder.trunk[0]
        trunk.weight.zero_(), trunk.bias.zero_()
        trunk.weight[L:] = torch.eye(X, dtype=D)
        out = model.decoder.net.net[0]
        out.weight.zero_()
        out.weight[:, :L], out.bias[:] = V, b
        for i in range(L):  # i: the i-th group drawn (top first), stored as z_{L−i}
            path.inject[i].weight.zero_(), path.inject[i].bias.zero_()
            path.inject[i].weight[i, 0] = 1.0
            prior, post = nn.Linear(W, 2).to(D), nn.Linear(2 * W, 2).to(D)
            for head in (prior, post):
                head.weight.zero_()
            prior.weight[0, :i], prior.bias[:] = B[i, :i], torch.tensor([c[i], raw_log_scale(s[i])])
            given = [*range(i), *range(L, L + X)]  # z_<i and x
            gain = cov[i, given] @ torch.linalg.inv(cov[given][:, given])
            var = cov[i, i] - gain @ cov[given, i]
            post.weight[0, :i] = gain[:i] - B[i, :i]
            post.weight[0, W + L:] = gain[i:]
            post.bias[0] = mean[i] - gain @ mean[given] - c[i]
            post.bias[1] = raw_log_scale(0.5 * float(var.log())) - raw_log_scale(s[i])
            path.prior_heads[i], path.posterior_heads[i] = prior, post
    marginal = torch.distributions.MultivariateNormal(mean[L:], cov[L:, L:])
    return model, marginal


def test_the_exact_posterior_of_a_linear_gaussian_path_is_a_top_down_q():
    """Every importance weight is p(x): the ELBO, L_k and the estimate equal the closed form whatever the draws."""
    assert_exact_until_perturbed(*linear_gaussian_top_down(), lambda m: m.prior.path.posterior_heads[1].bias[:1].add_(0.3))


def test_the_remembered_walk_is_used_only_for_the_same_draw_and_weights():
    model = deep()
    x = binary(5)
    z = model.posterior(x).rsample((2,))
    remembered = (model.prior().log_prob(z), model.p_x_given_z(z).log_prob(x))
    fresh = (model.prior().log_prob(z.clone()), model.p_x_given_z(z.clone()).log_prob(x))
    for a, b in zip(remembered, fresh):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with torch.no_grad():  # an optimizer step writes the weights in place: the same z tensor walks again
        model.prior.path.cells[0].inner[1].weight.mul_(1.5)
    changed = (model.prior().log_prob(z), model.p_x_given_z(z).log_prob(x))
    again = (model.prior().log_prob(z.clone()), model.p_x_given_z(z.clone()).log_prob(x))
    for a, b, old in zip(changed, again, remembered):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert (a - old).abs().max() > 1e-6
    z = z.detach()
    for fused in (True, False):  # a fused Adam writes the weights without bumping their versions
        before = model.prior().log_prob(z)
        optimizer = torch.optim.Adam(model.parameters(), 0.1, fused=fused)
        (-before.sum()).backward()
        optimizer.step()
        after = model.prior().log_prob(z)  # grad mode as before: only the step tells the walks apart
        torch.testing.assert_close(after, model.prior().log_prob(z.clone()), rtol=0, atol=1e-12)
        assert (after - before).abs().max() > 1e-3


def test_the_groups_are_scored_in_storage_order_and_sum_to_the_density():
    model = deep()
    x = binary(4)
    q_z, p_z = model.posterior(x), model.prior()
    z = q_z.rsample((3,))
    for d in (q_z, p_z):
        layers = d.layer_log_probs(z)
        assert [t.shape for t in layers] == [torch.Size([3, 4])] * 3
        torch.testing.assert_close(sum(layers), d.log_prob(z), rtol=0, atol=1e-12)
        dims = d.layer_log_probs(z, per_dimension=True)
        assert [t.shape[-1] for t in dims] == [3, 2, 2]  # z₁ (3 latents) first
    # the top group z₃ is drawn first, from p(z₃|h_L) with h_L the learned top state: its prior is one Gaussian
    path = model.prior.path
    loc, raw = path.prior_heads[0](path.top).chunk(2)
    top = torch.distributions.Normal(loc, (LOG_SCALE_BOUND * torch.tanh(raw / LOG_SCALE_BOUND)).exp())
    torch.testing.assert_close(p_z.layer_log_probs(z)[2], top.log_prob(z[..., 5:]).sum(-1), rtol=0, atol=1e-12)


def test_a_vampprior_over_the_top_group_mixes_its_posterior_at_the_pseudo_inputs():
    """p(z₃) = (1/K) Σ_k Q(z₃|u_k), each Q(z₃|u_k) read off the full top-down Q at u_k (its top factor sees no
    other group), in float64 with a log-sum-exp written here; the lower groups keep the path's p(z_l|z_>l)."""
    model, standard = deep(prior={"name": "vampprior", "components": 5}), deep()
    model.load_state_dict({**standard.state_dict(), "prior.top.pseudo_inputs": model.prior.top.pseudo_inputs})
    x = binary(4)
    z = model.posterior(x).rsample((3,))  # [3, 4, 7]
    u = model.prior.top.inputs()  # [5, 12]
    q_u = model.encoder(u).expand(torch.Size([3, 4, 5]))
    top = q_u.layer_log_probs(z[:, :, None, :].expand(3, 4, 5, 7))[2]  # log Q(z₃|u_k) [3, 4, 5]
    expected = torch.logsumexp(top, -1) - math.log(5)
    layers = model.prior().layer_log_probs(z)
    torch.testing.assert_close(layers[2], expected, rtol=0, atol=1e-12)
    for mine, theirs in zip(layers[:2], standard.prior().layer_log_probs(z)[:2], strict=True):  # same weights below
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-12)
    assert model.prior().layer_log_probs(z, per_dimension=True)[2] is None  # a mixture has no per-latent terms
    # drawing: the top group from the mixture (at a temperature, each component's σ scaled), the rest down the path
    torch.manual_seed(5)
    draws = vaekit.parts.distributions.tempered(model.prior(), 0.5).sample((2000,))
    assert draws.shape == (2000, 7) and torch.isfinite(draws).all()
    locs = torch.stack([q.base_dist.loc for q in [model.prior.path.top_posterior(a) for a in
                                                   [model.encoder.features(u)[-1]]]])[0]  # [5, 2]
    torch.testing.assert_close(draws[:, 5:].mean(0), locs.mean(0), rtol=0, atol=0.1)
    # the pseudo-inputs are the prior's own parameter; the encoder is the VAE's, once
    names = [n for n, _ in model.named_parameters()]
    assert "prior.top.pseudo_inputs" in names and len(names) == len(set(names))
    assert len(names) == len(list(standard.named_parameters())) + 1


def test_dreg_is_unbiased_over_the_path_q_shares_with_the_prior():
    model = deep()
    check_dreg(model, binary(2), copies=16, repeats=40, of_q=("encoder.", "prior.path."))
    # with a VampPrior over the top group the encoder and the path are the prior's too (through Q(z_L|u_k))
    check_dreg(deep(prior={"name": "vampprior", "components": 3}), binary(2), copies=16, repeats=40,
               of_q=("encoder.", "prior.path."))


def test_drawing_at_a_temperature_scales_the_noise_of_every_group():
    model = deep()
    path = model.prior.path
    loc = path.prior_heads[0](path.top).chunk(2)[0]
    draws = {}
    for t in (1.0, 0.5):
        torch.manual_seed(7)
        draws[t] = vaekit.parts.distributions.tempered(model.prior(), t).sample((5,))
    # the first group drawn (z₃, stored last): the same noise, scaled by T around the same mean
    torch.testing.assert_close(draws[0.5][:, 5:] - loc, 0.5 * (draws[1.0][:, 5:] - loc), rtol=0, atol=1e-12)
    assert not torch.allclose(draws[0.5][:, :3], draws[1.0][:, :3])
    torch.manual_seed(7)
    assert model.sample(5, temperature=0.5).shape == (5, 12)
    flat = vaekit.VAE(data_dim=12, latent_dim=4, prior={"name": "mog", "components": 3})
    mix = vaekit.parts.distributions.tempered(flat.prior(), 0.25)
    torch.testing.assert_close(mix.component_distribution.base_dist.scale,
                               0.25 * flat.prior().component_distribution.base_dist.scale)
    iaf = vaekit.VAE(data_dim=12, latent_dim=4, prior={"name": "vampprior", "components": 3}, posterior="iaf")
    with pytest.raises(VaekitError, match="temperature needs a Gaussian"):
        iaf.sample(2, temperature=0.5)


def test_a_top_down_vae_refuses_what_it_cannot_be():
    for settings, message in (({"posterior": "iaf"}, "--posterior must be diagonal"),
                              ({"condition": "label", "condition_classes": 3}, "not conditioned on labels")):
        with pytest.raises(VaekitError, match=message):
            vaekit.VAE(data_dim=12, latent_dim=(3, 2), inference="top-down", **settings)
