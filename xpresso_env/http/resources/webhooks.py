"""Webhooks: /api/v2/webhooks, /api/v2/webhooks/{id}, its deliveries and redelivery (CONTRACT 9).

Reads are the service's, each in the caller's read scope, and are not cached: deliveries change
without any change to a webhook."""
from __future__ import annotations

import falcon

from ...access.reads import Reads
from ...journal.webhooks import WebhookService
from ..common import JsonBody, send_json, send_snapshot, who
from ..request import credentials_of


class Collection:
    def __init__(self, reads: Reads, body: JsonBody, webhooks: WebhookService):
        self.reads, self.body, self.webhooks = reads, body, webhooks

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        snap = self.webhooks.list(credentials_of(req.env), req.params)
        send_snapshot(req, resp, snap, snap.data)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, self.webhooks.create(who(req, self.reads), self.body.of(req)), falcon.HTTP_201)


class Item:
    def __init__(self, reads: Reads, body: JsonBody, webhooks: WebhookService):
        self.reads, self.body, self.webhooks = reads, body, webhooks

    def on_get(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        snap = self.webhooks.get(credentials_of(req.env), webhook_id, req.params)
        send_snapshot(req, resp, snap, snap.data)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        send_json(resp, self.webhooks.update(who(req, self.reads), webhook_id, self.body.of(req)))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        self.webhooks.delete(who(req, self.reads), webhook_id)
        resp.status = falcon.HTTP_204


class Deliveries:
    def __init__(self, webhooks: WebhookService):
        self.webhooks = webhooks

    def on_get(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        snap = self.webhooks.deliveries(credentials_of(req.env), webhook_id, req.params)
        send_snapshot(req, resp, snap, snap.data)


class Redeliver:
    def __init__(self, reads: Reads, webhooks: WebhookService):
        self.reads, self.webhooks = reads, webhooks

    def on_post(self, req: falcon.Request, resp: falcon.Response, webhook_id: str, delivery_id: str) -> None:
        send_json(resp, self.webhooks.redeliver(who(req, self.reads), webhook_id, delivery_id), falcon.HTTP_202)


def add_routes(app: falcon.App, reads: Reads, body: JsonBody, webhooks: WebhookService) -> None:
    app.add_route("/api/v2/webhooks", Collection(reads, body, webhooks))
    app.add_route("/api/v2/webhooks/{webhook_id}", Item(reads, body, webhooks))
    app.add_route("/api/v2/webhooks/{webhook_id}/deliveries", Deliveries(webhooks))
    app.add_route("/api/v2/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", Redeliver(reads, webhooks))
