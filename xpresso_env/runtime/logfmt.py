"""Log formats (``server.log_format``, CONTRACT section 10): ``text`` for people, ``json`` for
log shippers.

``json`` writes one object per line: ``ts`` (UTC, the wire format), ``level``, ``logger``,
``msg``, plus the fields a record carries in its ``fields`` attribute (the access log adds
``method``, ``path``, ``status``, ``ms``, ``user``, ``group``, ``request_id``) and ``exc`` with
the traceback when there is one. A line logged while a request is handled carries that request's
``request_id`` too (:data:`REQUEST_ID`, set by the HTTP edge), so a 403's reason or a 503's cause
can be joined to its access line. ``json.dumps`` escapes every control character and everything
beyond ASCII, so no value a client chose can break a line or the encoding of the stream.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Optional, Sequence, TextIO

from ..core.timeutil import WIRE_FORMAT

FIELDS = "fields"  # LogRecord attribute: a dict of structured values (logger.info(..., extra={FIELDS: {...}}))
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_OWNED = "_xpresso_handler"  # marks the root handler configure_logging added
# The id of the request the current thread handles (None outside one): the edge sets it for the
# duration of each request (http/edge.py), and the json format adds it to every line logged meanwhile.
REQUEST_ID: ContextVar[Optional[str]] = ContextVar("xpresso_request_id", default=None)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``. ``line`` renders the same line from plain values, without a LogRecord:
    the access log writes its lines in batches that way (a record each cost more than the
    request it described)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second: tuple[int, str] = (-1, "")  # the last second's local time, formatted

    def line(self, created: float, level: str, name: str, message: str, fields: Optional[dict] = None) -> str:
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime(self.default_time_format, self.converter(second)))
            self._second = cached
        return f"{cached[1]},{int((created - second) * 1000):03d} {level} {name}: {message}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def line(self, created: float, level: str, name: str, message: str, fields: Optional[dict] = None,
             extra: Optional[dict] = None) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(created, timezone.utc).strftime(WIRE_FORMAT),
            "level": level,
            "logger": name,
            "msg": message,
        }
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(str(key), value)  # the four keys above are never overwritten
        if extra:
            out.update(extra)
        return json.dumps(out, default=str)

    def format(self, record: logging.LogRecord) -> str:
        extra: dict[str, str] = {}
        if record.exc_info:
            extra["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            extra["exc"] = record.exc_text
        if record.stack_info:
            extra["stack"] = self.formatStack(record.stack_info)
        fields = getattr(record, FIELDS, None)
        request_id = REQUEST_ID.get()
        if request_id is not None and not (isinstance(fields, dict) and "request_id" in fields):
            extra["request_id"] = request_id
        return self.line(record.created, record.levelname, record.name, record.getMessage(), fields, extra)


def formatter_for(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {log_format!r}; use one of {', '.join(LOG_FORMATS)}")


def configure_logging(level: str, log_format: str = "text", stream: Optional[TextIO] = None) -> None:
    """The root logger writes ``level`` and above to ``stream`` (standard error) in ``log_format``.

    Like ``logging.basicConfig``, it leaves alone a root logger that someone else already gave
    handlers (a test runner, an application embedding the service); unlike it, calling it again
    changes the format of the handler it added itself (the CLI sets up logging before it has read
    the settings that name the format).
    """
    root = logging.getLogger()
    mine = [h for h in root.handlers if getattr(h, _OWNED, False)]
    if root.handlers and not mine:
        return
    if mine:
        mine[0].setFormatter(formatter_for(log_format))
    else:
        root.addHandler(owned_handler(stream or sys.stderr, log_format))
    root.setLevel(level)


def owned_handler(stream: TextIO, log_format: str) -> logging.StreamHandler:
    """The stream handler ``configure_logging`` adds: marked as ours, so ``plain_handlers`` knows it."""
    handler = logging.StreamHandler(stream)
    setattr(handler, _OWNED, True)
    handler.setFormatter(formatter_for(log_format))
    return handler


def plain_handlers(logger: logging.Logger, level: int) -> Optional[list[logging.StreamHandler]]:
    """The handlers a record of ``level`` from ``logger`` reaches, when each is the stream handler
    ``configure_logging`` added and no filter is on the way (the case of ``serve``); None when
    anything else would see the record, which then must go through ``logging`` record by record."""
    found: list[logging.StreamHandler] = []
    current: Optional[logging.Logger] = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if not getattr(handler, _OWNED, False) or handler.filters or not isinstance(
                    handler.formatter, (TextFormatter, JsonFormatter)):
                return None
            if level >= handler.level:
                found.append(handler)  # type: ignore[arg-type]
        current = current.parent if current.propagate else None
    return found


def write_lines(handler: logging.StreamHandler, lines: Sequence[str]) -> None:
    """``lines`` (already formatted) to the handler's stream in one write and one flush."""
    if not lines:
        return
    text = handler.terminator.join(lines) + handler.terminator
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.flush()
    finally:
        handler.release()
