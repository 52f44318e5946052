"""Progress of a long feature pass (minutes of Inception on a CPU): a tqdm bar with an ETA on a
terminal, and elsewhere (a batch job's log) one plain line per minute, so no long step is silent."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from tqdm import tqdm

PLAIN_EVERY_S = 60.0


class Progress:
    """``with Progress(total, desc) as p: ... p.update(n)``; the bar goes away when done."""

    def __init__(self, total: int, desc: str, unit: str = "image") -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=not self.tty)
        self.done, self.started = 0, time.monotonic()
        self.last_line = self.started

    def update(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if not self.tty and now - self.last_line >= PLAIN_EVERY_S and self.done < self.total:
            self.last_line = now
            print(self._line(now - self.started), file=sys.stderr, flush=True)

    def _line(self, elapsed: float) -> str:
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        so_far = f"{self.done}/{self.total} {self.unit}s, {elapsed / 60:.1f} min so far"
        return f"{self.desc}: {so_far}, about {left / 60:.1f} min left"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.bar.close()
