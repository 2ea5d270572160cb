"""Webhooks: /api/v2/webhooks, /api/v2/webhooks/{id}, its deliveries and redelivery (CONTRACT 9).

Reads go through ``Reads.read`` (one snapshot for the caller and the data) and are not cached:
deliveries change without any change to a webhook."""
from __future__ import annotations

from typing import Any, Callable

import falcon

from ...access.reads import Reads
from ...core.validation import reject_unknown_params
from ...journal.webhooks import WebhookService
from ..common import JsonBody, send_json, send_list, who
from ..request import credentials_of, note_caller


def _read(req: falcon.Request, reads: Reads, produce: Callable) -> Any:
    snap = reads.read(credentials_of(req.env), "webhook", produce)
    note_caller(req.env, snap.caller.user.name, snap.caller.group)
    return snap


class Collection:
    def __init__(self, reads: Reads, body: JsonBody, webhooks: WebhookService):
        self.reads, self.body, self.webhooks = reads, body, webhooks

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        snap = _read(req, self.reads, lambda tx, caller: self.webhooks.list(tx, caller, req.params))
        send_list(resp, snap.data, snap.total or 0)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, self.webhooks.create(who(req, self.reads), self.body.of(req)), falcon.HTTP_201)


class Item:
    def __init__(self, reads: Reads, body: JsonBody, webhooks: WebhookService):
        self.reads, self.body, self.webhooks = reads, body, webhooks

    def on_get(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        def produce(tx, caller):
            data = self.webhooks.get(tx, caller, webhook_id)
            reject_unknown_params(req.params)
            return data, None

        send_json(resp, _read(req, self.reads, produce).data)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        send_json(resp, self.webhooks.update(who(req, self.reads), webhook_id, self.body.of(req)))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        self.webhooks.delete(who(req, self.reads), webhook_id)
        resp.status = falcon.HTTP_204


class Deliveries:
    def __init__(self, reads: Reads, webhooks: WebhookService):
        self.reads, self.webhooks = reads, webhooks

    def on_get(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        snap = _read(req, self.reads, lambda tx, caller: self.webhooks.deliveries(tx, caller, webhook_id, req.params))
        send_list(resp, snap.data, snap.total or 0)


class Redeliver:
    def __init__(self, reads: Reads, webhooks: WebhookService):
        self.reads, self.webhooks = reads, webhooks

    def on_post(self, req: falcon.Request, resp: falcon.Response, webhook_id: str, delivery_id: str) -> None:
        send_json(resp, self.webhooks.redeliver(who(req, self.reads), webhook_id, delivery_id), falcon.HTTP_202)


def add_routes(app: falcon.App, reads: Reads, body: JsonBody, webhooks: WebhookService) -> None:
    app.add_route("/api/v2/webhooks", Collection(reads, body, webhooks))
    app.add_route("/api/v2/webhooks/{webhook_id}", Item(reads, body, webhooks))
    app.add_route("/api/v2/webhooks/{webhook_id}/deliveries", Deliveries(reads, webhooks))
    app.add_route("/api/v2/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", Redeliver(reads, webhooks))
