"""The guards a deep model trains with, for every family: clipping and skipping by the gradient norm (VDVAE),
an EMA of the weights for evaluation and sampling, free bits (Kingma et al. 2016) and KL balancing (NVAE).
Each against what it is defined to be: torch's clip_grad_norm_ then Adam, an untouched step, the EMA
recursion in float64, the gradient of the loss the paper writes."""

import pytest
import torch
from safetensors.torch import load_file
from test_loop import DATA, fresh, same, snapshot

import vaekit
from vaekit.cli import main
from vaekit.errors import VaekitError
from vaekit.objectives.estimators import group_kl
from vaekit.objectives.standard import ELBOObjective
from vaekit.rng import epoch_permutation
from vaekit.runs.checkpoint import load_state
from vaekit.training.ema import EMA
from vaekit.training.loop import LARGE_GRADIENT, OK, Guards, LoopState, make_adam, train_epoch, train_step


def test_clipping_is_clip_grad_norm_then_the_same_adam_step():
    batch = DATA.split("train")[:32]
    model, opt, loss = fresh()
    twin, twin_opt, twin_loss = fresh()
    torch.manual_seed(1)
    verdict, metrics = train_step(model, opt, loss, batch, 0.0, Guards(clip=0.5))
    torch.manual_seed(1)
    twin_opt.zero_grad()
    twin_loss(batch, 0.0)[0].backward()
    norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    twin_opt.step()
    assert int(verdict) == OK and norm > 0.5  # the clip acted
    torch.testing.assert_close(metrics["grad_norm"], norm, rtol=1e-6, atol=0)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_an_update_above_the_skip_threshold_is_not_taken_and_is_counted_not_fatal():
    batch = DATA.split("train")[:32]
    model, opt, loss = fresh()
    assert int(train_step(model, opt, loss, batch, 0.0)[0]) == OK  # Adam has state now
    before = snapshot(model, opt)
    verdict, metrics = train_step(model, opt, loss, batch, 0.0, Guards(skip=1e-3))
    assert int(verdict) == LARGE_GRADIENT and metrics["grad_norm"] > 1e-3
    assert same(before, snapshot(model, opt))
    # an epoch: the skipped steps take nothing, count in `oversized`, and leave no examples in the means
    model, opt, loss = fresh()
    state = LoopState()
    norms = []
    train_epoch(model, opt, loss, DATA.split("train")[:256], 32, 0, state, guards=Guards(skip=1e9),
                after_step=lambda v: norms.append(int(v)))
    assert state.oversized == 0 and norms == [OK] * 8
    threshold = 5.35  # between the norms these eight steps take (4.9 to 5.8)
    model, opt, loss = fresh()
    state = LoopState()
    means = train_epoch(model, opt, loss, DATA.split("train")[:256], 32, 0, state, guards=Guards(skip=threshold))
    model2, opt2, loss2 = fresh()  # the same epoch stepped by hand: which steps exceed the threshold
    skipped = 0
    for i in range(8):
        index = epoch_permutation(256, 0, 0)[i * 32:(i + 1) * 32]
        verdict, _ = train_step(model2, opt2, loss2, DATA.split("train")[:256][index], i / 8, Guards(skip=threshold))
        skipped += int(verdict) == LARGE_GRADIENT
    assert 0 < skipped < 8 and state.oversized == skipped and state.step == 8 - skipped
    assert state.skipped == 0 and means  # not errors
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    # a threshold below every norm skips every update: the model can never change, so the epoch says so
    model, opt, loss = fresh()
    before = snapshot(model, opt)
    with pytest.raises(VaekitError, match="every update of epoch 1 was skipped"):
        train_epoch(model, opt, loss, DATA.split("train")[:256], 32, 0, LoopState(), guards=Guards(skip=1.0))
    assert same(before, snapshot(model, opt))


def test_the_ema_follows_its_recursion_over_good_steps_only():
    model, opt, loss = fresh()
    ema = EMA(model, 0.9)
    want = [p.detach().double().clone() for p in model.parameters()]
    batch = DATA.split("train")[:32]
    for guards in (Guards(), Guards(), Guards(skip=1e-3), Guards()):
        verdict, _ = train_step(model, opt, loss, batch, 0.0, guards)
        ema.update(verdict)
        if int(verdict) == OK:
            want = [w + 0.1 * (p.detach().double() - w) for w, p in zip(want, model.parameters())]
    for avg, w in zip(ema.average, want):
        torch.testing.assert_close(avg.double(), w, rtol=1e-6, atol=1e-7)
    own = [p.detach().clone() for p in model.parameters()]
    with ema.swapped() as averaged:
        assert all(torch.equal(p, a) for p, a in zip(averaged.parameters(), ema.average))
    assert all(torch.equal(p, o) for p, o in zip(model.parameters(), own))


def two_layer_batch():
    torch.manual_seed(0)
    model = vaekit.VAE(data_dim=64, latent_dim=(4, 2), hidden=(32,)).double()
    x = DATA.prepare(DATA.split("train")[:48]).double()
    return model, x


