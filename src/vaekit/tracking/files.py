"""RUN/tracking.json (which tracker, which of its runs) and the copies of a run's files a tracker logs.

A run directory may come from someone else: tracking.json is read capped and checked field by field
(its store address is shown, never used: MLFLOW_TRACKING_URI or MLflow's default decides where vaekit
logs), written by rename, never through a link; a file is logged from a copy read without following
a link, so a `samples.png` that points at a secret or at /dev/zero is skipped with a warning.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
from pathlib import Path

from ..errors import VaekitError
from ..files import MAX_TEXT_BYTES, NOFOLLOW, atomic_write, json_loads, read_capped
from ..runs.checkpoint import CONFIG

log = logging.getLogger(__name__)
TRACKING = "tracking.json"
NAMES = ("mlflow", "wandb")
MAX_TRACKING_BYTES = 64 << 10  # a few ids: far beyond a real one
SAFE = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # a run id or a W&B project: no path, no URL


def read_tracking(run: Path) -> dict[str, str] | None:
    """The run's tracking.json as {"tracker", "run_id", …}, or None when there is none; a damaged one is one line."""
    path = Path(run) / TRACKING
    if path.is_symlink() and not path.exists():  # a link to no record: none (a new tracked run; written by rename)
        return None
    try:
        raw = read_capped(path, MAX_TRACKING_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise VaekitError(f"{path}: cannot read ({e.strerror})") from None
    try:
        saved = json_loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise VaekitError(f"{path}: not valid JSON; remove it to start a new tracked run") from None
    if not isinstance(saved, dict) or saved.get("tracker") not in NAMES:
        raise VaekitError(f"{path}: expected {{\"tracker\": one of {', '.join(NAMES)}, \"run_id\": …}}; "
                          "remove it to start a new tracked run")
    for key, value in (("run_id", saved.get("run_id")), ("project", saved.get("project", "vaekit"))):
        if not isinstance(value, str) or not SAFE.fullmatch(value):
            raise VaekitError(f"{path}: {key} {str(value)[:40]!r} is not an id (letters, digits, _ . -); "
                              "remove it to start a new tracked run")
    return {k: v for k, v in saved.items() if isinstance(v, str)}


def write_tracking(run: Path, kept: dict[str, str]) -> None:
    """tracking.json, by rename (a link there is replaced, its target never written)."""
    text = json.dumps(kept, indent=2) + "\n"
    atomic_write(Path(run) / TRACKING, lambda tmp: Path(tmp).write_text(text))


def stage_run_files(run: Path, dest: Path) -> list[str]:
    """Copy config.json and the run's pictures (*.png) into `dest`; return the names copied."""
    names = [CONFIG, *sorted(p.name for p in Path(run).glob("*.png"))]
    copied = []
    for name in names:
        data = read_own(Path(run) / name)
        if data is not None:
            (dest / name).write_bytes(data)
            copied.append(name)
    return copied


def read_own(path: Path, limit: int = MAX_TEXT_BYTES) -> bytes | None:
    """The bytes of the regular file `path` (not through a link, at most `limit`), or None with a warning."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        why = "a symbolic link" if e.errno == errno.ELOOP else e.strerror
        log.warning("%s: not logged to the tracker (%s)", path, why)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            why = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"{st.st_size:,} bytes"
            log.warning("%s: not logged to the tracker (%s)", path, why)
            return None
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit)
    finally:
        os.close(fd)
