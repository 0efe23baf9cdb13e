"""Feedback on long work: a tqdm bar (rate, time left) on a terminal, plain periodic lines elsewhere
(logs, CI, a pipe), nothing with `enabled=False` (the CLI's `--quiet`, a Python call's `progress=False`)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

PLAIN_EVERY_S = 10.0  # seconds between plain lines when stderr is not a terminal


class Progress:
    """Counts `total` units of work (examples, samples, steps). `update(n, **shown)` adds n done and
    shows the given numbers beside the count."""

    def __init__(self, total: int, desc: str, unit: str = "ex", enabled: bool = True, stream: TextIO | None = None,
                 every_s: float | None = None):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit = total, desc, unit
        self.every_s = PLAIN_EVERY_S if every_s is None else every_s
        self.done, self.t0 = 0, time.monotonic()
        self.last = self.t0
        terminal = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=self.stream, leave=False,
                        dynamic_ncols=True, mininterval=0.1) if terminal else None
        self.plain = enabled and not terminal

    def update(self, n: int, **shown: float) -> None:
        self.done += n
        if self.bar is not None:
            if shown:
                self.bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)
            self.bar.update(n)
        elif self.plain:
            now = time.monotonic()
            if now - self.last >= self.every_s and self.done < self.total:
                self.last = now
                self.stream.write(self.line(now, shown) + "\n")
                self.stream.flush()

    def line(self, now: float, shown: dict[str, float]) -> str:
        rate = self.done / max(now - self.t0, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        numbers = "".join(f"  {k} {v:.3f}" for k, v in shown.items())
        return (f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / max(self.total, 1):.0f}%, "
                f"{rate:,.0f} {self.unit}/s, {left:.0f} s left){numbers}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:  # noqa: PYI034 - not subclassed
        return self

    def __exit__(self, *exc) -> None:
        self.close()
