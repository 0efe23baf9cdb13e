"""The training step: device-side skipping of non-finite steps, deferred read-back, bf16, compile.

The GPU runs the same `train_step`; benchmarks/gpu.py checks the CUDA-graphed replay of it against
this eager step on a device (BENCHMARKS.md records the result).
"""

import itertools
import math
import re

import pytest
import torch

from vaekit.data import load_dataset
from vaekit.model import VAE
from vaekit.objectives.base import warmup_ramp
from vaekit.objectives.estimators import elbo
from vaekit.runs.config import Config, TrainConfig
from vaekit.training.loop import (
    BAD_GRADIENT,
    BAD_LOSS,
    OK,
    LoopState,
    NonFiniteLossError,
    make_adam,
    set_lr,
    train_epoch,
    train_step,
)
from vaekit.training.loss import VAEObjective

DATA = load_dataset("digits")


def fresh(seed=0, **train):
    torch.manual_seed(seed)
    model = VAE(64, latent_dim=4, hidden=(32,))
    return model, make_adam(model.parameters(), 1e-2), VAEObjective(model, TrainConfig(**train), DATA)


def snapshot(model, opt):
    params = [p.detach().clone() for p in model.parameters()]
    state = {k: [v.clone() for v in s.values()] for k, s in enumerate(opt.state.values())}
    return params, state


def same(a, b):
    (pa, sa), (pb, sb) = a, b
    return all(torch.equal(x, y) for x, y in zip(pa, pb)) and all(
        torch.equal(x, y) for k in sa for x, y in zip(sa[k], sb[k]))


def test_nonfinite_step_leaves_parameters_and_adam_state_exactly():
    model, opt, loss = fresh()
    batch = DATA.split("train")[:32]
    assert int(train_step(model, opt, loss, batch, 0.0)[0]) == OK  # Adam has state now
    before = snapshot(model, opt)
    hook = model.decoder.net[-1].bias.register_hook(lambda g: g * float("inf"))
    verdict, _ = train_step(model, opt, loss, batch, 0.0)
    hook.remove()
    assert int(verdict) == BAD_GRADIENT and same(before, snapshot(model, opt))  # step counters included

    def nan_loss(b, p):
        value, metrics = loss(b, p)
        return value * float("nan"), metrics

    verdict, _ = train_step(model, opt, nan_loss, batch, 0.0)
    assert int(verdict) == BAD_LOSS and same(before, snapshot(model, opt))
    verdict, _ = train_step(model, opt, loss, batch, 0.0)  # and training goes on from there
    assert int(verdict) == OK and not same(before, snapshot(model, opt))


def test_reading_back_every_n_steps_changes_nothing():
    x = DATA.split("train")
    results = []
    for sync_every in (1, 7, 1000):
        model, opt, loss = fresh()
        state = LoopState()
        metrics = train_epoch(model, opt, loss, x, 64, 3, state, sync_every=sync_every)
        results.append((torch.cat([p.detach().flatten() for p in model.parameters()]), metrics, state.step))
    for params, metrics, steps in results[1:]:
        assert torch.equal(params, results[0][0]) and metrics == results[0][1] and steps == results[0][2]


