"""How a running build is really stopped (cancel or timeout): by closing its connection.

The build runs as one streaming HTTP request (``POST /build``). Closing that connection makes
the daemon cancel the request's context, and the classic builder then kills and removes the
container of the running ``RUN`` step (tested: a ``RUN sleep 30`` build stops within a second and
no container is left). A watcher thread does the closing, by shutting down the response's
socket, because the reading thread is blocked in a read while a quiet step runs. Saving the
image (``GET /images/{name}/get``) and the push are stopped the same way. The SDK builds without
BuildKit (it never asks for builder version 2), which is what makes this hold.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Optional

from xpresso_env.builds.sdk.builder import BuildCancelled, BuildFailed, BuildTimedOut

WATCH_POLL_S = 0.05


class Abort:
    """Watches ``cancel`` and the deadline; when either fires, shuts down the socket of the
    streaming response in progress so the blocked reader returns and the daemon stops."""

    def __init__(self, cancel: threading.Event, deadline: float):
        self.cancel, self.deadline = cancel, deadline
        self.reason: Optional[BuildFailed] = None
        self._response: Any = None
        self._on_stop: list[Callable[[], Any]] = []  # more to stop than the response (git archive of the context)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="docker-build-watch", daemon=True)

    def __enter__(self) -> "Abort":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        """A requests response hook: remembers the latest response (headers received)."""
        with self._lock:
            self._response = response
            if self.reason is not None:
                shutdown(response)
        return response

    def on_stop(self, stop: Callable[[], Any]) -> None:
        """Call ``stop()`` too when the build is stopped (at once if it already was)."""
        with self._lock:
            self._on_stop.append(stop)
            if self.reason is None:
                return
        stop()

    def check(self) -> None:
        if self.reason is not None:
            raise self.reason

    def _watch(self) -> None:
        while not self._done.wait(WATCH_POLL_S):
            if self.cancel.is_set():
                reason: BuildFailed = BuildCancelled("cancelled")
            elif time.monotonic() >= self.deadline:
                reason = BuildTimedOut("timed out")
            else:
                continue
            with self._lock:
                self.reason = reason
                if self._response is not None:
                    shutdown(self._response)
                stops = list(self._on_stop)
            for stop in stops:
                stop()
            return


def shutdown(response: Any) -> None:
    """Shut down the socket under a streaming ``requests`` response (the reader then returns)."""
    raw = getattr(response, "raw", None)
    conn = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is None:  # urllib3 without .connection: reach the socket through the file object
        sock = getattr(getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
