"""One prepared GPU check: examples/s of vaekit's training step for 784-400-20 at batch 128 and 1024,
and the time of one full-MNIST epoch, with the data resident on the device. A few minutes at most.

    python benchmarks/gpu.py            # prints "no CUDA device" and exits 0 where there is none

The step is the same `train_epoch` + `VAEObjective` the CPU tests cover; only the device differs.
"""

from __future__ import annotations

import time

import torch
from common import default_data_dir

from vaekit.config import TrainConfig
from vaekit.data import Dataset
from vaekit.mnist import load_mnist_family
from vaekit.model import VAE
from vaekit.run import VAEObjective
from vaekit.train import LoopState, make_adam, train_epoch


def epoch_seconds(ds: Dataset, batch: int, device: str, max_steps: int | None = None) -> tuple[float, int]:
    torch.manual_seed(0)
    model = VAE(784, latent_dim=20, hidden=(400,)).to(device)
    objective = VAEObjective(model, TrainConfig(batch_size=batch), ds)
    opt = make_adam(model.parameters(), lr=1e-3)
    x = ds.split("train")
    train_epoch(objective, opt, objective, x, batch, 0, LoopState(), max_steps=20)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_epoch(objective, opt, objective, x, batch, 0, LoopState(), max_steps=max_steps)
    torch.cuda.synchronize()
    steps = max_steps or -(-x.shape[0] // batch)
    return time.perf_counter() - t0, min(x.shape[0], steps * batch)


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    device = "cuda"
    d = load_mnist_family("mnist", default_data_dir())
    ds = Dataset("mnist", (1, 28, 28), {"train": d["splits"]["train"].to(device)}, scale=255.0, binarize="dynamic")
    print(torch.cuda.get_device_name(), f"torch {torch.__version__}")
    for batch in (128, 1024):
        secs, n = epoch_seconds(ds, batch, device)
        print(f"784-400-20 batch {batch:5d}: one epoch of {n} images in {secs:.2f} s = {n / secs:,.0f} examples/s")


if __name__ == "__main__":
    main()
