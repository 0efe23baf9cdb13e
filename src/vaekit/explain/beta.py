"""`vaekit explain beta`: rate against distortion of β-weighted objectives, on trained VAEs
(Higgins et al. 2017; Alemi et al. 2018)."""

from __future__ import annotations

import logging
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.estimates import evaluate_elbo
from ..pictures.figures import new_figure, save_figure
from ..runs.config import Config
from ..runs.experiment import load_data, train_run
from ..training.progress import Progress


def explain_beta(path: Path, betas: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0), epochs: int = 8,
                 progress: bool = False) -> dict[str, Any]:
    """Rate R = KL(Q ‖ p(z)) and distortion D = −E_Q[log p(x|z)] on the digits test split for VAEs
    trained on D + β·R (Higgins et al. 2017): larger β buys a lower rate with more distortion (Alemi
    et al. 2018). The reported ELBO = −(D + R) is β-free."""
    rates, distortions = [], []
    run_log = logging.getLogger("vaekit.runs.experiment")
    level = run_log.level
    run_log.setLevel(logging.WARNING)  # five training logs would drown the numbers
    bar = Progress(len(betas), "explain beta: training one VAE per β", unit="models", enabled=progress)
    try:
        for beta in betas:
            cfg = Config().replace(model={"latent_dim": 8, "hidden": [64]},
                                   train={"epochs": epochs, "batch_size": 64, "lr": 3e-3,
                                          "objective": {"name": "elbo", "beta": beta}})
            model = train_run(cfg, progress=False).model
            m = evaluate_elbo(model, load_data(cfg).eval_split("test"))
            rates.append(m["kl"])
            distortions.append(-m["reconstruction"])
            bar.update(1)
    finally:
        run_log.setLevel(level)
        bar.close()
    result = {"beta": list(betas), "rate": rates, "distortion": distortions,
              "elbo": [-(r + d) for r, d in zip(rates, distortions)]}
    result["claims"] = [
        "β: rate (KL, nats) / distortion (−reconstruction, nats) on the test split: " + ", ".join(
            f"{b:g}: {r:.2f}/{d:.2f}" for b, r, d in zip(betas, rates, distortions)),
        "the rate falls as β grows" if all(a > b for a, b in pairwise(rates)) else "the rate does NOT fall monotonically",
        f"the best ELBO (β-free) is at β = {betas[int(np.argmax(result['elbo']))]:g}",
    ]
    result["figure"] = str(draw_beta(path, betas, rates, distortions))
    return result


def draw_beta(path: Path, betas, rates, distortions) -> Path:
    fig, (ax,) = new_figure(size=(5.5, 4.2))
    ax.plot(rates, distortions, marker="o")
    for b, r, d in zip(betas, rates, distortions):
        ax.annotate(f"β={b:g}", (r, d), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(xlabel="rate R = KL(Q ‖ p(z)) (nats)", ylabel="distortion D = −E_Q[log p(x|z)] (nats)",
           title="rate–distortion of β-VAEs on digits")
    return save_figure(fig, path)
