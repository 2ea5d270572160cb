"""The one place where errors become HTTP answers (Django REST Framework's shapes)."""
from __future__ import annotations

import json
import logging

import falcon

from ..core import errors as e
from .access_log import escape

log = logging.getLogger("xpresso_env.api")

# Most specific first: the first class the error is an instance of decides the status.
STATUS_BY_ERROR: tuple[tuple[type[e.XpressoError], str], ...] = (
    (e.NotAuthenticated, falcon.HTTP_401),
    (e.PermissionDenied, falcon.HTTP_403),
    (e.NotFound, falcon.HTTP_404),
    (e.Conflict, falcon.HTTP_409),
    (e.PayloadTooLarge, falcon.HTTP_413),
    (e.UnsupportedMediaType, falcon.HTTP_415),
    (e.Unprocessable, falcon.HTTP_422),  # an Idempotency-Key reused with another body
    (e.QueueFull, falcon.HTTP_429),  # builds.max_queued_per_group; Retry-After from the error
    (e.TooManyRequests, falcon.HTTP_429),
    (e.ServiceUnavailable, falcon.HTTP_503),
    (e.StorageError, falcon.HTTP_503),
    (e.ConfigError, falcon.HTTP_503),
    (e.BadRequest, falcon.HTTP_400),
)


def status_for(error: e.XpressoError) -> str:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return falcon.HTTP_400


def body_for(error: e.XpressoError) -> dict:
    if isinstance(error, e.ValidationError) and error.fields:
        return error.fields
    return {"detail": error.detail}


def _send(resp: falcon.Response, status: str, body: dict) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(body)


def error_answer(method: str, path: str, error: e.XpressoError) -> tuple[str, list[tuple[str, str]], dict]:
    """The answer to a domain error: status, extra headers and body (and the operator's log line).
    Used by falcon's handler and by the response cache's frontend, which answers some reads itself."""
    status = status_for(error)
    headers = []
    if status == falcon.HTTP_401:
        headers.append(("WWW-Authenticate", "Jwt"))
    if isinstance(error, e.PermissionDenied) and error.why:
        # The client sees DRF's words; the operator learns why (permission, group, user).
        log.warning("403 %s %s: %s", method, escape(path), escape(error.why))
    if status in (falcon.HTTP_503, falcon.HTTP_429):
        log.warning("%s %s: %s", method, escape(path), error.detail)
        headers.append(("Retry-After", str(getattr(error, "retry_after_s", 5))))
    return status, headers, body_for(error)


def handle_domain_error(req: falcon.Request, resp: falcon.Response, error: e.XpressoError, params) -> None:
    status, headers, body = error_answer(req.method, req.path, error)
    for name, value in headers:
        resp.set_header(name, value)
    _send(resp, status, body)


def handle_http_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError, params) -> None:
    """Errors falcon raises itself (no route, wrong method...), in the same shape."""
    code = error.status_code
    if code == 404:
        detail = "Not Found"
    elif code == 405:
        detail = f'Method "{req.method}" not allowed.'
    else:
        detail = error.description or error.title or "Error."
    for name, value in (error.headers or {}).items():
        resp.set_header(name, value)
    _send(resp, error.status, {"detail": detail})


def handle_unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params) -> None:
    if isinstance(error, falcon.HTTPError):
        return handle_http_error(req, resp, error, params)
    log.exception("unexpected error on %s %s", req.method, escape(req.path))
    _send(resp, falcon.HTTP_500, {"detail": "Internal server error."})


def install(app: falcon.App) -> None:
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(e.XpressoError, handle_domain_error)
