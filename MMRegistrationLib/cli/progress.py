"""Progress on stderr (bars on a terminal, sparse lines in a log), and the options every command that runs and
writes a result shares."""

from __future__ import annotations

import sys
import time
import weakref
from typing import Optional


STAGE_SEPARATOR = ": "
LOG_INTERVAL_S = 5.0
_OPEN_PRINTERS: "weakref.WeakSet" = weakref.WeakSet()


def split_message(message: str) -> tuple:
    """``"SINR: iteration 12: loss 0.3"`` -> ``("SINR", "iteration 12: loss 0.3")``; a message without ``": "`` is a
    stage of its own with no detail."""
    stage, _, detail = message.partition(STAGE_SEPARATOR)
    return stage.strip(), detail.strip()


class ProgressPrinter:
    """The command line's progress callback (``fraction`` in [0, 1] of the whole run, ``"stage: detail"``).

    On a terminal: one tqdm bar per stage, with the detail (the current loss) after it. In a log or a pipe: a line
    ``[ 42%] stage: detail`` when a stage starts and then at most every ``interval`` seconds. ``quiet``: nothing.
    """

    def __init__(self, quiet: bool = False, interval: float = LOG_INTERVAL_S, stream=None, bars: Optional[bool] = None):
        self.quiet = quiet
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.bars = bool(bars if bars is not None else _is_terminal(self.stream))
        self._stage: Optional[str] = None
        self._last = 0.0
        self._bar = None
        _OPEN_PRINTERS.add(self)

    def __call__(self, fraction: float, message: str) -> None:
        if self.quiet:
            return
        stage, detail = split_message(message)
        percent = 100.0 * min(max(float(fraction), 0.0), 1.0)
        if self.bars:
            self._show_bar(stage, detail, percent)
        else:
            self._print_line(stage, message, percent)

    def _show_bar(self, stage: str, detail: str, percent: float) -> None:
        from tqdm import tqdm

        if stage != self._stage or self._bar is None:
            self.close()
            self._stage = stage
            columns, rows = _terminal_size()
            self._bar = tqdm(total=100.0, desc=stage, file=self.stream, leave=True, ncols=columns, nrows=rows,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
        self._bar.n = percent
        self._bar.set_postfix_str(detail, refresh=False)
        self._bar.refresh()
        if percent >= 100.0:
            self.close()

    def _print_line(self, stage: str, message: str, percent: float) -> None:
        now = time.monotonic()
        if stage == self._stage and now - self._last < self.interval and percent < 100.0:
            return
        self._stage, self._last = stage, now
        print(f"[{percent:5.1f}%] {message}", file=self.stream, flush=True)

    def close(self) -> None:
        """End the current bar (its line stays on the terminal)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


def close_progress() -> None:
    """Close every open progress bar (the command ended, failed or was interrupted)."""
    for printer in list(_OPEN_PRINTERS):
        printer.close()


def _terminal_size() -> tuple:
    """``(columns, rows)`` of the terminal; ``(100, 24)`` where it says 0 (``script``, some IDE consoles), where tqdm
    would otherwise print an empty bar."""
    import shutil

    size = shutil.get_terminal_size((100, 24))
    return (size.columns if size.columns >= 40 else 100), (size.lines if size.lines >= 2 else 24)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def add_output_options(parser, what: str = "result") -> None:
    """``--out`` (a folder written whole or not at all) and ``--overwrite``."""
    parser.add_argument("--out", required=True, help=f"output folder (new, or an earlier {what} with --overwrite; "
                        "written whole or not at all)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier result of mmreg in --out (any "
                        "other existing folder, or one holding an input, is refused)")


def add_run_options(parser) -> None:
    """``--seed``, ``--device``, ``--quiet``, ``--threads``, ``--out``, ``--overwrite``."""
    from MMRegistrationLib.core.device import DEVICE_CHOICES

    parser.add_argument("--seed", type=int, default=0, help="random seed (CPU runs are deterministic)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto = cuda, then mps, then cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_threads_option(parser)
    add_output_options(parser)


def add_threads_option(parser) -> None:
    """``--threads N`` (the engine's thread policy when absent: see MMRegistrationLib.core.threads)."""
    parser.add_argument("--threads", type=int, help="CPU threads for torch and SimpleITK (default: MMREG_THREADS, "
                        "else OMP_NUM_THREADS/MKL_NUM_THREADS if set, else 1 for usual image sizes and more only for "
                        "very large images with idle cores; extra threads slow runs down beside other busy processes)")
