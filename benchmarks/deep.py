"""Deep hierarchies on dynamically binarized MNIST (issue 24): the deep top-down VAE's recipe, the same depth
bottom-up for comparison, and what a top-down epoch costs against the plain one.

Recipes (each a preset; a flag given overrides it):

- `top-down` (`--inference top-down`, `parts/topdown.py`): a 784-512-512 trunk of gated dense layers (`--arch
  gated`, Tomczak & Welling's; `--arch mlp` for ReLU), L groups of latents on a path of width 512 shared by
  p(z_l|z_>l) and Q(z_l|z_>l, x), a 512-512 gated decoder from the last state; the ELBO with its KL warmed up
  over `--warmup` epochs and balanced between groups meanwhile (NVAE), free bits `--free-bits` per group,
  gradients clipped at norm 200 (`--grad-skip T` also skips updates above T, VDVAE's guard: the gated net's
  first gradients exceed 1000, so it is off by default), an EMA of the weights (decay 0.999) for validation and
  the test, batch 128, Adam with a cosine decay of the learning rate from `--lr` to 0 (a step per epoch),
  59,600 training / 400 validation images.
- `bottom-up`: the same latent sizes as Burda et al.'s stack (Q(z₁|x) Q(z₂|z₁) …), the same trunk, guards
  and schedule: depth without the shared path.
- `plain`: one layer of Σ d_l latents, the same trunk, guards and schedule.
- `ladder` (`--inference ladder-unshared`): Sønderby et al.'s LVAE as their code trains it: five layers of
  64-32-16-8-4 latents, 784-512-512 trunk and 512-512 decoder, 256-256 networks between the layers (theirs
  narrow with the layers: 256 … 32), batch normalization before every hidden activation (`--norm batch`), leaky
  ReLU, Q's own top-down networks met by precision weighting, KL warm-up over `--warmup` epochs, batch 256, no
  EMA and no guards (theirs had none).
- `ladder-bottom-up`: the same five layers, networks and schedule with Q drawn bottom-up: the paper's VAE row.

    python benchmarks/deep.py --recipe top-down --epochs 200 --eval-k 5000 --json deep.json
    python benchmarks/deep.py --speed                  # seconds per epoch, top-down against plain, one process
    python benchmarks/deep.py --speed --profile        # and where the top-down step's time goes
    python benchmarks/deep.py --device cuda --precision bf16 --compile --cuda-graphs --arch conv   # a GPU

The budget is fixed in epochs so a run repeats; BENCHMARKS.md has the times. The test NLL is importance
sampled with `--eval-k` over the first `--eval-n` test images (default all 10,000), in float32.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import cosine_recipe, recipe_arguments, write_json

from vaekit.model import build_model
from vaekit.runs.config import Config
from vaekit.runs.experiment import build_trainer, load_data, resolve
from vaekit.training.loop import LoopState, train_epoch

INFERENCE = {"top-down": "top-down", "bottom-up": "bottom-up", "plain": "bottom-up", "ladder": "ladder-unshared",
             "ladder-bottom-up": "bottom-up"}
LADDER = {"latent_dim": [64, 32, 16, 8, 4], "layer_hidden": [256, 256], "activation": "leaky-relu", "batch_size": 256}


def recipe_config(args, recipe: str | None = None) -> Config:
    recipe = recipe or args.recipe
    ladder = recipe.startswith("ladder")
    latent = args.latent_dim or (LADDER["latent_dim"] if ladder else [16, 16, 16, 16])
    latent = [sum(latent)] if recipe == "plain" else latent
    prior = {"name": "vampprior", "components": args.components} if args.prior == "vampprior" else "standard"
    objective = {"name": "elbo", "kl_warmup_epochs": min(args.warmup, args.epochs / 4), "free_bits": args.free_bits,
                 "kl_balance": len(latent) > 1 and not ladder}
    if getattr(args, "train_k", 0):  # the importance-weighted bound from the start (Burda et al.), DReG gradients
        objective = {"name": "iwae", "k": args.train_k, "dreg": True}
    arch = {"name": "mlp", "norm": "batch"} if ladder else args.arch
    width = [args.width, args.width]
    model = {"latent_dim": latent, "hidden": width, "decoder_hidden": width, "activation": "relu",
             "inference": INFERENCE[recipe], "arch": arch, "prior": prior}
    if ladder:
        model.update(layer_hidden=LADDER["layer_hidden"], activation=LADDER["activation"])

    def default(value, top_down):  # a flag given, else the top-down recipes' guard, else none for the ladders
        return value if value is not None else 0.0 if ladder else top_down

    return Config().replace(
        model=model,
        data={"dataset": "mnist", "data_dir": args.data_dir, "binarize": "dynamic", "val_size": 400},
        train={"batch_size": LADDER["batch_size"] if ladder else 128, "objective": objective, "seed": args.seed,
               "grad_clip": default(args.grad_clip, 200.0), "grad_skip": default(args.grad_skip, 0.0),
               "ema": default(args.ema, 0.999), "precision": args.precision, "compile": args.compile,
               "cuda_graphs": args.cuda_graphs, "spectral_reg": args.spectral_reg},
    )


def speed(args) -> dict:
    """Seconds per training step of each recipe, measured in this process, alternating, best of `--repeats`."""
    times: dict[str, list[float]] = {}
    base = "top-down" if args.against_iwae or args.against_spectral else "plain"
    other = "iwae" if args.against_iwae else "spectral" if args.against_spectral else "top-down"
    for recipe in (base, other) * args.repeats:
        cfg = recipe_config(args, "top-down" if recipe in ("iwae", "spectral") else recipe)
        if recipe == "iwae":  # the fine-tune's objective on the same model
            cfg = cfg.replace(train={"objective": {"name": "iwae", "k": args.against_iwae, "dreg": True}})
        if recipe == "spectral":  # the same step with spectral regularization's power iteration and penalty
            cfg = cfg.replace(train={"spectral_reg": args.against_spectral})
        ds = load_data(cfg)
        cfg = resolve(cfg, ds)
        torch.manual_seed(0)
        model = build_model(cfg.model).to(args.device)
        loss_fn, opt, step_fn = build_trainer(model, cfg.train, ds, args.device)
        x = ds.split("train")[: 128 * (args.steps + 5)].to(args.device)
        train_epoch(model, opt, loss_fn, x[: 128 * 5], 128, 0, LoopState(), step_fn=step_fn)  # warm up
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        sync()
        t0 = time.perf_counter()
        train_epoch(model, opt, loss_fn, x, 128, 0, LoopState(), max_steps=args.steps, step_fn=step_fn)
        sync()
        times.setdefault(recipe, []).append((time.perf_counter() - t0) / args.steps)
        if args.profile and recipe == other and len(times[other]) == args.repeats:  # the last step timed, profiled
            profile_steps(model, opt, loss_fn, x, step_fn, args.steps)
    best = {r: min(t) for r, t in times.items()}
    steps = -(-59600 // 128)
    for r, t in best.items():
        print(f"{r:>9}: {t * 1e3:.1f} ms per step of 128, ≈ {t * steps:.1f} s per epoch")
    print(f"a {other} epoch costs {best[other] / best[base]:.2f}× a {base} one (latent {list(cfg.model.latent_dim)}, "
          f"{torch.get_num_threads()} threads)")
    return {"seconds_per_step": best, "ratio": best[other] / best[base]}


def profile_steps(model, opt, loss_fn, x, step_fn, steps: int) -> None:
    """FLOPs per step and the operators that take the time, from torch's profiler over `steps` steps."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        train_epoch(model, opt, loss_fn, x, 128, 0, LoopState(), max_steps=steps, step_fn=step_fn)
    events = prof.key_averages()
    print(f"{sum(e.flops for e in events) / steps / 1e9:.2f} GFLOP a step (the profiled recipe)")
    print(events.table(sort_by="self_cpu_time_total", row_limit=8))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    recipe_arguments(p, epochs=200)
    p.add_argument("--recipe", choices=list(INFERENCE), default="top-down")
    p.add_argument("--latent-dim", type=int, nargs="+", default=None,
                   help="the groups' sizes, z₁ first (default 16 16 16 16; the ladders: 64 32 16 8 4)")
    p.add_argument("--warmup", type=float, default=10.0, help="KL warm-up epochs (balanced between groups meanwhile)")
    p.add_argument("--free-bits", type=float, default=0.0, help="nats per group below which its KL is not penalized")
    p.add_argument("--ema", type=float, default=None, help="default 0.999 (the ladders: 0, none)")
    p.add_argument("--prior", choices=["standard", "vampprior"], default="standard",
                   help="the top group's prior: the path's Gaussian head, or a VampPrior over Q(z_L|u_k)")
    p.add_argument("--components", type=int, default=500, help="the VampPrior's pseudo-inputs")
    p.add_argument("--width", type=int, default=512, help="the trunk's and the decoder's two layers, the path's width "
                   "(default 512; Tomczak & Welling's HVAE: 300)")
    p.add_argument("--grad-clip", type=float, default=None, help="default 200 (the ladders: 0, none)")
    p.add_argument("--grad-skip", type=float, default=None,
                   help="skip an update whose gradient norm is above this (default 0: never)")
    p.add_argument("--arch", choices=["mlp", "gated", "conv"], default="gated")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cuda-graphs", action="store_true")
    p.add_argument("--save", help="keep the trained model as a run directory for `vaekit evaluate`")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--speed", action="store_true", help="only time a top-down step against a plain one")
    p.add_argument("--against-iwae", type=int, default=0, metavar="K",
                   help="--speed: time the top-down recipe's ELBO step against its IWAE step of K samples (DReG), the "
                   "fine-tune's, instead of the plain model's")
    p.add_argument("--against-spectral", type=float, default=0.0, metavar="LAMBDA",
                   help="--speed: time the top-down recipe's step against the same step with --spectral-reg LAMBDA")
    p.add_argument("--spectral-reg", type=float, default=0.0, help="NVAE's spectral regularization weight (default 0)")
    p.add_argument("--train-k", type=int, default=0, metavar="K",
                   help="train on the IWAE bound of K samples (DReG) from the start instead of the ELBO (no warm-up)")
    p.add_argument("--profile", action="store_true", help="--speed: also profile the second recipe's step (FLOPs, "
                   "the operators that take the time)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.speed:
        return speed(args)
    cfg = recipe_config(args)
    ds, seconds, elbo, nll, se = cosine_recipe(cfg, args)
    n = args.eval_n or ds.eval_split("test").shape[0]
    print(f"{args.recipe} {list(cfg.model.latent_dim)}: {args.epochs} epochs in {seconds:.0f}s of training; test ELBO {elbo:.2f}; "
          f"test NLL (k={args.eval_k}, n={n}) {nll:.2f} ± {se:.2f} nats")
    result = {"recipe": args.recipe, "latent_dim": list(cfg.model.latent_dim), "epochs": args.epochs, "seconds": seconds,
              "elbo": elbo, "nll": nll, "stderr": se, "k": args.eval_k, "n": n, "config": cfg.to_dict()}
    return write_json(result, args.json)


if __name__ == "__main__":
    main()
