import math

import torch

from vaekit import VAE, evaluate_elbo
from vaekit.evaluate import bits_per_dim, latent_statistics


def test_active_units_and_kl_per_dim():
    torch.manual_seed(0)
    vae = VAE(data_dim=10, latent_dim=4, hidden=())
    lin = vae.encoder.net[0]
    with torch.no_grad():  # means of units 1 and 3 ignore x; units 0, 2 vary with it by construction
        lin.weight[[1, 3]] = 0.0
        lin.weight[[0, 2]] *= 5
    x = torch.bernoulli(torch.full((500, 10), 0.5))
    stats = latent_statistics(vae, x, batch_size=128)
    assert stats["active_units"] == 2
    assert stats["unit_activity"][1] == stats["unit_activity"][3] == 0.0
    # the per-dimension KLs add up to the KL term of the ELBO
    assert abs(sum(stats["kl_per_dim"]) - evaluate_elbo(vae, x)["kl"]) < 1e-4


def test_bits_per_dim():
    assert abs(bits_per_dim(-784 * math.log(2), 784) - 1.0) < 1e-12


def test_evaluation_is_seeded_and_leaves_the_callers_rng_alone():
    from vaekit.evaluate import log_likelihood

    torch.manual_seed(0)
    model = VAE(16, latent_dim=2, hidden=(8,))
    x = (torch.rand(50, 16) < 0.5).float()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = evaluate_elbo(model, x, seed=4), log_likelihood(model, x, k=20, seed=4).mean
    assert torch.equal(torch.get_rng_state(), before)  # training noise after a validation pass is unchanged
    torch.manual_seed(999)
    assert (evaluate_elbo(model, x, seed=4), log_likelihood(model, x, k=20, seed=4).mean) == first
    assert log_likelihood(model, x, k=20, seed=5).mean != first[1]
