"""Conditional GET (CONTRACT section 14): every 200 answer to a GET carries an ``ETag``, and a GET
whose ``If-None-Match`` names it is answered ``304 Not Modified`` with no body.

The tag is a hash of the answer's bytes (and its ``X-Total-Count``), never of a counter or a
time: a 304 says "the body would be exactly what you hold", so it can never be stale. Whatever
makes the body (the response cache's entry, a fresh read) decides freshness; this module only
compares. A cached answer's tag is computed once, when the entry is stored, so a hit costs a
string comparison. A streamed answer (a followed log) has no tag: its body is not known yet.
"""
from __future__ import annotations

import hashlib
from typing import Any, Optional

import falcon


def etag_of(body: bytes, total: Optional[str] = None) -> str:
    """A strong tag for ``body`` (with its list count, which the body alone does not show)."""
    digest = hashlib.blake2b(body, digest_size=16)
    if total is not None:
        digest.update(b"\0" + total.encode())
    return f'"{digest.hexdigest()}"'


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag[:2] in ("W/", "w/") else tag


def matches(if_none_match: Optional[str], etag: str) -> bool:
    """``If-None-Match`` names ``etag`` (RFC 9110 13.1.2: weak comparison; ``*`` matches any)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    ours = _opaque(etag)
    return any(_opaque(tag) == ours for tag in if_none_match.split(","))


class ConditionalGet:
    """falcon middleware: tags each 200 answer to a GET that has a body in hand (the answer's own
    tag when the responder set one, e.g. from a cache entry) and turns it into a 304 when the
    request's ``If-None-Match`` names that tag. falcon sends no body with a 304."""

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        if req.method != "GET" or resp.status not in (falcon.HTTP_200, 200) or resp.stream is not None:
            return
        etag = resp.etag
        if etag is None:
            body = resp.render_body()
            if body is None:
                return
            etag = etag_of(body, resp.get_header("X-Total-Count"))
            resp.etag = etag
        if matches(req.get_header("If-None-Match"), etag):
            resp.status = falcon.HTTP_304
            resp.text = resp.data = None
            resp.delete_header("Content-Type")  # a 304 carries no content to type
