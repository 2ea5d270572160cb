"""Service-level resources: the OpenAPI document, loaded plugins, health. No token needed."""
from __future__ import annotations

import json

import falcon

from .. import __version__
from ..errors import XpressoError
from ..plugin import plugin_list
from .common import send_json
from .openapi import build_openapi


class OpenAPIDocument:
    def __init__(self, ctx):
        self.text = json.dumps(build_openapi(include_images=ctx.images is not None))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.text = self.text


class Plugins:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, plugin_list(self.ctx.pm))


class Health:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = {"status": "ok", "version": __version__, "storage": self.ctx.storage.name,
                "builder": None, "builder_problem": None}
        if self.ctx.images is not None:
            body["builder"], body["builder_problem"] = self.ctx.images.builder_status()
        status = falcon.HTTP_200
        try:
            with self.ctx.storage.read() as tx:
                tx.get("group", "-")
        except XpressoError as exc:
            body["status"] = f"storage unavailable: {exc.detail}"
            status = falcon.HTTP_503
        body["plugins"] = plugin_list(self.ctx.pm)
        send_json(resp, body, status)


def add_routes(app: falcon.App, ctx) -> None:
    app.add_route("/api/v2/openapi.json", OpenAPIDocument(ctx))
    app.add_route("/api/v2/plugins", Plugins(ctx))
    app.add_route("/api/v2/health", Health(ctx))
