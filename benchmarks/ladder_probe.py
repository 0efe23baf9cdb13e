"""Why the ladder VAE trains worse here than bottom-up inference: the two-layer models (z 32 + 16, the
families recipe) a few epochs each, then on the validation images the ELBO's terms, KL and active units
per layer, and the medians of the scales that decide how much of x reaches z₁ through Q(z₁|z₂, x) ∝
p(z₁|z₂)·N(μ̂₁, σ̂₁²): σ̂₁, σ_p(z₁|z₂) and x's weight σ_p²/(σ_p² + σ̂₁²) (for the bottom-up model, the same
networks read as if they formed a ladder). The third, `--inference ladder-unshared`, gives Q its own
top-down networks, as the authors' code does.

    python benchmarks/ladder_probe.py --epochs 4        # ≈ 1.5 minutes on 2 cores
"""

from __future__ import annotations

import argparse

import torch
from common import default_data_dir, train_stages
from families import config

from vaekit.evaluation.estimates import evaluate_elbo, latent_statistics


def scales(model, x) -> tuple[float, float, float]:
    """Medians of σ̂₁, σ_p(z₁|z₂) at one draw of z₂ from the bottom-up Gaussian, and σ_p²/(σ_p² + σ̂₁²); for a
    ladder with Q's own top-down step, σ_p is that step's σ (what Q weighs x against)."""
    with torch.no_grad():
        g1 = model.encoder.first(x)
        s_hat = g1.base_dist.scale
        down = getattr(model.encoder, "down", None)
        step = down[0] if down is not None else model.prior.lower[0]
        s_p = step(model.encoder.upper[0](g1.mean).sample()).base_dist.scale
        weight = s_p.pow(2) / (s_p.pow(2) + s_hat.pow(2))
    return s_hat.median().item(), s_p.median().item(), weight.median().item()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    recipe = argparse.Namespace(data_dir=args.data_dir, seed=args.seed, epochs=125)  # the 125-epoch row's warm-up
    for name, family, inference in [("2-layer", "2-layer", "bottom-up"), ("2-layer-ladder", "2-layer-ladder", "ladder"),
                                    ("2-layer-ladder-unshared", "2-layer-ladder", "ladder-unshared")]:
        cfg = config(family, recipe).replace(model={"inference": inference})
        model, ds, _ = train_stages(cfg, [(1.0, 1e-3)] * args.epochs, log=lambda *_: None)
        x = ds.eval_split("val")
        terms = evaluate_elbo(model, x)
        stats = latent_statistics(model, x)
        s_hat, s_p, weight = scales(model, x)
        print(f"{name:<15} ELBO {terms['elbo']:8.2f}  reconstruction {terms['reconstruction']:8.2f}  "
              f"KL per layer {', '.join(f'{v:.2f}' for v in stats['kl_per_layer'])}  "
              f"active {stats['active_units_per_layer']}  σ̂₁ {s_hat:.3f}  σ_p(z₁|z₂) {s_p:.3f}  x's weight {weight:.3f}",
              flush=True)


if __name__ == "__main__":
    main()
