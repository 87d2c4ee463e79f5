"""Progress reporting and cooperative cancellation for long-running engine calls.

Every long call takes ``progress: ProgressCallback | None`` (called with a fraction in [0, 1] and a short
message) and ``cancel: CancelCheck | None`` (returns True to stop). :class:`Monitor` bundles both and can
split the [0, 1] range between stages.
"""

from __future__ import annotations

from typing import Callable, Optional

from MMRegistrationLib.core.errors import Cancelled

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]


class Monitor:
    """Reports progress and raises :class:`Cancelled` when the user asked to stop.

    ``Monitor(progress, cancel).stage(0.2, 0.8)`` gives a child whose fractions 0..1 map to 0.2..0.8.
    """

    def __init__(
        self,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        start: float = 0.0,
        end: float = 1.0,
    ):
        self._progress = progress
        self._cancel = cancel
        self._start = start
        self._end = end

    @classmethod
    def wrap(cls, monitor_or_progress=None, cancel: Optional[CancelCheck] = None) -> "Monitor":
        """Accept a Monitor, a bare progress callback, or None."""
        if isinstance(monitor_or_progress, Monitor):
            return monitor_or_progress
        return cls(monitor_or_progress, cancel)

    def stage(self, start: float, end: float) -> "Monitor":
        span = self._end - self._start
        return Monitor(self._progress, self._cancel, self._start + span * start, self._start + span * end)

    def report(self, fraction: float, message: str = "") -> None:
        """Report ``fraction`` (0..1 of this stage) and check for cancellation."""
        self.check(message)
        if self._progress is not None:
            fraction = min(max(float(fraction), 0.0), 1.0)
            self._progress(self._start + (self._end - self._start) * fraction, message)

    def check(self, stage: str = "") -> None:
        """Raise :class:`Cancelled` if the cancel check says so."""
        if self._cancel is not None and self._cancel():
            raise Cancelled(stage)
