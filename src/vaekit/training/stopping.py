"""Early stopping on a validation metric, decided from the run's history alone.

Tomczak & Welling (2018) train up to 2,000 epochs and stop once the validation loss has not improved for 50
(`--patience 50`), the count held at zero during the KL warm-up (a β < 1 model's ELBO may dip then), and report the
epoch with the best validation loss. Both questions here — is this epoch the best so far, and how many epochs
since the last best — are functions of the per-epoch records (`metrics.jsonl`), which a resume restores up to its
checkpoint: a resumed run stops where the straight run stops, with nothing more in the trainer state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MONITOR = "val/elbo"  # higher is better


def since_best(history: Sequence[dict[str, Any]], grace: float = 0.0, key: str = MONITOR) -> int:
    """Epochs since `key` last reached a new maximum; epochs ≤ `grace` (the KL warm-up) count zero.
    A record without the key, or a NaN, is no improvement."""
    best, count = -math.inf, 0
    for record in history:
        value = record.get(key)
        if isinstance(value, (int, float)) and value > best:
            best, count = float(value), 0
        elif record.get("epoch", 0) <= grace:
            count = 0
        else:
            count += 1
    return count


def is_best(history: Sequence[dict[str, Any]], key: str = MONITOR) -> bool:
    """Whether the last record's `key` exceeds every earlier one's (the first record is the best so far)."""
    if not history or not isinstance(history[-1].get(key), (int, float)):
        return False
    earlier = [r[key] for r in history[:-1] if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return history[-1][key] > max(earlier, default=-math.inf)


def best_record(history: Sequence[dict[str, Any]], key: str = MONITOR) -> dict[str, Any] | None:
    """The first record holding the largest `key` (the epoch whose weights an early-stopped run keeps)."""
    best = None
    for record in history:
        value = record.get(key)
        if isinstance(value, (int, float)) and (best is None or value > best[key]):
            best = record
    return best


def exhausted(history: Sequence[dict[str, Any]], patience: int, grace: float = 0.0) -> bool:
    """Whether a run with `patience` (0: never stop early) should stop after the epochs in `history`."""
    return bool(patience) and since_best(history, grace) >= patience


def outcome(history: Sequence[dict[str, Any]], patience: int, grace: float = 0.0) -> str:
    """One line on how an early-stopping run ended and which epoch's weights it keeps."""
    best, last = best_record(history), history[-1].get("epoch", len(history))
    how = f"stopped early at epoch {last}: no better validation ELBO in {patience} epochs" \
        if exhausted(history, patience, grace) else f"trained {last} epochs"
    if best is None:
        return f"{how}; no validation ELBO was finite: the last epoch's weights are kept"
    return f"{how}; the weights kept are epoch {best.get('epoch')}'s (validation ELBO {best[MONITOR]:.3f})"
