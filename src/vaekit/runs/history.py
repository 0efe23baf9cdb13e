"""metrics.jsonl, the run's history: one JSON line per epoch, appended whole (`rundir.append_line`), read
back tolerating a torn last line, and cut back to the epochs a checkpoint covers on resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import VaekitError
from ..files import MAX_METRICS_BYTES, append_line, atomic_write, json_loads, read_capped
from ..parts.registry import MAX_COUNT

log = logging.getLogger(__name__)
METRICS = "metrics.jsonl"
MAX_INT = 2**63 - 1  # an integer field (the step): what torch counts in


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    """One line per epoch, added whole or not at all (`rundir.append_line`)."""
    append_line(Path(run) / METRICS, json.dumps(record))


def truncate_metrics(run: Path, epochs: int) -> list[dict[str, Any]]:
    """Keep the lines of epochs ≤ `epochs` (those a checkpoint covers), one an epoch (the last written: a line
    repeated by hand is not kept twice), and return them."""
    last = {r.get("epoch", 0): r for r in read_metrics(run) if r.get("epoch", 0) <= epochs}
    kept = [last[epoch] for epoch in sorted(last)]
    if len(kept) < epochs:  # lost or cut by hand: the curves and the report show what is left
        log.warning("%s: holds %d of the %d epochs trained so far; the others' lines are lost (the run goes on)",
                    Path(run) / METRICS, len(kept), epochs)
    text = "".join(json.dumps(r) + "\n" for r in kept)
    atomic_write(Path(run) / METRICS, lambda tmp: Path(tmp).write_text(text))
    return kept


MAX_RECORDS = 100_000  # epochs of one run: far beyond any real one (a record is ~1 KB of text, ~20 KB as a dict)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl. A torn last line (a crash or a full disk mid-append, from a
    writer older than `append_line`) is dropped with a warning; `--resume` rewrites the file without
    it. A damaged line before the last is refused, naming it."""
    path = Path(run) / METRICS
    try:
        text = read_capped(path, MAX_METRICS_BYTES).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise VaekitError(f"{path}: cannot read ({e.strerror})") from None
    lines = text.split("\n")
    if len(lines) > MAX_RECORDS + 1:  # each record becomes a dict of ~20× its bytes: bounded before any is parsed
        raise VaekitError(f"{path}: {len(lines) - 1:,} lines, more than the {MAX_RECORDS:,} epochs vaekit reads of it")
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json_loads(line)
        except ValueError as e:
            if i == len(lines):  # no newline after it: the write never finished
                log.warning("%s: dropping a torn last line (%d bytes)", path, len(line))
                break
            raise VaekitError(f"{path}: line {i} is not a metrics record ({e})") from None
        if not isinstance(record, dict):
            raise VaekitError(f"{path}: line {i} is not a metrics record (not a JSON object)")
        check_record(record, f"{path}: line {i}")
        records.append(record)
    return records


def check_record(record: dict[str, Any], where: str) -> None:
    """A record as the trainer writes it: `epoch` a whole number from 1 to MAX_COUNT, every other field a number
    (NaN and ±Infinity included: a diverged epoch's bound is one). A crafted line is refused naming its field, before
    a plot takes 1e308 epochs or a dict for a curve."""
    if "epoch" not in record:
        raise VaekitError(f"{where}: no epoch field (every record the trainer writes has one)")
    epoch = record["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= MAX_COUNT:
        raise VaekitError(f"{where}: epoch must be a whole number from 1 to {MAX_COUNT}, got {json.dumps(epoch)[:40]}")
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise VaekitError(f"{where}: field {key[:80]!r} must be a number, got {json.dumps(value)[:40]}")
        if isinstance(value, int) and abs(value) > MAX_INT:  # JSON holds integers of 4000 digits
            raise VaekitError(f"{where}: field {key[:80]!r} = {str(value)[:20]}… is out of range (at most {MAX_INT})")
