"""Harness and engine resources, v2 and v1, and the name look-up."""
from __future__ import annotations

import falcon

from ..codec import record_body
from ..errors import NotFound
from ..services.registry import ENGINE, HARNESS, KindSpec
from . import serialize
from .common import Endpoint, send_json

V2 = {HARNESS.kind: serialize.harness_v2, ENGINE.kind: serialize.engine_v2}
V1 = {HARNESS.kind: serialize.harness_v1, ENGINE.kind: serialize.engine_v1}


class Collection(Endpoint):
    def __init__(self, ctx, spec: KindSpec, version: int):
        super().__init__(ctx)
        self.spec = spec
        self.render = (V2 if version == 2 else V1)[spec.kind]

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        def produce(tx, caller):
            query = self.ctx.registry.parse_query(self.spec, req.params)
            records, total = self.ctx.registry.list(tx, caller, self.spec, query)
            return [self.render(r) for r in records], total

        self.cached_get(req, resp, self.spec.kind, produce)


class WritableCollection(Collection):
    """v2 only: v1 is read-only, as in XPRESSO."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = self.caller(req, self.spec.add)
        record = self.ctx.registry.create(caller, self.spec, self.body(req))
        send_json(resp, self.render(record_body(record)), falcon.HTTP_201)


class Item(Endpoint):
    def __init__(self, ctx, spec: KindSpec, version: int):
        super().__init__(ctx)
        self.spec = spec
        self.render = (V2 if version == 2 else V1)[spec.kind]

    def on_get(self, req: falcon.Request, resp: falcon.Response, record_id: str) -> None:
        def produce(tx, caller):
            if req.params:
                raise_unknown_params(req)
            return self.render(self.ctx.registry.get(tx, caller, self.spec, record_id)), None

        self.cached_get(req, resp, self.spec.kind, produce)


class WritableItem(Item):
    def on_patch(self, req: falcon.Request, resp: falcon.Response, record_id: str) -> None:
        caller = self.caller(req, self.spec.change)
        record = self.ctx.registry.update(caller, self.spec, record_id, self.body(req))
        send_json(resp, self.render(record_body(record)))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, record_id: str) -> None:
        caller = self.caller(req, self.spec.delete)
        self.ctx.registry.delete(caller, self.spec, record_id)
        resp.status = falcon.HTTP_204


def raise_unknown_params(req: falcon.Request) -> None:
    from ..errors import BadRequest

    raise BadRequest(f"Unknown query parameter(s): {', '.join(sorted(k[:100] for k in req.params))}.")


class NameLookup(Endpoint):
    """GET /api/v{1,2}/resouces/{category}/{name} (XPRESSO's spelling; `resources` too)."""

    CATEGORIES = {"harnesses": HARNESS, "engines": ENGINE}

    def __init__(self, ctx, version: int):
        super().__init__(ctx)
        self.id_key = "id" if version == 2 else "uuid"

    def on_get(self, req: falcon.Request, resp: falcon.Response, category: str, name: str) -> None:
        spec = self.CATEGORIES.get(category)

        def produce(tx, caller):
            if req.params:
                raise_unknown_params(req)
            if spec is None:
                raise NotFound()
            return serialize.resource_meta(self.ctx.registry.lookup(tx, caller, spec, name), category, self.id_key), None

        self.cached_get(req, resp, spec.kind if spec else "none", produce)


def add_routes(app: falcon.App, ctx) -> None:
    for version in (1, 2):
        for plural, spec in (("harnesses", HARNESS), ("engines", ENGINE)):
            collection, item = (WritableCollection, WritableItem) if version == 2 else (Collection, Item)
            app.add_route(f"/api/v{version}/{plural}", collection(ctx, spec, version))
            app.add_route(f"/api/v{version}/{plural}/{{record_id}}", item(ctx, spec, version))
        lookup = NameLookup(ctx, version)
        app.add_route(f"/api/v{version}/resouces/{{category}}/{{name}}", lookup)
        app.add_route(f"/api/v{version}/resources/{{category}}/{{name}}", lookup)
