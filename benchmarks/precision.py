"""The cost in nats of bf16 autocast: the same training (seed, data order, noise) in fp32 and in bf16,
then the test ELBO and the importance-sampled log-likelihood of each, evaluated in fp32.

    python benchmarks/precision.py                      # 784-400-20, batch 128, 20 epochs on CPU
    python benchmarks/precision.py --epochs 5 --nll-k 200 --test-n 2000   # a quicker look
"""

from __future__ import annotations

import argparse
import time

import torch
from common import default_data_dir

from vaekit.data import Dataset
from vaekit.data.mnist import load_mnist_family
from vaekit.evaluation.estimates import evaluate_elbo, log_likelihood
from vaekit.model import VAE
from vaekit.runs.config import TrainConfig
from vaekit.training.loop import LoopState, make_adam, train_epoch
from vaekit.training.loss import vae_loss


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--nll-k", type=int, default=1000)
    p.add_argument("--test-n", type=int, default=10000, help="test images to evaluate")
    p.add_argument("--data-dir", default=default_data_dir())
    args = p.parse_args(argv)
    d = load_mnist_family("mnist", args.data_dir)
    ds = Dataset("mnist", (1, 28, 28), {"train": d["splits"]["train"]}, scale=255.0, binarize="dynamic")
    test = torch.bernoulli(d["splits"]["test"][: args.test_n].float() / 255, generator=torch.Generator().manual_seed(0))
    results = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = VAE(784, latent_dim=20, hidden=(400,))
        opt = make_adam(model.parameters(), lr=1e-3)
        loss_fn = vae_loss(model, TrainConfig(batch_size=args.batch, precision=precision), ds)
        t0 = time.perf_counter()
        for epoch in range(args.epochs):
            train_epoch(model, opt, loss_fn, ds.split("train"), args.batch, 0, LoopState(epoch=epoch))
        secs = time.perf_counter() - t0
        model.eval()
        elbo = evaluate_elbo(model, test)["elbo"]
        ll = log_likelihood(model, test, k=args.nll_k)
        results[precision] = (elbo, ll)
        print(f"{precision}: {args.epochs} epochs in {secs:.0f} s ({secs / args.epochs:.2f} s/epoch); "
              f"test ELBO {elbo:.3f}, log p(x) (k={args.nll_k}) {ll.mean:.3f} ± {ll.stderr:.3f}", flush=True)
    (e32, l32), (e16, l16) = results["fp32"], results["bf16"]
    paired = l16.per_example - l32.per_example
    print(f"bf16 − fp32: ELBO {e16 - e32:+.3f} nats, log p(x) {l16.mean - l32.mean:+.3f} ± "
          f"{paired.std().item() / paired.numel() ** 0.5:.3f} nats (paired over the same test images)")


if __name__ == "__main__":
    main()
