"""The circuit breaker that keeps a database outage from costing every request a wait."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("xpresso_env.storage.postgres")


class CircuitBreaker:
    """Fail fast while the database is down. Closed: every attempt goes ahead. The first failure
    (``failed()``) opens it: every attempt is refused at once, and a background thread runs
    ``check`` every ``interval_s`` until it returns without raising, which closes it. No request
    thread ever waits to find out whether the database is back. Any success (``succeeded()``: a
    request that got its connection before the outage was noticed) closes it as well."""

    def __init__(self, interval_s: float, check: Callable[[], None]):
        self._interval_s = interval_s
        self._check = check
        self._lock = threading.Lock()
        self._open = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def admit(self) -> bool:
        """Whether an attempt may go ahead now."""
        return not self._open

    def succeeded(self) -> None:
        if self._open:
            with self._lock:
                was_open, self._open = self._open, False
            if was_open:
                log.info("PostgreSQL reachable again")

    def failed(self, why: str = "") -> None:
        with self._lock:
            if self._open or self._stop.is_set():
                return
            self._open = True
            if self._thread is None:  # else the check loop is still running: it goes on
                self._thread = threading.Thread(target=self._recover, name="xpresso-postgres-check", daemon=True)
                self._thread.start()
        log.warning("PostgreSQL unreachable%s: requests that need it answer 503; checking every %g s",
                    f" ({why})" if why else "", self._interval_s)

    def _recover(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._check()
                reached = True
            except Exception:  # noqa: BLE001 -- whatever the cause, still down: check again in interval_s
                reached = False
            with self._lock:
                if reached or not self._open:
                    was_open, self._open = self._open, False
                    self._thread = None
                    break
        else:
            return
        if was_open:
            log.info("PostgreSQL reachable again")

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(10)
