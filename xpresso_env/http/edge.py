"""The outermost WSGI layer: every answer the app gives passes here, cache hits included.

For each request it picks the request id (``api/request_id.py``) and puts it on the answer as
``X-Request-Id`` (and in the environ, for the resources, and in ``logfmt.REQUEST_ID`` while the
request is handled, for the log lines written meanwhile), counts the answer in the HTTP metrics
under its route template (``ROUTE_KEY``: falcon's matched template, or the one the response
cache's entry remembers; ``unmatched`` when no route matched, never the raw path), and hands the
access-log line to the access log's queue. Should the app ever raise instead of answering, the
edge answers the 500 itself, so that answer carries its request id too.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Iterable, Optional, Protocol

from ..runtime.logfmt import REQUEST_ID
from .access_log import AccessLog, escape
from .request import GROUP_KEY, REQUEST_ID_KEY, ROUTE_KEY, USER_KEY
from .request_id import ENVIRON_HEADER, HEADER, NewId, request_id_for

log = logging.getLogger("xpresso_env.api")

_INTERNAL_ERROR = json.dumps({"detail": "Internal server error."}).encode()


class HttpMetrics(Protocol):
    """What the edge reports to (``PrometheusMetrics`` implements it)."""

    def request_finished(self, method: str, route: Optional[str], status: str, seconds: float) -> None:
        ...


class Edge:
    def __init__(self, app: Callable, metrics: HttpMetrics, access_log: Optional[AccessLog], new_id: NewId):
        self._app = app
        self._metrics = metrics
        self._log = access_log
        self._new_id = new_id

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = request_id_for(environ.get(ENVIRON_HEADER), self._new_id)
        environ[REQUEST_ID_KEY] = request_id
        token = REQUEST_ID.set(request_id)  # every line logged while this request is handled carries it
        try:
            return self._handle(environ, start_response, request_id, started)
        finally:
            REQUEST_ID.reset(token)

    def _handle(self, environ: dict, start_response: Callable, request_id: str, started: float) -> Iterable[bytes]:
        seen: list[str] = []

        def respond(status: str, headers: list, exc_info: Any = None) -> Callable:
            seen.append(status)
            headers.append((HEADER, request_id))
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        try:
            result = self._app(environ, respond)
        except Exception:
            if seen:  # the answer has begun: only the server can end it now
                raise
            log.exception("unexpected error on %s %s", environ.get("REQUEST_METHOD", "-"),
                          escape(environ.get("PATH_INFO", "")))
            respond("500 Internal Server Error", [("Content-Type", "application/json"),
                                                  ("Content-Length", str(len(_INTERNAL_ERROR)))])
            result = [_INTERNAL_ERROR]
        seconds = time.perf_counter() - started
        method = environ.get("REQUEST_METHOD", "-")
        status = seen[-1][:3] if seen else "-"
        self._metrics.request_finished(method, environ.get(ROUTE_KEY), status, seconds)
        if self._log is not None:
            self._log.record(method, environ.get("PATH_INFO", ""), status, seconds * 1000,
                             environ.get(USER_KEY, "-"), environ.get(GROUP_KEY, "-"), request_id)
        return result
