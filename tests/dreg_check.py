"""The DReG check the posterior families share: on the same draws the decoder's gradient equals plain
IWAE's; over independent repeats the encoder's gradients agree with IWAE's within Monte Carlo error."""

import torch

import vaekit


def check_dreg(model, x, copies: int, repeats: int, k: int = 8, of_q=("encoder.",)) -> dict[bool, torch.Tensor]:
    """Assert both properties for `model` on x; returns the encoder gradients per repeat {dreg: [R, P]}.
    of_q: the name prefixes of Q's parameters (a ladder's Q shares the prior's top-down networks)."""

    def gradients(dreg, seed):
        model.zero_grad()
        torch.manual_seed(seed)
        vaekit.iwae(model, x.repeat(copies, 1), k=k, dreg=dreg).surrogate.mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, dreg = gradients(False, 0), gradients(True, 0)
    for name, g in dreg.items():
        assert torch.isfinite(g).all(), name
        if name.startswith("decoder."):  # the same draws: the decoder's gradient Σ w̃ ∇θ log w is identical
            torch.testing.assert_close(g, plain[name], atol=1e-12, rtol=1e-10)
    encoder = [n for n in dreg if n.startswith(of_q)]
    assert all(dreg[n].abs().sum() > 0 for n in encoder)
    # both are unbiased for ∇φ L_k: their means over independent repeats agree within Monte Carlo error
    def flat(grads):
        return torch.cat([grads[n].flatten() for n in encoder])

    reps = {flag: torch.stack([flat(gradients(flag, s)) for s in range(1, repeats + 1)]) for flag in (False, True)}
    diff = reps[True].mean(0) - reps[False].mean(0)
    se = ((reps[True].var(0) + reps[False].var(0)) / repeats).sqrt()
    assert (diff.abs() <= 5 * se + 1e-9).all(), (diff / se).abs().max()
    return reps
