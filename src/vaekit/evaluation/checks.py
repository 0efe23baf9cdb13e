"""Checks on evaluation numbers: where one should not be trusted, a field says so and a warning line
says why, instead of the number being printed as if it were fine.

- The effective sample size of an example's k importance weights, ESS = (Σw)²/Σw² (Kong 1992;
  Owen 2013, *Monte Carlo theory, methods and examples*, §9.3): between 1 (one weight dominates)
  and k (equal weights, Q = p(z|x)).
- ELBO ≤ L_k: for the same model and Q, L_k ≥ L_1 = ELBO (Burda et al. 2016, Thm. 1). An estimated
  ELBO above the estimated L_k by more than Monte Carlo error says a bug, not a number.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

LOW_ESS_FRACTION = 0.05  # warn when the median example's ESS is below this fraction of k
BOUND_SIGMAS = 4.0  # ELBO − L_k beyond this many combined MC standard errors is a violation (p ≈ 3e-5)


def ess_summary(ess: Tensor, k: int) -> dict[str, float]:
    """min and median over examples of the ESS [N], and the fraction of examples below LOW_ESS_FRACTION·k."""
    ess = ess.double()
    return {"ess_min": float(ess.min()), "ess_median": float(ess.quantile(0.5)),
            "ess_low_fraction": float((ess < LOW_ESS_FRACTION * k).double().mean())}


def ess_warning(m: dict[str, Any]) -> str | None:
    """A warning when the *median* example's ESS is below 5% of k.

    The median, not the minimum: a well-trained digits model (k = 1000) has median ESS ≈ 330 but a
    minimum ≈ 1.4 (one hard test digit of 297), so a rule on the minimum would fire on every run.
    When the typical example's estimate rests on a few weights, Q(z|x) misses much of p(z|x): log p(x)
    is then likely underestimated (the missed mass is not sampled) and the delta-method Monte Carlo
    error, computed from those same few weights, understated.
    """
    k, median = m["k"], m["ess_median"]
    if median >= LOW_ESS_FRACTION * k:
        return None
    return (f"the importance weights are dominated by a few samples: median ESS {median:.1f} of k = {k} "
            f"(< {LOW_ESS_FRACTION:.0%}; min {m['ess_min']:.1f}); the log-likelihood is likely underestimated and "
            "its Monte Carlo error understated: Q(z|x) is far from p(z|x), raise --k")


def bound_check(elbo: float, elbo_mc_stderr: float, log_likelihood: float, log_likelihood_mc_stderr: float) -> str:
    """"ok", or "violated" when the mean ELBO exceeds the mean L_k estimate by more than BOUND_SIGMAS
    combined Monte Carlo standard errors (the same examples: their spread cancels); "unchecked" when a
    Monte Carlo error is unknown (one ELBO sample, or k = 1)."""
    se = math.hypot(elbo_mc_stderr, log_likelihood_mc_stderr)
    if not math.isfinite(se):
        return "unchecked"
    return "violated" if elbo - log_likelihood > BOUND_SIGMAS * se else "ok"


def bound_warning(m: dict[str, Any]) -> str | None:
    """The line to print when the bound check failed."""
    if m.get("bound_check") != "violated":
        return None
    se = math.hypot(m["elbo_mc_stderr"], m["log_likelihood_mc_stderr"])
    return (f"BUG: the ELBO {m['elbo']:.3f} exceeds the k = {m['k']} log-likelihood bound {m['log_likelihood']:.3f} "
            f"by {m['elbo'] - m['log_likelihood']:.3f} nats, more than {BOUND_SIGMAS:g} × {se:.4f} (combined Monte "
            "Carlo standard error); L_k >= ELBO for every model, so an estimator or a part's log-density is wrong")


def evaluation_warnings(m: dict[str, Any]) -> list[str]:
    """Every warning the numbers in `m` (from `evaluate.evaluate_all`) call for."""
    return [w for w in (bound_warning(m), ess_warning(m)) if w]

