"""The response cache at the HTTP door: one look-up a request, the answers it keeps, and the
reads answered without falcon.

A GET is looked up in the cache once. What a server runs (``create_wsgi_app``) asks in
``CacheFrontend``, before falcon: a hit is answered there (the hot path of polling clients).
On a miss the key stays in the environ (``CACHE_KEY``), so the read that follows stores its
answer under it without asking again. A miss of a ``CachedRead`` route (the registry's records)
with no query string is read there too, by the same ``read`` falcon's responder calls, found
with falcon's own router: a fresh read costs no falcon request and response either. Anything
else goes to falcon. The falcon app alone (tests, other WSGI stacks) asks in the resource.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

import falcon
from falcon.routing import CompiledRouter

from ..access.cache import Entry, ResponseCache
from ..access.reads import Credentials, Snapshot
from ..core.errors import XpressoError
from ..core.metrics import MetricsSink
from .common import send_entry
from .conditional import etag_of, matches
from .errors import error_answer
from .request import CACHE_KEY, ROUTE_KEY, credentials_of, note_caller, request_key, shared_key


class CachedAnswers:
    """The read path's side of the cache: answered from it while storage says nothing the
    answer depends on changed, else read by the resource and remembered. Counts each read-path
    answer once in the metrics: hit, miss (read afresh) or bypass (the cache is off)."""

    def __init__(self, cache: ResponseCache, metrics: MetricsSink):
        self.cache = cache
        self.metrics = metrics

    @property
    def enabled(self) -> bool:
        return self.cache.enabled

    def look_up(self, environ: dict) -> Optional[Entry]:
        """The request's one look-up: the fresh cached answer, or None with the key left in the
        environ. Counts nothing (any GET passes here; only the read path counts)."""
        key = request_key(environ)
        entry = self.cache.fresh(key)
        if entry is None:
            environ[CACHE_KEY] = key
        return entry

    def answer(self, environ: dict) -> Optional[Entry]:
        """A read's cached answer, or None: then it reads and calls ``keep``. No look-up when
        the frontend already made one."""
        if not self.cache.enabled:
            self.metrics.cache_request("bypass")
            return None
        entry = None if CACHE_KEY in environ else self.look_up(environ)
        self.metrics.cache_request("miss" if entry is None else "hit")
        return entry

    def keep(self, environ: dict, snap: Snapshot, body: bytes) -> Entry:
        """The answer read afresh, rendered to ``body``: stored under the request's key."""
        total = None if snap.total is None else str(snap.total)
        entry = Entry.of(snap, body, environ.get(ROUTE_KEY), etag_of(body, total))
        key = environ.get(CACHE_KEY)
        if key is not None:
            self.cache.keep(shared_key(key), entry)
        return entry


class CachedRead:
    """A resource whose GET is a cached read: ``fresh`` reads and renders it (with the request's
    credentials, its query parameters and the route's fields); ``read`` answers it from the cache
    or from ``fresh``, for falcon's responder and for the frontend alike."""

    def __init__(self, cached: CachedAnswers):
        self.cached = cached

    def fresh(self, credentials: Credentials, params: dict, **fields: str) -> tuple[Snapshot, bytes]:
        raise NotImplementedError

    def read(self, environ: dict, params: dict, **fields: str) -> Entry:
        entry = self.cached.answer(environ)
        if entry is None:
            snap, body = self.fresh(credentials_of(environ), params, **fields)
            entry = self.cached.keep(environ, snap, body)
        return entry

    def on_get(self, req: falcon.Request, resp: falcon.Response, **fields: str) -> None:
        send_entry(req, resp, self.read(req.env, req.params, **fields))


class CacheFrontend:
    """WSGI in front of the falcon app ``app`` (routed by ``router``): answers the GETs the cache
    holds, and reads the misses of ``CachedRead`` routes (see the module docstring)."""

    def __init__(self, app: Callable, cached: CachedAnswers, router: CompiledRouter):
        self._app = app
        self._cached = cached
        self._router = router

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        if environ.get("REQUEST_METHOD") != "GET":
            return self._app(environ, start_response)
        entry = self._cached.look_up(environ)
        if entry is not None:
            self._cached.metrics.cache_request("hit")
            environ[ROUTE_KEY] = entry.route
            return _answer(environ, start_response, entry)
        path = environ.get("PATH_INFO", "")
        # Only what falcon would route the same way: no query to parse, no trailing slash to strip,
        # no non-ASCII path to transcode.
        if environ.get("QUERY_STRING") or path[-1:] == "/" or not path.isascii():
            return self._app(environ, start_response)
        route = self._router.find(path)
        if route is None or not isinstance(route[0], CachedRead):
            return self._app(environ, start_response)
        resource, _, fields, template = route
        environ[ROUTE_KEY] = template  # as falcon's RouteTemplate middleware does, before the read
        try:
            entry = resource.read(environ, {}, **fields)
        except XpressoError as error:
            status, headers, body = error_answer("GET", path, error)
            data = json.dumps(body).encode()
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                                    *headers])
            return [data]
        return _answer(environ, start_response, entry)


def _answer(environ: dict, start_response: Callable, entry: Entry) -> list[bytes]:
    """The entry's answer; a 304 with no body when the request already holds it (its ETag)."""
    note_caller(environ, entry.user, entry.group)
    etag = entry.etag or etag_of(entry.body, entry.total)
    if matches(environ.get("HTTP_IF_NONE_MATCH"), etag):
        start_response("304 Not Modified", [("ETag", etag)])
        return []
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(entry.body))), ("ETag", etag)]
    if entry.total is not None:
        headers.append(("X-Total-Count", entry.total))
    start_response("200 OK", headers)
    return [entry.body]
