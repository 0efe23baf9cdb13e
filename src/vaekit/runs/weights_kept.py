"""Which weights a run's model.safetensors holds, and putting them right when a run is resumed.

The file holds the last checkpoint's weights (the EMA's where the run keeps one) or, with `--patience`, the best
epoch's; its header names their epoch and step. A checkpoint writes the file before train_state.pt, so a kill between
the two leaves the file ahead of the state, and the resume trains that epoch again and writes both. The file can be
behind the state where it was lost, where vaekit 0.4 (which wrote the state first) was killed between the two, or
where a resume turns `--patience` on after epochs that kept the last weights: `repair` rewrites it from the state
where the state holds the weights it should, and otherwise says which epoch it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open

from ..training.loop import LoopState
from ..training.stopping import Stopping
from .checkpoint import WEIGHTS

log = logging.getLogger(__name__)


def weights_epoch(run: Path, field: str = "epoch") -> int | None:
    """The epoch (or `field` "step") model.safetensors' weights are from, as its header records (an early-stopping
    run's best, not its last); None where the file is missing or records no plain count."""
    try:
        with safe_open(str(Path(run) / WEIGHTS), "pt") as f:
            value = (f.metadata() or {}).get(field, "")
    except Exception:  # noqa: BLE001 - a label: a missing or damaged file is said where the weights are loaded
        return None
    return int(value) if value.isdigit() and len(value) < 19 else None


def repair(out: Path, state: LoopState, patience: int, write: Callable[[], None]) -> int | None:
    """After a resume restored `state`: rewrite model.safetensors with `write()` (the state's weights) where it should
    hold them and does not; returns the epoch the file holds."""
    path, epoch, step = out / WEIGHTS, weights_epoch(out), weights_epoch(out, "step")
    if epoch is not None and step is not None and (step > state.step or epoch > state.epoch):
        return epoch  # ahead of the state: written just before a kill; the epoch is trained again and both rewritten
    want = (state.stopping or Stopping()).best_epoch if patience else state.epoch  # patience, 0: none kept yet
    if (epoch == want or (not want and epoch is not None)) if patience else (epoch, step) == (state.epoch, state.step):
        return epoch
    exact = not patience or (want == state.epoch and state.batch == 0)  # the state holds the weights the file should
    if not exact and epoch is not None:
        log.warning("%s: holds epoch %d's weights, not epoch %d's, the best so far (the run trained without "
                    "--patience then); they are replaced when the validation ELBO improves", path, epoch, want)
        return epoch
    if not exact and want:
        log.warning("%s: missing, and the best epoch's weights (epoch %d's) with it; it holds epoch %d's until the "
                    "validation ELBO improves", path, want, state.epoch)
    elif epoch is not None:
        log.warning("%s: held epoch %d's weights (step %s), not the checkpoint's; written again from it (epoch %d, "
                    "step %d)", path, epoch, step, state.epoch, state.step)
    write()
    return state.epoch