def test_deferred_nonfinite_batches_are_counted_and_named_when_read_back():
    x = DATA.split("train")[:640]  # 10 batches of 64
    calls = {"n": 0}

    def poison(g):
        calls["n"] += 1
        return g * float("nan") if calls["n"] in (2, 5) else g

    model, opt, loss = fresh()
    seen = []  # each batch's metrics as the loss computed them (finite: only the gradient is poisoned)

    def recorded(batch, progress):
        value, batch_metrics = loss(batch, progress)
        seen.append({k: float(v.detach()) for k, v in batch_metrics.items()})
        return value, batch_metrics

    hook = model.decoder.net[-1].bias.register_hook(poison)
    state = LoopState(epoch=3, step=30)
    metrics = train_epoch(model, opt, recorded, x, 64, 0, state, skip_nonfinite=2, sync_every=100)
    assert (state.skipped, state.step, state.epoch) == (2, 38, 4)
    # the means are over the 8 good batches only (all of 64 examples): batches 2 and 5 add nothing
    good = [m for n, m in enumerate(seen, 1) if n not in (2, 5)]
    assert len(seen) == 10 and set(metrics) == set(seen[0])
    for k, v in metrics.items():
        assert v == pytest.approx(math.fsum(m[k] for m in good) / 8, rel=1e-6), k
    assert all(torch.isfinite(p).all() for p in model.parameters())

    calls["n"] = 0
    model2, opt2, loss2 = fresh()
    hook2 = model2.decoder.net[-1].bias.register_hook(poison)
    with pytest.raises(NonFiniteLossError, match=r"a gradient is NaN or Inf at epoch 4, step 5 \(global step 34\)"):
        train_epoch(model2, opt2, loss2, x, 64, 0, LoopState(epoch=3, step=30, skipped=1), skip_nonfinite=2,
                    sync_every=100)
    hook.remove(), hook2.remove()
    assert set(metrics) == {"elbo", "reconstruction", "kl"} and all(math.isfinite(v) for v in metrics.values())


def test_bf16_autocast_keeps_log_densities_in_float32_and_close_to_fp32():
    mnist_like = torch.rand(256, 64).round()
    torch.manual_seed(0)
    model = VAE(64, latent_dim=8, hidden=(128,))
    eps = torch.randn(1, 256, 8)

    def with_eps():  # the same ε in both precisions: z = μ + σ ⊙ ε
        q_z = model.posterior(mnist_like)
        return elbo(model, mnist_like, q_z=q_z, z=q_z.base_dist.loc + q_z.base_dist.scale * eps)

    with torch.no_grad():
        full = with_eps()
        with torch.autocast("cpu", torch.bfloat16):
            assert model.encoder.net(mnist_like).dtype == torch.bfloat16  # the matmuls do run in bf16
            half = with_eps()
    assert half.elbo.dtype == torch.float32 and model.decode(eps[0]).dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: per-example ELBOs (≈ 44 nats here) agree to a fraction of a nat
    gap = (half.elbo - full.elbo).abs()
    assert gap.max() < 0.5 and gap.mean() < 0.1 and gap.max() > 0  # and it is bf16 that ran


def test_warmup_ramp_as_tensor_matches_float():
    for p in (0.0, 0.3, 1.7, 5.0):
        assert warmup_ramp(torch.tensor(p), 2.0).item() == pytest.approx(warmup_ramp(p, 2.0))
    assert warmup_ramp(0.0, 0.0) == 1.0


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # torch's own, raised while compiling:
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")  # as errors, eager ran
def test_compiled_objective_equals_eager():
    pytest.importorskip("torch._inductor")
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    batch = DATA.split("train")[:64]
    values = []
    for compile_ in (False, True):
        _, _, loss = fresh(compile=compile_, objective={"name": "elbo", "kl_warmup_epochs": 2.0})
        torch.manual_seed(1)
        values.append([loss(batch, p)[0].item() for p in (0.0, 0.5, 1.0)])  # β changes: no recompile per value
    assert values[1] == pytest.approx(values[0], rel=1e-5)
    assert counters["stats"]["unique_graphs"] >= 1  # it compiled (a warning raised as an error made it run eagerly)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # torch's own, raised while compiling:
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")  # as errors, eager ran
def test_a_compiled_top_down_model_trains_as_eager_without_a_recompile_per_step():
    """The top-down path's memo of its last walk guarded on the weights' version counters: compiled, every step
    recompiled until torch's limit, then ran eagerly (issue 24). Now the memo is off while compiling."""
    pytest.importorskip("torch._inductor")
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    elbos = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = VAE(64, latent_dim=[2, 2], hidden=(16,), inference="top-down")
        opt = make_adam(model.parameters(), 1e-2)
        loss = VAEObjective(model, TrainConfig(compile=compile_), DATA)
        torch.manual_seed(1)
        elbos.append([train_step(model, opt, loss, DATA.split("train")[32 * i: 32 * i + 32], 0.0)[1]["elbo"].item()
                      for i in range(8)])
    assert elbos[1] == pytest.approx(elbos[0], rel=1e-5, abs=0)
    assert 1 <= counters["stats"]["unique_graphs"] <= 3  # compiled, and not again at every step (it was: 20)
    # dynamo's start-up turns torch.distributions' checks off process-wide: vaekit keeps them on outside its objective
    assert torch.distributions.Distribution._validate_args


