"""A run's codes scored against its data's ground-truth factors: the disentanglement metrics of
`metrics.py` (pure functions of arrays) on the posterior means E_Q[z|x] of a model (what
`vaekit disentanglement` and the report show). The data must carry factors (`--dataset shapes2d`, or an
`.npz` with `factors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .errors import VaekitError
from .latents import posterior_summary
from .metrics import betavae_score, dci, factorvae_score, mig, sap

METRICS = ("mig", "sap", "dci", "factorvae", "betavae")  # every one, in the order reported


def check_metrics(names: Sequence[str]) -> tuple[str, ...]:
    """The metric names asked for, in one line where one is unknown."""
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise VaekitError(f"--metrics {','.join(names)}: choose from {','.join(METRICS)}")
    return tuple(names)


def score_codes(codes: Tensor, factors: Tensor, names: Sequence[str] = METRICS, seed: int = 0) -> dict[str, float]:
    """{metric: value} for codes [N, K] against factors [N, F]; DCI gives three entries
    (dci_disentanglement, dci_completeness, dci_informativeness)."""
    scores: dict[str, float] = {}
    for name in check_metrics(names):
        if name == "mig":
            scores["mig"] = mig(codes, factors)
        elif name == "sap":
            scores["sap"] = sap(codes, factors, seed=seed)
        elif name == "dci":
            d = dci(codes, factors, seed=seed)
            scores.update(dci_disentanglement=d.disentanglement, dci_completeness=d.completeness,
                          dci_informativeness=d.informativeness)
        elif name == "factorvae":
            scores["factorvae"] = factorvae_score(codes, factors, seed=seed)
        else:
            scores["betavae"] = betavae_score(codes, factors, seed=seed)
    return scores


@torch.no_grad()
def score_model(model, x: Tensor, factors: Tensor, names: Sequence[str] = METRICS, seed: int = 0,
                y: Tensor | None = None) -> dict[str, float]:
    """The metrics of the posterior means of x (`latents.posterior_summary`; y: labels of a conditional VAE)."""
    if factors.shape[0] != x.shape[0]:
        raise VaekitError(f"{factors.shape[0]} rows of factors for {x.shape[0]} examples")
    codes, _ = posterior_summary(model, x, seed=seed, y=y)
    return score_codes(codes, factors, names, seed)
