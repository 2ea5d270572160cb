"""The access log: one line per request (method, path, status, ms, user, group, request id),
written off the request threads.

A request thread only appends a tuple to a queue; a writer (``writer``, a background loop the app
starts) turns the queued tuples into lines every ``interval_s``, so the logging handlers' lock and
their write calls never hold a request up. When the ``xpresso_env.access`` logger ends only in the
handler ``serve`` configured (``logfmt.plain_handlers``), a batch is formatted by that handler's
formatter from plain values and written in one call: a ``LogRecord`` and a write per line cost the
server's one shared interpreter more than a cached answer did (benchmarks/README.md). Otherwise (a
test's handler, an embedding application's configuration) each line goes through ``logging`` as a
record. Values a client chose (path, group) are escaped, so a ``%0A`` in a path cannot forge a
second line. Each record also carries the values as fields (``logfmt.FIELDS``) for the JSON log
format, which escapes by itself. The request passes through ``http/edge.py``, which calls ``record``.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Callable

from ..runtime.logfmt import FIELDS, JsonFormatter, plain_handlers, write_lines
from ..runtime.loop import Loop

ACCESS_LOGGER = "xpresso_env.access"
FORMAT = "%s %s %s %.1fms user=%s group=%s request_id=%s"

# C0 controls, DEL and the C1 range written as \xNN; a backslash doubled so escapes stay unambiguous.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}
_ESCAPES[ord("\\")] = "\\\\"


def escape(value: str) -> str:
    """``value`` with control characters escaped: a log line stays one line."""
    if value.isprintable() and "\\" not in value:  # the usual case: no copy
        return value
    return value.translate(_ESCAPES)


class AccessLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 0.05, wall_clock: Callable[[], float] = time.time):
        self._logger = logger
        self._wall_clock = wall_clock
        self._queue: collections.deque[tuple] = collections.deque()  # append/popleft are thread-safe
        # Stopped, it writes what the requests queued meanwhile. A broken handler is logged by the
        # loop and never ends the writer.
        self.writer = Loop("xpresso-access-log", self.flush, interval_s, logger=logging.getLogger("xpresso_env"),
                           wait_first=True, on_stop=self.flush)

    def record(self, method: str, path: str, status: str, ms: float, user: str, group: str,
               request_id: str = "-") -> None:
        self._queue.append((self._wall_clock(), method, path, status, ms, user, group, request_id))
        if not self.writer.running:  # not started (a tool or a test without a writer): write now
            self.flush()

    def flush(self) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            self._queue.clear()
            return
        batch = []
        while self._queue:
            batch.append(self._queue.popleft())
        handlers = plain_handlers(self._logger, logging.INFO)
        if handlers is None:
            for entry in batch:
                self._handle(entry)
            return
        name = self._logger.name
        for handler in handlers:
            line = handler.formatter.line  # type: ignore[union-attr]
            fields = _fields if isinstance(handler.formatter, JsonFormatter) else _no_fields
            write_lines(handler, [line(entry[0], "INFO", name, _message(entry), fields(entry)) for entry in batch])

    def _handle(self, entry: tuple) -> None:
        record = self._logger.makeRecord(self._logger.name, logging.INFO, __file__, 0, "%s", (_message(entry),),
                                         None, extra={FIELDS: _fields(entry)})
        record.created = entry[0]
        record.msecs = (entry[0] - int(entry[0])) * 1000
        self._logger.handle(record)


def _message(entry: tuple) -> str:
    _, method, path, status, ms, user, group, request_id = entry
    return FORMAT % (escape(method), escape(path), status, ms, escape(user), escape(group), escape(request_id))


def _fields(entry: tuple) -> dict:
    _, method, path, status, ms, user, group, request_id = entry
    return {"method": method, "path": path, "status": int(status) if status.isdigit() else status,
            "ms": round(ms, 1), "user": user, "group": group, "request_id": request_id}


def _no_fields(entry: tuple) -> None:
    return None
