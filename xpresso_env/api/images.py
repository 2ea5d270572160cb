"""Image resources (CONTRACT section 4) and the wire shape of an image record.

Routes: GET /api/v2/images, POST /api/v2/images/polaris_build, GET|PATCH|DELETE
/api/v2/images/{uuid}, GET /api/v2/images/{uuid}/logs, POST /api/v2/images/{uuid}/cancel.
Falcon's router prefers a literal segment to a field, so ``polaris_build`` is never read as a
uuid whatever the order the routes are added in.
"""
from __future__ import annotations

import threading
from typing import Any, Iterator, Optional

import falcon

from ..errors import BadRequest, TooManyRequests, ValidationError
from ..models import Image
from ..services.images import ADD, DELETE, image_data
from ..timeutil import format_time
from .common import Endpoint, send_json, send_list

TEXT = "text/plain; charset=utf-8"


def image_v2(image: Image) -> dict[str, Any]:
    """Exactly the keys of CONTRACT section 4, in its order; internal fields (claims, leases,
    log paths, visibility) never leave the service."""
    return {
        "credentials": None,
        "uuid": str(image.id),
        "name": image.name,
        "tag": image.tag,
        "data": image_data(image),
        "status": image.status.value,
        "group": image.group,
        "git_ref": image.git_ref,
        "date_created": format_time(image.date_created),
        "date_updated": format_time(image.date_updated),
        "container_details": None,
        "yaml_content": None,
        "worker_meta": _worker_meta(image.worker_meta),
        "size": int(image.size),
        "virtual_size": int(image.virtual_size),
        "image_id": image.image_id,
        "jobs": image.jobs,
        "manifests": image.manifests,
        "push_url": None,
        "pin_version": image.pin_version,
        "is_nfs_storage": image.is_nfs_storage,
        "nfs_path": image.nfs_path,
        "is_deleted": image.is_deleted,
        "is_polaris_image": True,
        "base_ref": image.base_ref,
        "meta": image.meta,
        "type": "genie",
        "custom": True,
    }


# What a client learns about the worker; the rest (boot id, pid namespace) only serves take-over.
_WORKER_KEYS = ("worker_id", "host", "pid", "claimed_at")


def _worker_meta(meta: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    return None if meta is None else {k: meta[k] for k in _WORKER_KEYS if k in meta}


def _no_params(req: falcon.Request, allowed: frozenset[str] = frozenset()) -> None:
    unknown = sorted(set(req.params) - allowed)
    if unknown:
        raise BadRequest(f"Unknown query parameter(s): {', '.join(u[:100] for u in unknown)}.")


class Collection(Endpoint):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with self.ctx.storage.read() as tx:
            caller = self.authenticate(req, tx)
            query = self.ctx.images.parse_query(req.params)
            images, total = self.ctx.images.list(tx, caller, query)
        send_list(resp, [image_v2(i) for i in images], total)


class PolarisBuild(Endpoint):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = self.caller(req, ADD)
        _no_params(req)
        image = self.ctx.images.submit(caller, self.body(req))
        send_json(resp, image_v2(image), falcon.HTTP_200)  # 200, as XPRESSO answers


class Item(Endpoint):
    def on_get(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        with self.ctx.storage.read() as tx:
            caller = self.authenticate(req, tx)
            _no_params(req)
            image = self.ctx.images.get(tx, caller, uuid)
        send_json(resp, image_v2(image))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        caller = self.caller(req, ADD)
        _no_params(req)
        image = self.ctx.images.update(caller, uuid, self.body(req))
        send_json(resp, image_v2(image))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        caller = self.caller(req, DELETE)
        _no_params(req)
        self.ctx.images.delete(caller, uuid)
        resp.status = falcon.HTTP_204


class Cancel(Endpoint):
    def on_post(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        caller = self.caller(req, ADD)
        _no_params(req)
        send_json(resp, image_v2(self.ctx.images.cancel(caller, uuid)))


def _offset(req: falcon.Request) -> int:
    raw = req.params.get("offset", "0")
    if not isinstance(raw, str):
        raise ValidationError.one("offset", "Give this parameter once.")
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError.one("offset", "A valid integer is required.") from None
    if value < 0:
        raise ValidationError.one("offset", "Must be at least 0.")
    return value


def _follow(req: falcon.Request) -> bool:
    raw = req.params.get("follow", "false")
    if not isinstance(raw, str) or raw.lower() not in ("true", "false", "1", "0"):
        raise ValidationError.one("follow", "Must be true or false.")
    return raw.lower() in ("true", "1")


class _FollowSlot:
    """The followed stream, holding one slot until it ends or is closed (a WSGI server closes
    the iterable when the client goes away, even before the first chunk)."""

    def __init__(self, stream: Iterator[bytes], slots: threading.BoundedSemaphore):
        self._stream = stream
        self._slots = slots
        self._held = True

    def __iter__(self) -> "_FollowSlot":
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._stream)
        except BaseException:  # the end, or an error: the slot is free either way
            self.close()
            raise

    def close(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


def limited(stream: Iterator[bytes], slots: threading.BoundedSemaphore) -> Iterator[bytes]:
    """A followed log holds a server thread until its build ends, so at most half the threads
    may follow at once (the rest keep answering): beyond that, 429 and the client polls with
    ?offset."""
    if not slots.acquire(blocking=False):
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        raise TooManyRequests("Too many logs are being followed at once: read the log with ?offset=N "
                              "and poll, or try again later.")
    return _FollowSlot(stream, slots)


class Logs(Endpoint):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.follow_slots = threading.BoundedSemaphore(max(1, ctx.settings.server.threads // 2))

    def on_get(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        caller = self.caller(req)
        _no_params(req, frozenset({"offset", "follow"}))
        offset, follow = _offset(req), _follow(req)
        resp.content_type = TEXT
        if follow:
            # Streamed (chunked) until the build ends: each chunk as soon as the build writes it.
            resp.stream = limited(self.ctx.images.follow_log(caller, uuid, offset), self.follow_slots)
        else:
            resp.data = self.ctx.images.read_log(caller, uuid, offset)


def add_routes(app: falcon.App, ctx) -> None:
    app.add_route("/api/v2/images", Collection(ctx))
    app.add_route("/api/v2/images/polaris_build", PolarisBuild(ctx))
    app.add_route("/api/v2/images/{uuid}", Item(ctx))
    app.add_route("/api/v2/images/{uuid}/logs", Logs(ctx))
    app.add_route("/api/v2/images/{uuid}/cancel", Cancel(ctx))
