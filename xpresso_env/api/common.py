"""What every resource needs: authenticate in order, read a bounded JSON body, answer JSON."""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

import falcon

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from ..services.auth import AuthService, Caller
from ..storage import Tx
from .cache import Entry, ResponseCache, is_fresh, request_key


def group_header(req: falcon.Request) -> Optional[str]:
    # `Group` wins over `X-Group` when both are sent.
    value = req.get_header("Group")
    return value if value is not None else req.get_header("X-Group")


def send_json(resp: falcon.Response, data: Any, status: str = falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(data)


def _send_bytes(resp: falcon.Response, body: bytes, total: Optional[str]) -> None:
    resp.status = falcon.HTTP_200
    resp.content_type = falcon.MEDIA_JSON
    if total is not None:
        resp.set_header("X-Total-Count", total)
    resp.data = body


def send_list(resp: falcon.Response, items: list, total: int) -> None:
    resp.set_header("X-Total-Count", str(total))
    send_json(resp, items)


class Endpoint:
    """Base of the resources: holds the context's collaborators, no state of its own."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.auth: AuthService = ctx.auth

    def authenticate(self, req: falcon.Request, tx: Tx) -> Caller:
        caller = self.auth.authenticate(req.get_header("Authorization"), group_header(req), tx)
        req.context.user = caller.user.name
        req.context.group = caller.group
        return caller

    def cached_get(self, req: falcon.Request, resp: falcon.Response, kind: str,
                   produce: Callable[[Tx, Caller], tuple[Any, Optional[int]]]) -> None:
        """Answer a GET from the response cache when storage says nothing it depends on changed;
        else authenticate, ``produce(tx, caller) -> (data, total or None)`` and remember it."""
        cache: ResponseCache = self.ctx.response_cache
        key = request_key(req.env)
        entry = cache.get(key) if cache.enabled else None
        storage = self.ctx.storage
        if entry is not None and self.auth.still_valid(entry.token_expires):
            if is_fresh(storage, cache, key, entry):  # (CacheFrontend answers most hits before falcon)
                req.context.user, req.context.group = entry.user, entry.group
                _send_bytes(resp, entry.body, entry.total)
                return
        stamp = storage.change_stamp() if cache.enabled else None
        with storage.read() as tx:
            caller = self.authenticate(req, tx)
            data, total = produce(tx, caller)
            keys = (("user", ""), ("revocation", ""), ("group", ""), (kind, caller.group))
            values = tx.versions(keys) if cache.enabled else ()
        if stamp is not None and storage.change_stamp() != stamp:
            stamp = None  # a write started or ended meanwhile: the counters alone vouch for it
        body = json.dumps(data).encode()
        total_text = None if total is None else str(total)
        if cache.enabled:
            cache.put(key, Entry(keys=keys, values=values, body=body, total=total_text, user=caller.user.name,
                                 group=caller.group, token_expires=caller.token_expires, seq=stamp))
        _send_bytes(resp, body, total_text)

    def caller(self, req: falcon.Request, permission: Optional[str] = None) -> Caller:
        with self.ctx.storage.read() as tx:
            caller = self.authenticate(req, tx)
        if permission is not None:
            AuthService.require(caller, permission)
        return caller

    def body(self, req: falcon.Request) -> Any:
        """The JSON body, after authentication and permission (CONTRACT section 7 order)."""
        limit = self.ctx.settings.server.max_body_bytes
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
