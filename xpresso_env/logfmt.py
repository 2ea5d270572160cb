"""Log formats (``server.log_format``, CONTRACT section 10): ``text`` for people, ``json`` for
log shippers.

``json`` writes one object per line: ``ts`` (UTC, the wire format), ``level``, ``logger``,
``msg``, plus the fields a record carries in its ``fields`` attribute (the access log adds
``method``, ``path``, ``status``, ``ms``, ``user``, ``group``, ``request_id``) and ``exc`` with
the traceback when there is one. ``json.dumps`` escapes every control character and everything
beyond ASCII, so no value a client chose can break a line or the encoding of the stream.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, Optional, TextIO

from .timeutil import WIRE_FORMAT

FIELDS = "fields"  # LogRecord attribute: a dict of structured values (logger.info(..., extra={FIELDS: {...}}))
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_OWNED = "_xpresso_handler"  # marks the root handler configure_logging added


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).strftime(WIRE_FORMAT),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(str(key), value)  # the four keys above are never overwritten
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
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
    handler = mine[0] if mine else logging.StreamHandler(stream or sys.stderr)
    setattr(handler, _OWNED, True)
    handler.setFormatter(formatter_for(log_format))
    if not mine:
        root.addHandler(handler)
    root.setLevel(level)
