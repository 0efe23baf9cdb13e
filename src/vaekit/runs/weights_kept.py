"""Which weights a run's model.safetensors holds, and putting them right when a run is resumed.

The file holds the last checkpoint's weights (the EMA's where the run keeps one) or, with `--patience`, the best
epoch's; its header names their epoch and step. A checkpoint writes the file before train_state.pt, so a kill between
the two leaves the file ahead of the state, and the resume trains that epoch again and writes both. The file can be
behind the state where it was lost, where vaekit 0.4 (which wrote the state first) was killed between the two, or
where a resume turns `--patience` on after epochs that kept the last weights: `repair` rewrites it from the state
where the state holds the weights it should, and otherwise says which epoch it holds.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open

from ..files import check_regular
from ..training.loop import LoopState
from ..training.stopping import Stopping
from .checkpoint import STATE, WEIGHTS

log = logging.getLogger(__name__)


def weights_epoch(run: Path, field: str = "epoch") -> int | None:
    """The epoch (or `field` "step") model.safetensors' weights are from, as its header records (an early-stopping
    run's best, not its last); None where the file is missing or records no plain count."""
    try:
        with safe_open(str(Path(run) / WEIGHTS), "pt") as f:
            value = (f.metadata() or {}).get(field, "")
    except Exception:  # noqa: BLE001 - a label: a missing or damaged file is said where the weights are loaded
        return None
    return int(value) if re.fullmatch(r"[0-9]{1,18}", value) else None  # not '²', which isdigit() takes


def repair(out: Path, state: LoopState, patience: int, write: Callable[[], None], training: bool = True) -> int | None:
    """After a resume restored `state`: write model.safetensors again with `write()` (the state's weights) wherever the
    state holds the weights it should hold (the same bytes where it already does); else say which epoch it holds.
    `training`: whether epochs follow (a file ahead of its state is then rewritten by them); returns its epoch."""
    path, epoch, step = out / WEIGHTS, weights_epoch(out), weights_epoch(out, "step")
    present = path.exists() or path.is_symlink()
    if training and epoch is not None and step is not None and (step > state.step or epoch > state.epoch):
        return epoch  # ahead of the state: written just before a kill; the epoch is trained again and both rewritten
    want = (state.stopping or Stopping()).best_epoch if patience else state.epoch  # patience, 0: none kept yet
    exact = not patience or not want or (want == state.epoch and state.batch == 0)  # the state holds them
    if exact:
        if present and (epoch, step) != (state.epoch, state.step):
            log.warning("%s: held %s, not the checkpoint's; written again from it (epoch %d, step %d)", path,
                        f"epoch {epoch}'s weights" + (f" (step {step})" if step is not None else "") if epoch is not None
                        else "unlabelled weights",
                        state.epoch, state.step)
        write()
        return state.epoch
    digest = (state.stopping or Stopping()).digest
    if epoch == want and present and digest and weights_sha256(out) != digest:
        log.warning("%s: labelled epoch %d, the best, but not the weights this run wrote then (its sha256 differs from "
                    "the one %s records); a checkpoint cannot restore those%s", path, epoch, STATE,
                    "; a later epoch that improves on the best replaces it" if training else "")
        return None
    if epoch == want:
        return epoch
    if present:  # the best epoch's weights cannot come from the state: the file stays, said as it is
        log.warning("%s: holds %s, not epoch %d's, the best so far (a checkpoint cannot restore those)%s", path,
                    f"epoch {epoch}'s weights" if epoch is not None else "weights of no recorded epoch", want,
                    "; a later epoch that improves on it replaces them" if training else "")
        return epoch
    log.warning("%s: missing, and the best epoch's weights (epoch %d's) with it; it holds epoch %d's until a later "
                "epoch improves on the best", path, want, state.epoch)
    write()
    return state.epoch


def weights_sha256(run: Path) -> str:
    """sha256 of the run's model.safetensors, a regular file read in blocks (never whole)."""
    check_regular(Path(run) / WEIGHTS, 1 << 50)  # a FIFO would block; the size does not matter here
    with open(Path(run) / WEIGHTS, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
