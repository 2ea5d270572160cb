"""Image resources (CONTRACT section 4); the record's wire shape is rendered in ``core/render.py``.

Routes: GET /api/v2/images, POST /api/v2/images/polaris_build, GET|PATCH|DELETE
/api/v2/images/{uuid}, GET /api/v2/images/{uuid}/logs, POST /api/v2/images/{uuid}/cancel.
Falcon's router prefers a literal segment to a field, so ``polaris_build`` is never read as a
uuid whatever the order the routes are added in.
"""
from __future__ import annotations

import threading
from typing import Any, Iterator

import falcon

from ...access.reads import Reads
from ...builds import idempotency
from ...builds.service import ImageService
from ...core.errors import TooManyRequests, ValidationError
from ...core.render import image_v2
from ...core.validation import query_int, reject_unknown_params
from ..common import BodySource, JsonBody, send_json, send_snapshot, who
from ..request import credentials_of

TEXT = "text/plain; charset=utf-8"


class Collection:
    """Images are not cached: builds change them from worker threads all the time."""

    def __init__(self, images: ImageService):
        self.images = images

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        snap = self.images.list(credentials_of(req.env), req.params)
        send_snapshot(req, resp, snap, [image_v2(i) for i in snap.data])


class PolarisBuild:
    def __init__(self, reads: Reads, body: JsonBody, images: ImageService):
        self.reads = reads
        self.body = body
        self.images = images

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = who(req, self.reads)
        key = idempotency.check_key(req.get_header(idempotency.HEADER))
        image = self.images.submit(caller, _content(req, self.body), idempotency_key=key)
        send_json(resp, image_v2(image), falcon.HTTP_200)  # 200, as XPRESSO answers (a replay too)


class Item:
    def __init__(self, reads: Reads, body: JsonBody, images: ImageService):
        self.reads = reads
        self.body = body
        self.images = images

    def on_get(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        snap = self.images.get(credentials_of(req.env), uuid, req.params)
        send_snapshot(req, resp, snap, image_v2(snap.data))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        image = self.images.update(who(req, self.reads), uuid, _content(req, self.body))
        send_json(resp, image_v2(image))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        self.images.delete(who(req, self.reads), uuid, lambda: reject_unknown_params(req.params))
        resp.status = falcon.HTTP_204


class Cancel:
    def __init__(self, reads: Reads, images: ImageService):
        self.reads = reads
        self.images = images

    def on_post(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        send_json(resp, image_v2(self.images.cancel(who(req, self.reads), uuid,
                                                    lambda: reject_unknown_params(req.params))))


def _content(req: falcon.Request, body: JsonBody) -> BodySource:
    """The request's content, read by the service after its permission check (CONTRACT
    section 7 order): the query (no parameter is taken) and the JSON body."""
    def read() -> Any:
        reject_unknown_params(req.params)
        return body.read(req)
    return read


def _offset(req: falcon.Request) -> int:
    return query_int("offset", req.params.get("offset", "0"), 0)  # a huge one: past the end of any log


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


class Logs:
    def __init__(self, reads: Reads, images: ImageService, server_threads: int):
        self.reads = reads
        self.images = images
        self.follow_slots = threading.BoundedSemaphore(max(1, server_threads // 2))

    def on_get(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        caller = who(req, self.reads)
        reject_unknown_params(req.params, ("offset", "follow"))
        offset, follow = _offset(req), _follow(req)
        resp.content_type = TEXT
        if follow:
            # Streamed (chunked) until the build ends: each chunk as soon as the build writes it.
            resp.stream = limited(self.images.follow_log(caller, uuid, offset), self.follow_slots)
        else:
            resp.data = self.images.read_log(caller, uuid, offset)


def add_routes(app: falcon.App, reads: Reads, body: JsonBody, images: ImageService, server_threads: int) -> None:
    app.add_route("/api/v2/images", Collection(images))
    app.add_route("/api/v2/images/polaris_build", PolarisBuild(reads, body, images))
    app.add_route("/api/v2/images/{uuid}", Item(reads, body, images))
    app.add_route("/api/v2/images/{uuid}/logs", Logs(reads, images, server_threads))
    app.add_route("/api/v2/images/{uuid}/cancel", Cancel(reads, images))
