"""Runs in the trackers people use: `vaekit train --track mlflow|wandb` (extras `mlflow`, `wandb`).

A tracker here is a `Backend`: start (or continue) a run, log parameters, metrics at a step and files,
finish. `EpochTracker` feeds one from training's `on_epoch` hook and `log_evaluation` from `vaekit
evaluate`. Which tracker and which of its runs a run directory belongs to is kept in RUN/tracking.json,
so a `--resume` and an evaluation log to the same tracked run.

A tracker is a side channel: the first failure of one (a server out of reach, a full disk, a bug in
the package) is one warning, and tracking stops for the rest of the process. Training, its checkpoint
and metrics.jsonl never depend on it; the tracked run starts after the first epoch, so a run directory
refused before training leaves no empty run in the tracker.
"""

from __future__ import annotations

import importlib
import json
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import VaekitError
from ..runs.checkpoint import versions
from ..runs.history import read_metrics
from .files import read_tracking, stage_run_files, write_tracking

log = logging.getLogger(__name__)
TRACKERS = {"mlflow": ".mlflow_tracker", "wandb": ".wandb_tracker"}  # name → module, imported when asked


class Backend(Protocol):
    title: str  # the tracker's name in messages: "MLflow", "W&B"

    def start(self, run_dir: Path, saved: dict[str, str] | None, training: bool) -> dict[str, str]:
        """Create a run (saved is None) or continue `saved["run_id"]`; return what tracking.json keeps."""

    def log_params(self, params: dict[str, Any], resumed: bool) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_result(self, metrics: dict[str, float], step: int) -> None:
        """An evaluation's numbers: a point of each curve (MLflow) or the run's summary (W&B)."""

    def log_files(self, folder: Path) -> None:
        """Every file in `folder` (copies vaekit made) as artifacts of the run."""

    def finish(self, completed: bool | None) -> None:
        """End the run: completed (all epochs), stopped early (False), or as it was (None: an evaluation)."""


def load_backend(name: str) -> Backend:
    """The backend of tracker `name`; its package is imported now, and a missing one is one line."""
    module = importlib.import_module(TRACKERS[name], __package__)
    return module.make_backend()


