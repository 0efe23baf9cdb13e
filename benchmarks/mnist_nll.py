"""The IWAE paper's one-stochastic-layer MNIST protocol (Burda, Grosse & Salakhutdinov 2016, §5).

784-200-200-50 tanh encoder, mirrored decoder, Bernoulli likelihood, dynamically binarized MNIST with
59,600 training / 400 validation images, Adam (β = 0.9, 0.999, ε = 1e-4), batch 20, Glorot init, and
the 3^i schedule: stage i = 0..7 runs 3^i passes at learning rate 1e-3·10^(−i/7) (3,280 passes in all).
Test NLL by k = 5000 importance samples. `--passes-scale` multiplies every stage's passes so a CPU run
can use a fraction of the budget.

    python benchmarks/mnist_nll.py --objective vae --passes-scale 0.01
    python benchmarks/mnist_nll.py --objective iwae --k 5 --passes-scale 0.01
    python benchmarks/mnist_nll.py --objective iwae --k 50 --device cuda --cuda-graphs --passes-scale 0.02
"""

from __future__ import annotations

import argparse

from common import default_data_dir, test_nll, train_stages

from vaekit.runs.config import Config

PUBLISHED = {("vae", 1): 86.76, ("iwae", 5): 85.54, ("iwae", 50): 84.78}  # Table 1, one stochastic layer


def protocol_config(objective: str, k: int, data_dir: str, dreg: bool = False, seed: int = 0) -> Config:
    train = {"batch_size": 20, "adam_eps": 1e-4, "seed": seed}
    if objective == "iwae":
        train.update(objective={"name": "iwae", "k": k, "dreg": dreg})
    else:
        train.update(objective={"name": "elbo", "num_samples": k})
    return Config().replace(
        model={"latent_dim": 50, "hidden": [200, 200], "activation": "tanh", "init": "glorot"},
        data={"dataset": "mnist", "data_dir": data_dir, "binarize": "dynamic", "val_size": 400},
        train=train,
    )


def schedule(scale: float) -> list[tuple[float, float]]:
    return [(3**i * scale, 1e-3 * 10 ** (-i / 7)) for i in range(8)]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objective", choices=["vae", "iwae"], default="vae")
    p.add_argument("--k", type=int, default=1, help="samples per example (IWAE k; VAE Monte Carlo samples)")
    p.add_argument("--dreg", action="store_true")
    p.add_argument("--passes-scale", type=float, default=1.0, help="fraction of the 3,280 passes")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--eval-n", type=int, default=None, help="evaluate on the first N test images (default all)")
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cuda-graphs", action="store_true", help="CUDA: capture the whole step once and replay it")
    p.add_argument("--compile", action="store_true", help="torch.compile the objective (fewer kernels a step)")
    args = p.parse_args(argv)

    cfg = protocol_config(args.objective, args.k, args.data_dir, args.dreg, args.seed)
    cfg = cfg.replace(train={"cuda_graphs": args.cuda_graphs, "compile": args.compile})
    stages = schedule(args.passes_scale)
    model, ds, seconds = train_stages(cfg, stages, device=args.device)
    elbo, nll, se = test_nll(model, ds, args.eval_k, args.eval_n)
    published = PUBLISHED.get((args.objective, args.k))
    passes = sum(s for s, _ in stages)
    print(f"{args.objective} k={args.k}{' DReG' if args.dreg else ''}: {passes:g} of 3280 passes in {seconds:.0f}s; "
          f"test ELBO {elbo:.2f}; test NLL (k={args.eval_k}) {nll:.2f} ± {se:.2f} nats; "
          f"published {published if published is not None else 'n/a'}")
    return {"elbo": elbo, "nll": nll, "stderr": se, "seconds": seconds, "passes": passes, "published": published}


if __name__ == "__main__":
    main()
