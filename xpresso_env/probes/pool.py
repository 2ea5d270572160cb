"""The probe threads: ``probes.concurrency`` threads fed from one queue, off the request threads."""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Optional

log = logging.getLogger("xpresso_env.probes")


class ProbePool:
    """``size`` probe threads fed from one queue: ThreadPoolExecutor's work, without a Future, a
    work item, a Condition and a semaphore per probe (a visible share of the steady state's CPU at
    hundreds of probes a second). ``shutdown`` drops the jobs not started (their claims expire);
    running probes finish, bounded by ``timeout_s``, and their threads end."""

    def __init__(self, size: int, name: str):
        self._queue: "queue.SimpleQueue[Optional[tuple[Any, tuple]]]" = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Any, *args: Any) -> None:
        self._queue.put((fn, args))

    def shutdown(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._closed:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # the scheduler's _run catches the prober's errors; this is the pool's last word
                log.exception("probe thread")