def loss_and_grads(model, objective, x, progress=1.0, seed=3):
    model.zero_grad()
    torch.manual_seed(seed)
    loss, metrics = objective.loss(model, x, lambda q, s, e: q.rsample((s,)), progress)
    loss.backward()
    return loss, metrics, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_free_bits_stop_the_kl_gradient_of_a_group_below_lambda_only():
    model, x = two_layer_batch()
    torch.manual_seed(3)
    q_z = model.posterior(x)
    z = q_z.rsample((1,))
    kls = group_kl(q_z, model.prior(), z).mean((1, 2)).detach()
    lam = float(kls.min() + kls.max()) / 2  # one group above λ, one below
    loss, metrics, grads = loss_and_grads(model, ELBOObjective(free_bits=lam), x)
    # the same draws by hand: −E log p(x|z) + KL of the group above λ + the constant λ
    model.zero_grad()
    torch.manual_seed(3)
    q_z = model.posterior(x)
    z = q_z.rsample((1,))
    per = group_kl(q_z, model.prior(), z).mean((1, 2))
    above = per[kls > lam].sum()
    want = -model.p_x_given_z(z).log_prob(x).mean() + above + lam
    want.backward()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-10, atol=1e-12)
    # what is reported is the true ELBO at those draws
    torch.testing.assert_close(metrics["elbo"], model.p_x_given_z(z).log_prob(x).mean() - per.sum(), rtol=1e-12, atol=1e-10)


def test_kl_balancing_weighs_groups_by_their_kl_per_latent_during_the_warm_up_only():
    model, x = two_layer_batch()
    objective = ELBOObjective(kl_balance=True, kl_warmup_epochs=4.0)
    for progress in (1.0, 6.0):  # β = 0.25 (balanced), then β = 1 (plain ELBO)
        loss, _, _ = loss_and_grads(model, objective, x, progress)
        torch.manual_seed(3)
        q_z = model.posterior(x)
        z = q_z.rsample((1,))
        per = group_kl(q_z, model.prior(), z).mean((1, 2))
        gamma = (per.abs() + 0.01) / torch.tensor([4.0, 2.0], dtype=per.dtype)
        gamma = gamma / gamma.mean() if progress < 4 else torch.ones_like(gamma)
        beta = min(1.0, progress / 4)
        want = -model.p_x_given_z(z).log_prob(x).mean() + beta * (gamma * per).sum()
        torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
        if progress < 4:
            assert (gamma - 1).abs().max() > 0.05  # the groups' weights differ while warming up


def test_a_run_with_an_ema_saves_the_average_and_resumes_bit_identical(tmp_path):
    flags = ["--quiet", "train", "--dataset", "digits", "--latent-dim", "3", "--hidden", "32", "--seed", "1",
             "--batch-size", "64", "--ema", "0.9", "--grad-clip", "20", "--grad-skip", "1e4"]
    assert main([*flags, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main([*flags, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main([*flags, "--epochs", "2", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    saved = {name: load_file(tmp_path / name / "model.safetensors") for name in ("straight", "resumed")}
    assert all(torch.equal(saved["straight"][k], saved["resumed"][k]) for k in saved["straight"])
    state = load_state(tmp_path / "straight")
    for k, v in state["ema"].items():  # the file holds the average; the trainer state both
        assert torch.equal(saved["straight"][k], v)
    assert any(not torch.equal(state["model"][k], v) for k, v in state["ema"].items())
    model = vaekit.load(tmp_path / "straight")
    assert all(torch.equal(p, state["ema"][n]) for n, p in model.named_parameters())


def test_weight_decay_is_adams_step_plus_the_decoupled_shrink_and_a_state_of_another_decay_is_refused(tmp_path, capsys):
    """AdamW (Loshchilov & Hutter 2019): the same Adam step on the same gradient, and every weight also shrunk by
    lr·λ·θ₀ (θ₀ the weights before the step), in float32 rounding; a resume from a state of another decay is refused."""
    batch = DATA.split("train")[:32]
    model, opt, loss = fresh()
    decayed, _, decayed_loss = fresh()
    decayed_opt = make_adam(decayed.parameters(), 1e-2, weight_decay=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    for m, o, f in ((model, opt, loss), (decayed, decayed_opt, decayed_loss)):
        torch.manual_seed(1)
        assert int(train_step(m, o, f, batch, 0.0)[0]) == OK
    for theta0, plain, shrunk in zip(before, model.parameters(), decayed.parameters()):
        torch.testing.assert_close(shrunk - plain, -1e-2 * 0.5 * theta0, rtol=0, atol=2e-7)
    assert max((a - b).abs().max().item() for a, b in zip(model.parameters(), decayed.parameters())) > 1e-3
    run = tmp_path / "r"
    assert main(["--quiet", "train", "--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "1",
                 "--weight-decay", "0.01", "--out", str(run)]) == 0
    state = load_state(run)
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0.01
    state["optimizer"]["param_groups"][0]["weight_decay"] = 0.5
    torch.save(state, run / "train_state.pt")
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "2", "--resume"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"vaekit: error: {run / 'train_state.pt'}: optimizer.param_groups[0].weight_decay is 0.5, but this run's "
        "optimizer has 0.01; the file is damaged or belongs to another run; restore it, or delete it and "
        "model.safetensors and pass --resume to start the run again from step 0")