def test_precision_and_compile_are_config_fields():
    cfg = Config().replace(train={"precision": "bf16", "compile": True, "cuda_graphs": True})
    assert (cfg.train.precision, cfg.train.compile, cfg.train.cuda_graphs) == ("bf16", True, True)
    with pytest.raises(Exception, match=r"\[train\] precision = 'fp16' is not one of fp32, bf16"):
        Config().replace(train={"precision": "fp16"})


def test_set_lr_reaches_a_captured_step_through_the_tensor_learning_rate():
    p = torch.nn.Parameter(torch.ones(3))
    opt = make_adam([p], 1e-3, capturable=True)  # what a CUDA-graphed step uses
    lr = opt.param_groups[0]["lr"]
    set_lr(opt, 0.25)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.25  # written in place, not replaced
    p.grad = torch.ones(3)
    opt.step()  # Adam's first step moves each coordinate by lr (m̂/√v̂ = 1)
    assert torch.allclose(p.detach(), torch.full((3,), 0.75))
    plain = make_adam([p], 1e-3)
    set_lr(plain, 0.1)
    assert plain.param_groups[0]["lr"] == 0.1


def test_metric_names_must_stay_the_same_and_may_be_empty():
    from vaekit.errors import VaekitError

    x = DATA.split("train")[:256]
    model, opt, loss = fresh()
    assert train_epoch(model, opt, lambda b, p: (loss(b, p)[0], {}), x, 64, 0, LoopState()) == {}
    calls = {"n": 0}

    def changing(b, p):
        calls["n"] += 1
        value, metrics = loss(b, p)
        return value, metrics if calls["n"] < 3 else {"elbo": metrics["elbo"]}

    with pytest.raises(VaekitError, match=r"epoch 1, step 3, but \['elbo', 'kl', 'reconstruction'\] before"):
        train_epoch(model, opt, changing, x, 64, 0, LoopState())


def test_settled_sums_are_a_snapshot():
    x = DATA.split("train")[:256]
    model, opt, loss = fresh()
    seen = []
    train_epoch(model, opt, loss, x, 64, 0, LoopState(), on_step=lambda st: seen.append(dict(st.sums)))
    firsts = [d["elbo"].item() for d in seen]
    assert len(set(firsts)) == len(firsts)  # each step's snapshot differs, and none moved afterwards
    assert all(a > b for a, b in itertools.pairwise(firsts))  # sums of negative ELBOs only fall


def test_a_bad_batch_is_named_at_the_next_read_back_not_before_or_after():
    """sync_every=3: the verdicts are read after batches 3, 6, 9 and the last; a NaN gradient at batch 2
    is named there, after batch 3 was taken and before batch 4 is."""
    x = DATA.split("train")[:640]  # 10 batches of 64
    model, opt, loss = fresh()
    calls = {"n": 0}

    def counted(batch, progress):
        calls["n"] += 1
        return loss(batch, progress)

    hook = model.decoder.net[-1].bias.register_hook(lambda g: g * float("nan") if calls["n"] == 2 else g)
    with pytest.raises(NonFiniteLossError, match=r"a gradient is NaN or Inf at epoch 1, step 2 \(global step 2\)"):
        train_epoch(model, opt, counted, x, 64, 0, LoopState(), sync_every=3)
    hook.remove()
    assert calls["n"] == 3


