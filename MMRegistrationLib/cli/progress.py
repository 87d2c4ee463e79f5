"""Progress lines on stderr for the command line."""

from __future__ import annotations

import sys
import time


class ProgressPrinter:
    """A progress callback printing ``[ 42%] message`` at most every ``interval`` seconds (and on change)."""

    def __init__(self, quiet: bool = False, interval: float = 0.5):
        self.quiet = quiet
        self.interval = interval
        self._last = 0.0
        self._last_message = None

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if self.quiet or (now - self._last < self.interval and message == self._last_message):
            return
        self._last, self._last_message = now, message
        print(f"[{100 * fraction:5.1f}%] {message}", file=sys.stderr, flush=True)
