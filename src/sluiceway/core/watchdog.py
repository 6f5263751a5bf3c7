"""A run's deadline: interrupt the engine once it passes (see `core/retry.py`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Watchdog:
    """Calls `interrupt` once at `deadline` (time.monotonic()), unless cancelled first."""

    def __init__(self, deadline: float | None, interrupt: Callable[[], None]) -> None:
        self.deadline = deadline
        self.has_fired = False
        self._interrupt = interrupt
        self._timer: threading.Timer | None = None
        if deadline is not None:
            self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def is_past(self) -> bool:
        """True once the deadline has passed."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        self.has_fired = True
        try:
            self._interrupt()
        except Exception:
            return
