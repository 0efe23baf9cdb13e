"""Worked examples with numbers: `vaekit explain posterior|elbo|mean-field|reparameterization|beta`.

Each topic computes its claims from scratch (float64, fixed seeds), returns them as a dict of numbers
with a `claims` list of sentences, and draws one figure (`explain_<topic>.png`, needs matplotlib).
One module per topic; `problems` holds the two models they share.

- posterior: a 2-D latent space is small enough to integrate p(x) = ∫ p(x, z) dz on a grid, so the
  true posterior p(z|x) can be drawn beside the best diagonal Gaussian Q and KL(Q ‖ p(z|x)) measured.
- elbo: log p(x) − ELBO(Q) = KL(Q ‖ p(z|x)) (the seed's §"Variational Inference and the ELBO"),
  and the importance-weighted bound L_k climbs from the ELBO to log p(x) (Burda et al. 2016).
- mean-field: the best factorized Q of a correlated Gaussian posterior (Bishop 2006, §10.1.2).
- reparameterization: gradient variance of the score-function vs the reparameterized estimator
  (Kingma & Welling 2013, §2.4; Williams 1992).
- beta: rate (KL) against distortion (−reconstruction) of β-weighted objectives (Higgins et al. 2017;
  Alemi et al. 2018).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import VaekitError
from ..files import make_dirs
from .beta import explain_beta
from .elbo import explain_elbo
from .mean_field import explain_mean_field
from .posterior import explain_posterior
from .problems import fmt, linear_problem, toy_problem
from .reparameterization import explain_reparameterization

__all__ = ["TOPICS", "explain", "format_result", "linear_problem", "toy_problem"]

TOPICS = ("posterior", "elbo", "mean-field", "reparameterization", "beta")


def explain(topic: str, out_dir: str | Path = ".", progress: bool = False) -> dict[str, Any]:
    """Run one topic, write its figure into `out_dir`, return its numbers (with `claims` and `figure`);
    `progress`: report the long one (beta trains five models) as it goes."""
    if topic not in TOPICS:
        raise VaekitError(f"unknown topic {topic!r}; choose from {', '.join(TOPICS)}")
    out = Path(out_dir)
    make_dirs(out)  # an existing file there: one line, not a traceback
    fn = {"posterior": explain_posterior, "elbo": explain_elbo, "mean-field": explain_mean_field,
          "reparameterization": explain_reparameterization, "beta": explain_beta}[topic]
    with torch.random.fork_rng(devices=[]):  # the topics seed themselves; the caller's RNG is left as it was
        result = fn(out / f"explain_{topic.replace('-', '_')}.png", **({"progress": progress} if fn is explain_beta else {}))
    return {"topic": topic, **result}


def format_result(result: dict[str, Any]) -> str:
    """The claims, then every number, as lines of text."""
    lines = [f"vaekit explain {result['topic']}", ""] + [f"  * {c}" for c in result["claims"]] + [""]
    for key, value in result.items():
        if key not in ("topic", "claims"):
            lines.append(f"  {key:<28}{fmt(value)}")
    return "\n".join(lines)
