"""Progress for long work (seeding, snapshots, benchmarks), the one way Simpul shows it.

On a terminal a rich progress bar with rate and ETA; elsewhere (CI, logs, pipes) a plain line
every few seconds with the same facts, so long runs never look hung and logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass
class Tracker:
    """Counts work done towards a total; ``advance`` is cheap enough for per-batch calls."""

    description: str
    total: int | None
    _advance: "callable[[int], None]" = field(repr=False)  # type: ignore[valid-type]
    done: int = 0

    def advance(self, n: int = 1) -> None:
        """Record ``n`` more units of work done."""
        self.done += n
        self._advance(n)


class _PlainLines:
    """Periodic lines with rate and ETA, for output that is not a terminal."""

    def __init__(self, description: str, total: int | None, every_s: float, unit: str) -> None:
        self.description, self.total, self.every_s, self.unit = description, total, every_s, unit
        self.start = self.last = time.monotonic()
        self.done = 0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.line(now)

    def line(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            share = f"{self.done:,}/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
            tail = f"done in {elapsed:.1f}s" if final else f"ETA {eta:.0f}s"
        else:
            share = f"{self.done:,} {self.unit}"
            tail = f"in {elapsed:.1f}s"
        print(f"{self.description}: {share}, {rate:,.0f} {self.unit}/s, {tail}", file=sys.stderr, flush=True)


@contextmanager
def progress(description: str, total: int | None, unit: str = "rows", every_s: float = 5.0) -> Iterator[Tracker]:
    """Show progress of ``total`` units of work while the block runs."""
    if sys.stderr.isatty():
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task(description, total=total, rate="")
            start = time.monotonic()
            tracker = Tracker(description, total, lambda n: None)

            def advance(n: int) -> None:
                rate = tracker.done / max(time.monotonic() - start, 1e-9)
                bar.update(task, advance=n, rate=f"{rate:,.0f} {unit}/s")

            tracker._advance = advance
            yield tracker
    else:
        lines = _PlainLines(description, total, every_s, unit)
        tracker = Tracker(description, total, lines.advance)
        yield tracker
        lines.line(time.monotonic(), final=True)
