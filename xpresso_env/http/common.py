"""What the resources share: who is asking (for a write), a bounded JSON body, JSON answers."""
from __future__ import annotations

import json
from typing import Any, Callable

import falcon

from ..access.auth import Caller
from ..access.cache import Entry
from ..access.reads import Reads, Snapshot
from ..core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from .request import credentials_of, note_caller

# A request body, read only when the service asks for it: after authentication and the
# permission check (CONTRACT section 7 order: 401, 400/403, 403, then 413/415/400).
BodySource = Callable[[], Any]


def who(req: falcon.Request, reads: Reads) -> Caller:
    """Authenticate a write (token, then group) and note the caller for the access log; the
    service then opens its own write transaction. Reads authenticate in their read scope."""
    caller = reads.caller(credentials_of(req.env))
    note_caller(req.env, caller.user.name, caller.group)
    return caller


def encode(data: Any) -> bytes:
    """A JSON answer's bytes (what the response cache keeps)."""
    return json.dumps(data).encode()


def send_snapshot(req: falcon.Request, resp: falcon.Response, snap: Snapshot, data: Any) -> None:
    """An uncached read's answer: ``data`` rendered from ``snap``, and who asked noted for the
    access log (the list's unpaged count as X-Total-Count)."""
    note_caller(req.env, snap.caller.user.name, snap.caller.group)
    if snap.total is not None:
        resp.set_header("X-Total-Count", str(snap.total))
    send_json(resp, data)


def send_json(resp: falcon.Response, data: Any, status: str = falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(data)


def send_entry(req: falcon.Request, resp: falcon.Response, entry: Entry) -> None:
    """A read-path answer (cached or fresh), bytes as stored."""
    note_caller(req.env, entry.user, entry.group)
    resp.status = falcon.HTTP_200
    resp.content_type = falcon.MEDIA_JSON
    if entry.total is not None:
        resp.set_header("X-Total-Count", entry.total)
    if entry.etag is not None:
        resp.etag = entry.etag  # made once when stored: ConditionalGet only compares it
    resp.data = entry.body


class JsonBody:
    """Reads a request's JSON body, bounded by ``server.max_body_bytes``."""

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes

    def of(self, req: falcon.Request) -> BodySource:
        return lambda: self.read(req)

    def read(self, req: falcon.Request) -> Any:
        limit = self._max_bytes
        length = req.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
        raw = req.bounded_stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
        media = (req.content_type or "").split(";")[0].strip().lower()
        if media and media != "application/json" and not media.endswith("+json"):
            raise UnsupportedMediaType(f'Unsupported media type "{media[:100]}" in request.')
        if not raw.strip():
            raise BadRequest("A JSON body is required.")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"JSON parse error - {str(exc)[:200]}") from None
        except RecursionError:
            raise BadRequest("JSON parse error - the document is nested too deeply.") from None

