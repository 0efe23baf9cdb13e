"""The GPU path, where a CUDA device exists (skipped elsewhere; CI has none). The CPU tests cover the
same `train_step`; these check what only a GPU has: the CUDA-graphed replay, the device RNG in
checkpoints and evaluation, and reading verdicts back late.

    python -m pytest tests/test_gpu.py      # on a machine with a GPU
"""

import pytest
import torch

from vaekit.data import load_dataset
from vaekit.evaluation.estimates import evaluate_elbo, log_likelihood
from vaekit.model import VAE
from vaekit.runs.config import Config, TrainConfig
from vaekit.runs.experiment import train_run
from vaekit.training.graphs import GraphedStep
from vaekit.training.loop import LoopState, make_adam, train_epoch
from vaekit.training.loss import VAEObjective

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DATA = load_dataset("digits")


def trained(graphs: bool, steps: int, **train):
    torch.manual_seed(0)
    model = VAE(64, latent_dim=4, hidden=(32,)).cuda()
    opt = make_adam(model.parameters(), 1e-2, capturable=graphs)
    loss = VAEObjective(model, TrainConfig(**train), DATA)
    step_fn = GraphedStep(model, opt, loss, 48) if graphs else None
    x = DATA.split("train").cuda()
    torch.cuda.manual_seed(1)
    state = LoopState()
    metrics = train_epoch(model, opt, loss, x, 48, 0, state, max_steps=steps, step_fn=step_fn, sync_every=100)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), metrics


def test_graphed_step_replays_the_eager_trajectory_exactly():
    steps = DATA.split("train").shape[0] // 48 + 1  # the epoch's short last batch runs eagerly
    eager, m_eager = trained(False, steps)
    graphed, m_graphed = trained(True, steps)
    assert torch.equal(eager, graphed) and m_eager == m_graphed


def test_kl_warmup_ramps_inside_the_graph():
    steps = DATA.split("train").shape[0] // 48
    eager, _ = trained(False, steps, objective={"name": "elbo", "kl_warmup_epochs": 0.5})
    graphed, _ = trained(True, steps, objective={"name": "elbo", "kl_warmup_epochs": 0.5})  # β from a device tensor, not frozen at capture
    frozen, _ = trained(True, steps, objective={"name": "elbo", "kl_warmup_epochs": 0.0})
    # float32 vs float64 arithmetic for β may differ in the last bit; a frozen β would differ by far more
    assert torch.allclose(eager, graphed, atol=1e-5) and not torch.allclose(eager, frozen, atol=1e-3)


def test_late_read_back_skips_nonfinite_steps_on_the_device():
    torch.manual_seed(0)
    model = VAE(64, latent_dim=4, hidden=(32,)).cuda()
    opt = make_adam(model.parameters(), 1e-2)
    loss = VAEObjective(model, TrainConfig(), DATA)
    calls = {"n": 0}

    def poison(g):
        calls["n"] += 1
        return g * float("nan") if calls["n"] == 4 else g

    model.encoder.net[0].weight.register_hook(poison)
    state = LoopState()
    train_epoch(model, opt, loss, DATA.split("train").cuda(), 64, 0, state, max_steps=10, skip_nonfinite=1,
                sync_every=100)
    assert (state.skipped, state.step) == (1, 9)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resume_on_the_gpu_equals_an_uninterrupted_run(tmp_path):
    cfg = Config().replace(train={"epochs": 4, "seed": 3, "cuda_graphs": True})
    straight = train_run(cfg, out=tmp_path / "a", device="cuda")
    train_run(cfg.replace(train={"epochs": 2}), out=tmp_path / "b", device="cuda")
    resumed = train_run(cfg, out=tmp_path / "b", resume=True, device="cuda")
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


def test_evaluation_leaves_the_training_noise_alone():
    model = VAE(64, latent_dim=4, hidden=(32,)).cuda()
    x = DATA.eval_split("val").cuda()
    torch.cuda.manual_seed(7)
    before = torch.cuda.get_rng_state()
    evaluate_elbo(model, x)
    log_likelihood(model, x, k=10)
    assert torch.equal(torch.cuda.get_rng_state(), before)


def test_graph_is_captured_on_a_full_batch_only():
    torch.manual_seed(0)
    model = VAE(64, latent_dim=4, hidden=(32,)).cuda()
    opt = make_adam(model.parameters(), 1e-2, capturable=True)
    loss = VAEObjective(model, TrainConfig(), DATA)
    step_fn = GraphedStep(model, opt, loss, 48)
    x = DATA.split("train")[: 48 * 3 + 20].cuda()  # the batch after the 3 warm-up steps is the short one
    for epoch in range(2):
        train_epoch(model, opt, loss, x, 48, 0, LoopState(epoch=epoch), step_fn=step_fn)
    assert step_fn.graph is not None and step_fn.batch.shape[0] == 48


def test_a_loaded_tensor_learning_rate_goes_back_to_the_gpu():
    from vaekit.training.loop import lr_to_device, set_lr

    p = torch.nn.Parameter(torch.ones(3, device="cuda"))
    saved = make_adam([p], 1e-3, capturable=True).state_dict()
    opt = make_adam([p], 1e-3, capturable=True)
    opt.load_state_dict(saved)
    lr_to_device(opt)
    assert opt.param_groups[0]["lr"].device.type == "cuda"
    set_lr(opt, 0.5)
    assert opt.param_groups[0]["lr"].item() == 0.5


def test_resume_at_the_end_of_an_epoch_on_the_gpu(tmp_path):
    from vaekit.runs import checkpoint as ckpt

    cfg = Config().replace(train={"epochs": 1, "seed": 3})
    train_run(cfg, out=tmp_path / "run", device="cuda")
    state = ckpt.load_state(tmp_path / "run")  # as if killed after the last step, before the epoch closed
    steps = -(-DATA.split("train").shape[0] // cfg.train.batch_size)
    state.update(epoch=0, batch=steps, sums={"elbo": torch.tensor(-1e4), "reconstruction": torch.tensor(-9e3),
                                             "kl": torch.tensor(-1e3)}, examples=100)
    ckpt.save_state(tmp_path / "run", state)
    result = train_run(cfg.replace(train={"epochs": 2}), out=tmp_path / "run", resume=True, device="cuda")
    assert result.history[0]["train/elbo"] == pytest.approx(-100.0)  # the saved sums over the saved count
