"""The circuit breaker that keeps a database outage from costing every request a wait."""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional


class CircuitBreaker:
    """Fail fast while the database is down. Closed: every attempt goes ahead. ``failed()`` opens
    it: attempts are refused for ``interval_s``; then one attempt goes ahead (half-open) while the
    others are still refused, and its outcome closes the breaker or opens it again."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: Optional[float] = None  # None: closed
        self._trying = False  # the half-open attempt is under way

    def admit(self) -> bool:
        """Whether an attempt may go ahead now; each admitted one must end in succeeded() or failed()."""
        if self._open_until is None:  # the common case, without the lock
            return True
        with self._lock:
            if self._open_until is None:
                return True
            if self._trying or self._clock() < self._open_until:
                return False
            self._trying = True
            return True

    def succeeded(self) -> None:
        if self._open_until is None and not self._trying:
            return
        with self._lock:
            self._open_until = None
            self._trying = False

    def failed(self) -> None:
        with self._lock:
            self._open_until = self._clock() + self._interval_s
            self._trying = False
