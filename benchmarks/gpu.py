"""One prepared GPU check (a few minutes): is the GPU step right, and how fast is it?

    python benchmarks/gpu.py                 # prints "no CUDA device" and exits 0 where there is none
    python benchmarks/gpu.py --device cpu --quick   # a smoke run of the same code on CPU

Checks, on the device: (1) the CUDA-graphed step follows the eager step's trajectory; (2) a NaN
gradient is skipped on the device without a host synchronization and counted when read back;
(3) `train_run` with and without cuda_graphs / bf16 lands on the same validation ELBO.
Speed: examples/s of one full-MNIST epoch for 784-400-20 at batch 128 and 1024 in each mode
(eager, CUDA graphs, bf16, torch.compile), data resident on the device; the k=5000 test NLL;
and the cost in nats of bf16 (test ELBO and NLL after the same training in fp32 and bf16).
The step is the same `train_step` + `VAEObjective` the CPU tests cover; only the device differs.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch
from common import default_data_dir

from vaekit.data import Dataset
from vaekit.data.mnist import load_mnist_family
from vaekit.evaluation.estimates import evaluate_elbo, log_likelihood
from vaekit.model import VAE
from vaekit.runs.config import Config, TrainConfig
from vaekit.runs.experiment import build_trainer, train_run
from vaekit.training.loop import LoopState, settle, train_epoch

MODES = {  # name → TrainConfig settings
    "eager": {},
    "graphs": {"cuda_graphs": True},
    "graphs+bf16": {"cuda_graphs": True, "precision": "bf16"},
    "compile": {"compile": True},
    "compile+graphs": {"compile": True, "cuda_graphs": True},
    "compile+graphs+bf16": {"compile": True, "cuda_graphs": True, "precision": "bf16"},
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def setup(ds: Dataset, batch: int, mode: dict, device: str, hidden=(400,), seed: int = 0):
    torch.manual_seed(seed)
    model = VAE(784, latent_dim=20, hidden=hidden).to(device)
    objective, opt, step_fn = build_trainer(model, TrainConfig(batch_size=batch, **mode), ds, device)
    return model, objective, opt, step_fn


def run_epoch(objective, opt, step_fn, x, batch, state, steps) -> float:
    t0 = time.perf_counter()
    train_epoch(objective, opt, objective, x, batch, 0, state, max_steps=steps, step_fn=step_fn)
    sync(str(x.device))
    return time.perf_counter() - t0


def check_graph_trajectory(ds, x, device, steps=60) -> None:
    finals = []
    for mode in ("eager", "graphs"):
        model, objective, opt, step_fn = setup(ds, 128, MODES[mode], device)
        torch.manual_seed(1)
        metrics = train_epoch(objective, opt, objective, x, 128, 0, LoopState(), max_steps=steps, step_fn=step_fn)
        finals.append((torch.cat([p.detach().flatten() for p in model.parameters()]), metrics["elbo"]))
    diff = (finals[0][0] - finals[1][0]).abs().max().item()
    print(f"check 1: {steps} steps eager vs CUDA-graphed: max |Δθ| = {diff:.3g}, "
          f"train ELBO {finals[0][1]:.4f} vs {finals[1][1]:.4f}  {'OK' if diff < 1e-4 else 'DIFFERENT'}")


def check_nan_skip(ds, x, device) -> None:
    model, objective, opt, _ = setup(ds, 128, {}, device)
    bad = {"n": 0}

    def poison(g):
        bad["n"] += 1
        return torch.full_like(g, float("nan")) if bad["n"] in (3, 7) else g

    hook = model.encoder.net[0].weight.register_hook(poison)
    state = LoopState()
    train_epoch(objective, opt, objective, x, 128, 0, state, max_steps=20, skip_nonfinite=5, sync_every=100)
    settle(state)
    hook.remove()
    finite = all(torch.isfinite(p).all() for p in model.parameters())
    print(f"check 2: NaN gradients at steps 3 and 7, read back once: skipped {state.skipped}, steps {state.step} "
          f"of 20, parameters finite: {finite}  {'OK' if state.skipped == 2 and state.step == 18 and finite else 'WRONG'}")


def check_train_run(device, epochs=3) -> None:
    line = []
    for mode in ("eager", "graphs", "graphs+bf16"):
        cfg = Config().replace(train={"epochs": epochs, "seed": 0, **MODES[mode]})
        r = train_run(cfg, device=device)
        line.append(f"{mode} {r.history[-1]['val/elbo']:.3f}")
    print(f"check 3: train_run on digits, {epochs} epochs, val ELBO: " + ", ".join(line))


def throughput(ds, x, device, batches, modes, deadline) -> None:
    n_full = x.shape[0]
    for batch in batches:
        steps = n_full // batch
        for name in modes:
            if time.perf_counter() > deadline:
                print(f"batch {batch:5d} {name:22s} skipped: time budget spent")
                continue
            try:
                t0 = time.perf_counter()
                _, objective, opt, step_fn = setup(ds, batch, MODES[name], device)
                state = LoopState()
                run_epoch(objective, opt, step_fn, x, batch, state, min(steps, 30))  # warm-up (and compile, capture)
                warm = time.perf_counter() - t0
                secs = min(run_epoch(objective, opt, step_fn, x, batch, LoopState(epoch=e), steps) for e in (1, 2))
                print(f"batch {batch:5d} {name:22s} {steps * batch / secs:12,.0f} examples/s  "
                      f"epoch of {steps * batch} in {secs * 1e3:7.1f} ms  (warm-up {warm:.1f} s)", flush=True)
            except Exception as e:  # noqa: BLE001 - one mode failing must not cost the others
                print(f"batch {batch:5d} {name:22s} FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                traceback.print_exc(limit=3)


def bf16_cost(ds, x, test, device, epochs) -> None:
    for name in ("graphs", "graphs+bf16"):
        model, objective, opt, step_fn = setup(ds, 128, MODES[name], device)
        t0 = time.perf_counter()
        for e in range(epochs):
            train_epoch(objective, opt, objective, x, 128, 0, LoopState(epoch=e), step_fn=step_fn)
        sync(device)
        secs = time.perf_counter() - t0
        model.eval()
        el = evaluate_elbo(model, test)["elbo"]
        ll = log_likelihood(model, test, k=1000)
        print(f"{name:12s} {epochs} epochs in {secs:.1f} s: test ELBO {el:.3f}, log p(x) (k=1000) {ll.mean:.3f} ± {ll.stderr:.3f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of this script")
    p.add_argument("--budget", type=float, default=240, help="seconds for the throughput table")
    p.add_argument("--bf16-epochs", type=int, default=20)
    p.add_argument("--data-dir", default=default_data_dir())
    args = p.parse_args(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    start = time.perf_counter()
    d = load_mnist_family("mnist", args.data_dir)
    ds = Dataset("mnist", (1, 28, 28), {"train": d["splits"]["train"]}, scale=255.0, binarize="dynamic")
    x = d["splits"]["train"].to(device)
    test = torch.bernoulli(d["splits"]["test"].float() / 255, generator=torch.Generator().manual_seed(0)).to(device)
    if args.quick:
        x, test = x[:4096], test[:500]
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(f"{name}, torch {torch.__version__}, Python {sys.version.split()[0]}", flush=True)
    for check in (lambda: check_graph_trajectory(ds, x, device), lambda: check_nan_skip(ds, x, device),
                  lambda: check_train_run(device)):
        try:
            check()
        except Exception:  # noqa: BLE001 - report it and run the other checks
            traceback.print_exc()
        sys.stdout.flush()
    modes = list(MODES) if device.startswith("cuda") else ["eager", "compile"]
    throughput(ds, x, device, (128, 1024), modes, time.perf_counter() + args.budget)
    t0 = time.perf_counter()
    model = VAE(784, latent_dim=20, hidden=(400,)).to(device).eval()
    k = 50 if args.quick else 5000
    log_likelihood(model, test, k=k)
    sync(device)
    secs = time.perf_counter() - t0
    print(f"NLL k={k} over {test.shape[0]} test images: {secs:.2f} s ({k * test.shape[0] / secs:,.0f} decoder passes/s)")
    bf16_cost(ds, x, test, device, 1 if args.quick else args.bf16_epochs)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
