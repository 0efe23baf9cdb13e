"""Early stopping on the validation ELBO.

Tomczak & Welling (2018) train up to 2,000 epochs and stop once the validation loss has not improved for 50
(`--patience 50`), the count held at zero during the KL warm-up (a β < 1 model's ELBO may dip then), and report the
epoch with the best validation loss. `Stopping` is where that stands after each epoch: the best validation ELBO, its
epoch, and the epochs since. It is part of the trainer state (`train_state.pt`), updated every epoch of every run
(so `--patience` may be turned on by a resume), and it alone decides: metrics.jsonl, a file a user may edit, only
shows the curve. A state written before vaekit kept it is rebuilt from the history (`Stopping.of`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

MONITOR = "val/elbo"  # higher is better


@dataclass
class Stopping:
    best: float = -math.inf  # the best validation ELBO so far (−inf: none finite yet)
    best_epoch: int = 0  # the epoch it was reached in (0: none)
    since: int = 0  # epochs since then, those within the warm-up not counted
    digest: str = ""  # the sha256 of the model.safetensors last written ("": none recorded): a file labelled with the
    # best epoch but holding other weights is told from the one this run wrote (a checkpoint cannot restore those)

    def update(self, value: Any, epoch: int, grace: float = 0.0) -> bool:
        """Take epoch `epoch`'s validation ELBO (None where there is none); whether it is the best so far. A NaN, an
        infinity or a value no better than the best is no improvement; an epoch ≤ `grace` counts zero."""
        if isinstance(value, (int, float)) and math.isfinite(value) and value > self.best:
            self.best, self.best_epoch, self.since = float(value), int(epoch), 0
            return True
        self.since = 0 if epoch <= grace else self.since + 1
        return False

    def exhausted(self, patience: int) -> bool:
        """Whether a run with `patience` (0: never stop early) stops here."""
        return bool(patience) and self.since >= patience

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, history: Sequence[dict[str, Any]], grace: float = 0.0, key: str = MONITOR) -> Stopping:
        """The state after the epochs of `history` (records of metrics.jsonl), each taken in turn."""
        stopping = cls()
        for record in history:
            stopping.update(record.get(key), record.get("epoch", 0), grace)
        return stopping


def outcome(stopping: Stopping, patience: int, last: int, kept: int | None) -> str:
    """One line on how an early-stopping run ended after epoch `last`, and whose weights model.safetensors holds
    (`kept`: their epoch, from the file's header or this process; None: unknown)."""
    how = f"stopped early at epoch {last}: no better validation ELBO in {patience} epochs" \
        if stopping.exhausted(patience) else f"trained {last} epochs"
    if not stopping.best_epoch:
        return f"{how}; no validation ELBO was finite: the weights kept are the last epoch's"
    best = f"epoch {stopping.best_epoch}'s (validation ELBO {stopping.best:.3f})"
    if kept == stopping.best_epoch:
        return f"{how}; the weights kept are {best}"
    held = f"epoch {kept}'s weights" if kept is not None else "weights of no recorded epoch"
    return f"{how}; the best were {best}, but model.safetensors holds {held} (a checkpoint cannot restore the best)"
