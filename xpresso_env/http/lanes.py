"""Routes that need no storage never wait behind routes that do (CONTRACT §16).

While the database hangs, every request that needs it holds a waitress thread until its bound
(``storage.statement_timeout_s``): with more such requests than threads, waitress's one queue
would make ``/api/v2/openapi.json``, the page and ``/metrics`` wait behind them. ``LaneDispatcher``
gives those routes threads of their own; ``StartupGate`` answers 503 for the others while
``serve`` waits for its storage, so a server started before its database is never silent.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from waitress.task import ThreadedTaskDispatcher

# Threads for the storage-free routes, beside server.threads: they answer in microseconds.
FREE_LANE_THREADS = 2


def storage_free(path: str) -> bool:
    """Whether a request for ``path`` is answered without storage (``/metrics`` reads its
    shared-state gauges only when storage answers at once: ``runtime.prometheus.StorageGauges``)."""
    return path in ("/", "/api/v2/openapi.json", "/metrics") or path.startswith("/ui/")


class LaneDispatcher:
    """waitress's task dispatcher (``create_server(_dispatcher=...)``) as two: a connection whose
    next request is for a storage-free route goes to the free lane's threads, the others to the
    ``server.threads`` of the main lane."""

    def __init__(self, free_threads: int = FREE_LANE_THREADS):
        self.main = ThreadedTaskDispatcher()
        self.free = ThreadedTaskDispatcher()
        self._free_threads = free_threads

    def set_thread_count(self, count: int) -> None:
        self.main.set_thread_count(count)
        self.free.set_thread_count(self._free_threads if count else 0)

    def add_task(self, task: Any) -> None:
        (self.free if _wants_free_lane(task) else self.main).add_task(task)

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        main = self.main.shutdown(cancel_pending, timeout)
        free = self.free.shutdown(cancel_pending, timeout)
        return main and free


def _wants_free_lane(task: Any) -> bool:
    # The task is waitress's channel: its first waiting request is the one served next.
    requests = getattr(task, "requests", None)
    if not requests:
        return False
    request = requests[0]
    return getattr(request, "command", None) in ("GET", "HEAD") and storage_free(getattr(request, "path", ""))


class StartupGate:
    """The WSGI app ``serve`` listens with: until ``open()``, storage-free routes are answered
    and every other one gets 503 ``{"detail"}`` saying why (the storage is not reachable yet)."""

    def __init__(self, app: Callable):
        self._app = app
        self._open = threading.Event()
        self.detail = "The server is starting: the storage is not reachable yet, try again later."

    def open(self) -> None:
        self._open.set()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self._open.is_set() or storage_free(environ.get("PATH_INFO", "")):
            return self._app(environ, start_response)
        body = json.dumps({"detail": self.detail}).encode()
        start_response("503 Service Unavailable", [("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(body))), ("Retry-After", "2")])
        return [body]
