"""A run's codes scored against its data's ground-truth factors: the disentanglement metrics of
`disentanglement.metrics` (pure functions of arrays) on the posterior means E_Q[z|x] of a model (what
`vaekit disentanglement` and the report show). The data must carry factors (`--dataset shapes2d`, or an
`.npz` with `factors`).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import VaekitError
from ..evaluation.latents import posterior_summary
from .metrics import betavae_score, dci, factorvae_score, mig, mutual_information, sap

METRICS = ("mig", "sap", "dci", "factorvae", "betavae")  # every one, in the order reported

log = logging.getLogger(__name__)


def have_sklearn() -> bool:
    """DCI and the BetaVAE score fit scikit-learn models (the `metrics` extra)."""
    return importlib.util.find_spec("sklearn") is not None


def check_metrics(names: Sequence[str]) -> tuple[str, ...]:
    """The metric names asked for, in one line where one is unknown."""
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise VaekitError(f"--metrics {','.join(names)}: choose from {','.join(METRICS)}")
    return tuple(names)


def score_codes(codes: Tensor, factors: Tensor, names: Sequence[str] = METRICS, seed: int = 0,
                skip: bool = False, progress: bool = False) -> dict[str, float | str]:
    """{metric: value} for codes [N, K] against factors [N, F]; DCI gives three entries
    (dci_disentanglement, dci_completeness, dci_informativeness). `skip`: a metric these arrays cannot
    give (too few rows per factor value for the vote scores, say) gets its one-line reason instead."""
    scores: dict[str, float | str] = {}
    for name in check_metrics(names):
        if progress:  # a metric takes seconds to minutes (DCI's forests): say which one runs
            log.info("scoring %s on %d codes", name, codes.shape[0])
        try:
            with warnings.catch_warnings():  # factors of many values: sklearn warns at every tree, 80 lines a run
                warnings.filterwarnings("ignore", "The number of unique classes is greater than 50%", UserWarning)
                scores.update(_score(name, codes, factors, seed))
        except VaekitError as e:
            if not skip:
                raise
            scores[name] = f"not computed: {e}"
    return scores


def _score(name: str, codes: Tensor, factors: Tensor, seed: int) -> dict[str, float]:
    """One metric's entries (DCI: three)."""
    if name == "mig":
        return {"mig": mig(codes, factors)}
    if name == "sap":
        return {"sap": sap(codes, factors, seed=seed)}
    if name == "dci":
        d = dci(codes, factors, seed=seed)
        return {"dci_disentanglement": d.disentanglement, "dci_completeness": d.completeness,
                "dci_informativeness": d.informativeness}
    if name == "factorvae":
        return {"factorvae": factorvae_score(codes, factors, seed=seed)}
    return {"betavae": betavae_score(codes, factors, seed=seed)}


@torch.no_grad()
def score_model(model, x: Tensor, factors: Tensor, names: Sequence[str] = METRICS, seed: int = 0,
                y: Tensor | None = None, skip: bool = False, progress: bool = False) -> dict[str, float | str]:
    """The metrics of the posterior means of x (`latents.posterior_summary`; y: labels of a conditional
    VAE; `skip` as in `score_codes`)."""
    if factors.shape[0] != x.shape[0]:
        raise VaekitError(f"{factors.shape[0]} rows of factors for {x.shape[0]} examples")
    codes, _ = posterior_summary(model, x, seed=seed, y=y, progress=progress)
    return score_codes(codes, factors, names, seed, skip, progress)


def captured_factors(codes: Tensor, factors: Tensor, names: Sequence[str]) -> list[str]:
    """For each code dimension, the factor it shares the most information with and that mutual
    information in nats ("pos_x, 1.21 nats"; "none" where it is below 0.05 nats): what a traversal's rows
    are labelled with."""
    varying = (factors != factors[:1]).any(0)  # a factor constant on these examples shares nothing with any code
    mi = torch.zeros(codes.shape[1], factors.shape[1], dtype=torch.float64)
    if bool(varying.any()):
        mi[:, varying] = torch.as_tensor(mutual_information(codes, factors[:, varying]), dtype=torch.float64)
    best = mi.argmax(1)
    return [f"{names[f]}, {mi[j, f]:.2f} nats" if mi[j, f] >= 0.05 else "none" for j, f in enumerate(best)]