def test_a_short_last_batch_is_stepped_weighted_and_shown(monkeypatch, capsys):
    """193 rows in batches of 64: 4 steps, the last of one example; the loss sees the progress epoch + i/4;
    the means weight each batch by its size; the bar counts examples, batch by batch."""
    from vaekit.training import progress as progress_module

    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)  # a plain line at every read-back
    x = DATA.split("train")[:193]
    model, opt, loss = fresh()
    seen = []

    def recorded(batch, progress):
        value, metrics = loss(batch, progress)
        seen.append((batch.shape[0], float(progress), {k: float(v.detach()) for k, v in metrics.items()}))
        return value, metrics

    state = LoopState(epoch=2)
    means = train_epoch(model, opt, recorded, x, 64, 0, state, show_progress=True)
    assert [(n, p) for n, p, _ in seen] == [(64, 2.0), (64, 2.25), (64, 2.5), (1, 2.75)]
    assert (state.epoch, state.batch, state.step, state.examples, state.sums) == (3, 0, 4, 0, {})  # the next epoch, from its start
    for k, v in means.items():
        assert v == pytest.approx(math.fsum(n * m[k] for n, _, m in seen) / 193, rel=1e-6), k
    err = capsys.readouterr().err
    assert re.findall(r"epoch 3: (\S+)/193 ex", err) == ["0", "64", "128", "192"]  # the start, each read-back before 193
    assert f"  elbo {seen[0][2]['elbo']:.3f}" in err  # beside the count, the epoch's mean so far: batch 1's


def test_steps_not_yet_read_back_are_no_part_of_a_states_value_and_no_bar_by_default(monkeypatch, capsys):
    from vaekit.training import progress as progress_module

    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)
    x = DATA.split("train")[:128]
    model, opt, loss = fresh()
    seen = []
    train_epoch(model, opt, loss, x, 64, 0, LoopState(), on_step=lambda st: seen.append(st.pending))
    assert seen[0] is not None and LoopState(step=2, pending=seen[0]) == LoopState(step=2)
    assert "pending" not in repr(LoopState(pending=seen[0]))
    assert capsys.readouterr().err == ""  # show_progress=False by default


def test_the_last_step_is_read_back_before_on_step_sees_it_and_max_steps_cuts_the_epoch():
    x = DATA.split("train")[:256]
    model, opt, loss = fresh()
    seen = []
    state = LoopState()
    means = train_epoch(model, opt, loss, x, 64, 0, state, max_steps=2, sync_every=100,
                        on_step=lambda st: seen.append((st.step, st.examples, set(st.sums))))
    assert seen == [(1, 64, set()), (2, 128, set(means))] and (state.epoch, state.step) == (1, 2)


def test_rows_and_their_labels_are_gathered_together():
    x, labels = DATA.split("train")[:128], torch.arange(128)
    model, opt, loss = fresh()

    def checked(batch, progress):
        xb, yb = batch
        assert torch.equal(xb, x[yb])  # each row with its own label
        value, metrics = loss(xb, progress)
        return value, {"zero": torch.zeros(()), **metrics}  # a metric whose sum is 0 is a mean of 0, not nothing

    means = train_epoch(model, opt, checked, (x, labels), 64, 0, LoopState())
    assert means["zero"] == 0.0 and set(means) == {"zero", "elbo", "reconstruction", "kl"}


def test_a_value_error_of_the_loss_is_a_nonfinite_error_naming_the_step():
    """torch.distributions refusing NaN parameters: one line, its first, with where it happened."""
    model, opt, _ = fresh()

    def refusing(batch, progress):
        raise ValueError("Expected parameter loc to satisfy the constraint Real()\ntensor([nan])")

    with pytest.raises(NonFiniteLossError, match=r"^non-finite values at epoch 3, step 1: Expected parameter loc to "
                                                 r"satisfy the constraint Real\(\)$"):
        train_epoch(model, opt, refusing, DATA.split("train")[:128], 64, 0, LoopState(epoch=2))


def test_nonfinite_weights_are_named_as_an_overflowed_update_not_a_bad_batch():
    """Weights gone Inf after step 1 make step 2's loss non-finite: the error names the weights, even
    with batches left to skip."""
    model, opt, loss = fresh()

    def spoil(st):
        if st.step == 1:
            with torch.no_grad():
                model.decoder.net[-1].bias.fill_(float("inf"))

    with pytest.raises(NonFiniteLossError, match=r"the weights are NaN or Inf at epoch 1, step 2 \(global step 2\)"):
        train_epoch(model, opt, loss, DATA.split("train")[:256], 64, 0, LoopState(), on_step=spoil, skip_nonfinite=5)
