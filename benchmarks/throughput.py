"""Training and evaluation throughput, as ratios measured in one run (never asserted as times).

For one epoch of the 60,000 MNIST training images it times, in this process:
  ours       vaekit's training epoch (in-memory uint8 data, one step function, fused Adam);
  reference  the pytorch/examples VAE loop: a DataLoader over per-example float tensors,
             sigmoid + binary_cross_entropy, `loss.item()` every step;
  matmul     matrix products totalling the epoch's matmul FLOPs (3 × forward), the machine's peak;
and prints seconds per epoch, examples/s, the speed-up over the reference and the % of matmul peak.
Then the importance-sampled NLL (k samples over the test images) against the same peak.

    python benchmarks/throughput.py                       # 784-400-20, batch 128
    python benchmarks/throughput.py --hidden 512 512 --latent 50 --batch 1024
    python benchmarks/throughput.py --nll-k 5000          # also time the k=5000 test NLL
    python benchmarks/throughput.py --precision bf16      # ours with bf16 autocast (peak stays fp32)
"""

from __future__ import annotations

import argparse
import itertools
import resource
import time

import torch
import torch.nn.functional as F
from common import default_data_dir
from torch import nn

from vaekit.data import Dataset
from vaekit.data.mnist import load_mnist_family
from vaekit.evaluation.estimates import log_likelihood
from vaekit.model import VAE
from vaekit.runs.config import TrainConfig
from vaekit.training.loop import LoopState, make_adam, train_epoch
from vaekit.training.loss import vae_loss


def mlp_macs(sizes: list[int]) -> int:
    return sum(a * b for a, b in itertools.pairwise(sizes))


def forward_flops(d: int, hidden: list[int], k: int) -> int:
    """Matmul FLOPs of one example's forward pass: encoder d→hidden→2k, decoder k→reversed hidden→d."""
    return 2 * (mlp_macs([d, *hidden, 2 * k]) + mlp_macs([k, *reversed(hidden), d]))


class ExampleVAE(nn.Module):
    """pytorch/examples vae/main.py, generalised to the hidden sizes given (as the example writes it)."""

    def __init__(self, d, hidden, k):
        super().__init__()
        enc, dec = [d, *hidden], [k, *reversed(hidden)]
        self.enc = nn.Sequential(*[m for a, b in itertools.pairwise(enc) for m in (nn.Linear(a, b), nn.ReLU())])
        self.mu, self.logvar = nn.Linear(enc[-1], k), nn.Linear(enc[-1], k)
        self.dec = nn.Sequential(*[m for a, b in itertools.pairwise(dec) for m in (nn.Linear(a, b), nn.ReLU())],
                                 nn.Linear(dec[-1], d), nn.Sigmoid())

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z), mu, logvar


def reference_epoch(images: torch.Tensor, hidden, k, batch) -> float:
    model = ExampleVAE(784, hidden, k)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    per_example = [(img.float() / 255).view(-1) for img in images]  # like ToTensor(): one tensor an image
    loader = torch.utils.data.DataLoader(list(zip(per_example, [0] * len(per_example))), batch_size=batch, shuffle=True)
    t0 = time.perf_counter()
    for x, _ in loader:
        opt.zero_grad()
        recon, mu, logvar = model(x)
        loss = F.binary_cross_entropy(recon, x, reduction="sum") - 0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp())
        loss.backward()
        opt.step()
        loss.item()
    return time.perf_counter() - t0


def our_epoch(ds: Dataset, hidden, k, batch, seed=0, **train) -> tuple[float, dict]:
    torch.manual_seed(seed)
    model = VAE(784, latent_dim=k, hidden=hidden)
    opt = make_adam(model.parameters(), lr=1e-3)
    loss_fn = vae_loss(model, TrainConfig(batch_size=batch, **train), ds)
    if train.get("compile"):  # compile outside the timed epoch
        train_epoch(model, opt, loss_fn, ds.split("train"), batch, seed + 1, LoopState(), max_steps=3)
    state = LoopState()
    t0 = time.perf_counter()
    metrics = train_epoch(model, opt, loss_fn, ds.split("train"), batch, seed, state)
    return time.perf_counter() - t0, metrics


def matmul_seconds(flops: float, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    reps = max(1, round(flops / (2 * n**3)))
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return (time.perf_counter() - t0) * flops / (reps * 2 * n**3)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[400])
    p.add_argument("--latent", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="best of this many epochs (the machine is noisy)")
    p.add_argument("--nll-k", type=int, default=0, help="also time the test NLL with this k (0: skip)")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="ours: autocast matmuls to bf16")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile the objective")
    p.add_argument("--data-dir", default=default_data_dir())
    args = p.parse_args(argv)

    d = load_mnist_family("mnist", args.data_dir)
    ds = Dataset("mnist", (1, 28, 28), {"train": d["splits"]["train"]}, scale=255.0, binarize="dynamic")
    n = ds.split("train").shape[0]
    epoch_flops = 3 * forward_flops(784, args.hidden, args.latent) * n
    print(f"network 784-{'-'.join(map(str, args.hidden))}-{args.latent}, batch {args.batch}, {n} images, "
          f"{epoch_flops / 1e9:.0f} GFLOP of matmuls per epoch, {torch.get_num_threads()} threads")

    train = {"precision": args.precision, "compile": args.compile}
    ours = min(our_epoch(ds, args.hidden, args.latent, args.batch, **train)[0] for _ in range(args.repeats))
    peak = matmul_seconds(epoch_flops)
    print(f"ours       {ours:6.2f} s/epoch  {n / ours:9.0f} examples/s  {100 * peak / ours:5.1f}% of matmul peak")
    print(f"matmul     {peak:6.2f} s        ({epoch_flops / peak / 1e9:.0f} GFLOP/s)")
    if not args.skip_reference:
        ref = min(reference_epoch(ds.split("train"), args.hidden, args.latent, args.batch) for _ in range(args.repeats))
        print(f"reference  {ref:6.2f} s/epoch  {n / ref:9.0f} examples/s  ours is {ref / ours:.2f}× faster")
    print(f"peak resident memory so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

    if args.nll_k:
        test = load_mnist_family("mnist", args.data_dir)["splits"]["test"]
        x = torch.bernoulli(test.float() / 255, generator=torch.Generator().manual_seed(0))
        model = VAE(784, latent_dim=args.latent, hidden=args.hidden).eval()
        t0 = time.perf_counter()
        log_likelihood(model, x, k=args.nll_k)
        secs = time.perf_counter() - t0
        # per sample: the decoder forward; the encoder runs once per image (negligible for large k)
        flops = 2 * mlp_macs([args.latent, *reversed(args.hidden), 784]) * args.nll_k * x.shape[0]
        print(f"NLL k={args.nll_k}: {secs:.1f} s for {x.shape[0]} images, {100 * matmul_seconds(flops) / secs:.1f}% of matmul peak")


if __name__ == "__main__":
    main()