class Guard:
    """Calls into a tracker: the first exception is one warning, then every later call does nothing."""

    def __init__(self, backend: Backend):
        self.backend, self.on = backend, True

    def call(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        if not self.on:
            return None
        try:
            with warnings.catch_warnings():  # a tracker's own deprecations are not the user's business
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                return fn(*args)
        except Exception as e:  # noqa: BLE001 - any failure of a side channel; KeyboardInterrupt still stops
            self.on = False
            said = (str(e).strip().splitlines() or [""])[0]
            if isinstance(e, VaekitError):  # ours: one line that says what to do, kept whole
                log.warning("%s tracking is off for this run: %s", self.backend.title, said)
            else:  # a library's: its first line, bounded
                log.warning("%s tracking failed while %s (%s: %s); tracking is off for the rest of this run, which "
                            "goes on without it", self.backend.title, doing, type(e).__name__, said[:200])
            return None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config tables as dotted keys: {"model": {"latent_dim": [2]}} → {"model.latent_dim": [2]}."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def numbers(record: dict[str, Any], keep: Callable[[str], bool]) -> dict[str, float]:
    """The int and float values of `record` whose keys `keep` accepts (not bools, not None)."""
    return {k: float(v) for k, v in record.items()
            if keep(k) and isinstance(v, int | float) and not isinstance(v, bool)}


class EpochTracker:
    """`on_epoch(record, model, cfg)` for a tracker: the run starts (or continues) after the first epoch,
    with the resolved config as parameters; each epoch logs the record's "train/…" and "val/…" metrics at
    step = epoch; `close()` logs config.json and the run's pictures and ends the run."""

    def __init__(self, backend: Backend, run_dir: str | Path, saved: dict[str, str] | None):
        self.guard, self.run_dir, self.saved = Guard(backend), Path(run_dir).absolute(), saved
        self.started = self.completed = False

    def __call__(self, record: dict[str, Any], model, cfg) -> None:
        if not self.started:
            self.started = True
            self.guard.call("starting its run", self._start, cfg)
        epoch = int(record["epoch"])
        self.guard.call(f"logging epoch {epoch}", self.guard.backend.log_metrics,
                        numbers(record, lambda k: "/" in k), epoch)
        self.completed = epoch >= cfg.train.epochs

    def _start(self, cfg) -> None:
        backend = self.guard.backend
        kept = backend.start(self.run_dir, self.saved, True)
        if kept != self.saved:
            write_tracking(self.run_dir, kept)
        backend.log_params(flatten({**cfg.to_dict(), "versions": versions()}), self.saved is not None)

    def close(self) -> None:
        """After training, finished or stopped: the run's files, then the run's end. Never raises."""
        if not self.started or not self.guard.on:
            return
        with tempfile.TemporaryDirectory(prefix="vaekit-track-") as tmp:
            if self.guard.call("copying the run's files", stage_run_files, self.run_dir, Path(tmp)) is not None:
                self.guard.call("logging the run's files", self.guard.backend.log_files, Path(tmp))
        self.guard.call("ending its run", self.guard.backend.finish, self.completed)


def training_tracker(track: str | None, run_dir: str | Path) -> EpochTracker | None:
    """The tracker `train --track` asks for; without the flag, the one of RUN/tracking.json (a resumed
    run keeps being tracked where it was); None for none. Refuses, before anything trains, a tracker
    other than the run's and a tracker whose package is missing."""
    if track == "none":
        return None
    saved = read_tracking(Path(run_dir))
    name = track or (saved or {}).get("tracker", "none")
    if name == "none":
        return None
    if saved is not None and saved["tracker"] != name:
        raise VaekitError(f"--track {name}, but {Path(run_dir) / 'tracking.json'} says this run is tracked in "
                          f"{saved['tracker']}: pass --track {saved['tracker']} (or --track none), or remove the file "
                          f"to start a new tracked run")
    return EpochTracker(load_backend(name), run_dir, saved)


def each_epoch(*hooks: Callable[..., None] | None) -> Callable[..., None] | None:
    """One `on_epoch` calling every given hook in turn (None when none is given)."""
    given = [h for h in hooks if h is not None]
    if not given:
        return None

    def call(*args: Any) -> None:
        for hook in given:
            hook(*args)

    return call


def log_evaluation(run: str | Path, certificate: dict[str, Any], track: str = "auto") -> None:
    """`vaekit evaluate`: its numbers ("eval/SPLIT/log_likelihood", …, at the run's last epoch) and its JSON
    certificate (the metrics with their protocol, as `--json` prints them) into the run's tracked run,
    when RUN/tracking.json names one. Never raises: the evaluation is printed already."""
    run = Path(run)
    try:
        saved = read_tracking(run) if track != "none" else None
        backend = load_backend(saved["tracker"]) if saved is not None else None
    except VaekitError as e:
        log.warning("%s; the evaluation is not logged to the run's tracker", e)
        return
    if backend is None:
        return
    guard = Guard(backend)
    guard.call("continuing its run", backend.start, run.absolute(), saved, False)
    split = certificate.get("split", "test")
    nested = flatten({key: certificate[key] for key in ("sample_quality", "likelihood_learned") if key in certificate})
    scores = {f"eval/{split}/{k}": v for k, v in numbers({**certificate, **nested}, lambda k: True).items()}
    guard.call("logging the evaluation", backend.log_result, scores, last_epoch(run))
    with tempfile.TemporaryDirectory(prefix="vaekit-track-") as tmp:
        (Path(tmp) / f"evaluation-{split}.json").write_text(json.dumps(certificate, indent=2) + "\n")
        guard.call("logging the evaluation's certificate", backend.log_files, Path(tmp))
    guard.call("ending its run", backend.finish, None)


def last_epoch(run: Path) -> int:
    """The last epoch metrics.jsonl records (0 for none or an unreadable file): the step of an evaluation."""
    try:
        return int(([0] + [r.get("epoch", 0) for r in read_metrics(run)])[-1])
    except (VaekitError, OSError, TypeError, ValueError):
        return 0
