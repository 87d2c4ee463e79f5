"""Progress lines on stderr, and the options every command that runs and writes a result shares."""

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


def add_output_options(parser, what: str = "result") -> None:
    """``--out`` (a folder written whole or not at all) and ``--overwrite``."""
    parser.add_argument("--out", required=True, help=f"output folder (new, or an earlier {what} with --overwrite; "
                        "written whole or not at all)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier result of mmreg in --out (any "
                        "other existing folder, or one holding an input, is refused)")


def add_run_options(parser) -> None:
    """``--seed``, ``--device``, ``--quiet``, ``--out``, ``--overwrite``."""
    from MMRegistrationLib.core.device import DEVICE_CHOICES

    parser.add_argument("--seed", type=int, default=0, help="random seed (CPU runs are deterministic)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto = cuda, then mps, then cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_output_options(parser)
