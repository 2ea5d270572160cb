"""Harness and engine resources, v2 and v1, and the name look-up."""
from __future__ import annotations

from typing import Any, Callable

import falcon

from ...access.cache import CachedReads
from ...access.reads import Reads
from ...core import serialize
from ...core.codec import record_body
from ...core.errors import NotFound
from ...core.validation import reject_unknown_params
from ...registry.service import ENGINE, HARNESS, KindSpec, RegistryService
from ..common import JsonBody, send_entry, send_json, who

Render = Callable[[dict[str, Any]], dict[str, Any]]
V2 = {HARNESS.kind: serialize.harness_v2, ENGINE.kind: serialize.engine_v2}
V1 = {HARNESS.kind: serialize.harness_v1, ENGINE.kind: serialize.engine_v1}


class Collection:
    def __init__(self, cached: CachedReads, registry: RegistryService, spec: KindSpec, render: Render):
        self.cached = cached
        self.registry = registry
        self.spec = spec
        self.render = render

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        def produce(tx, caller):
            query = self.registry.parse_query(self.spec, req.params)
            records, total = self.registry.list(tx, caller, self.spec, query)
            return [self.render(r) for r in records], total

        send_entry(req, resp, self.cached.answer(req.env, self.spec.kind, produce))


class WritableCollection(Collection):
    """v2 only: v1 is read-only, as in XPRESSO."""

    def __init__(self, cached: CachedReads, reads: Reads, body: JsonBody, registry: RegistryService,
                 spec: KindSpec, render: Render):
        super().__init__(cached, registry, spec, render)
        self.reads = reads
        self.body = body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        record = self.registry.create(who(req, self.reads), self.spec, self.body.of(req))
        send_json(resp, self.render(record_body(record)), falcon.HTTP_201)


class Item:
    def __init__(self, cached: CachedReads, registry: RegistryService, spec: KindSpec, render: Render):
        self.cached = cached
        self.registry = registry
        self.spec = spec
        self.render = render

    def on_get(self, req: falcon.Request, resp: falcon.Response, record_id: str) -> None:
        def produce(tx, caller):
            reject_unknown_params(req.params)
            return self.render(self.registry.get(tx, caller, self.spec, record_id)), None

        send_entry(req, resp, self.cached.answer(req.env, self.spec.kind, produce))


class WritableItem(Item):
    def __init__(self, cached: CachedReads, reads: Reads, body: JsonBody, registry: RegistryService,
                 spec: KindSpec, render: Render):
        super().__init__(cached, registry, spec, render)
        self.reads = reads
        self.body = body

    def on_patch(self, req: falcon.Request, resp: falcon.Response, record_id: str) -> None:
        record = self.registry.update(who(req, self.reads), self.spec, record_id, self.body.of(req))
        send_json(resp, self.render(record_body(record)))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, record_id: str) -> None:
        self.registry.delete(who(req, self.reads), self.spec, record_id)
        resp.status = falcon.HTTP_204


class NameLookup:
    """GET /api/v{1,2}/resouces/{category}/{name} (XPRESSO's spelling; `resources` too)."""

    CATEGORIES = {"harnesses": HARNESS, "engines": ENGINE}

    def __init__(self, cached: CachedReads, registry: RegistryService, version: int):
        self.cached = cached
        self.registry = registry
        self.id_key = "id" if version == 2 else "uuid"

    def on_get(self, req: falcon.Request, resp: falcon.Response, category: str, name: str) -> None:
        spec = self.CATEGORIES.get(category)

        def produce(tx, caller):
            reject_unknown_params(req.params)
            if spec is None:
                raise NotFound()
            body = self.registry.lookup(tx, caller, spec, name)
            return serialize.resource_meta(body, category, self.id_key), None

        send_entry(req, resp, self.cached.answer(req.env, spec.kind if spec else "none", produce))


def add_routes(app: falcon.App, cached: CachedReads, reads: Reads, body: JsonBody, registry: RegistryService) -> None:
    for plural, spec in (("harnesses", HARNESS), ("engines", ENGINE)):
        app.add_route(f"/api/v1/{plural}", Collection(cached, registry, spec, V1[spec.kind]))
        app.add_route(f"/api/v1/{plural}/{{record_id}}", Item(cached, registry, spec, V1[spec.kind]))
        app.add_route(f"/api/v2/{plural}", WritableCollection(cached, reads, body, registry, spec, V2[spec.kind]))
        app.add_route(f"/api/v2/{plural}/{{record_id}}", WritableItem(cached, reads, body, registry, spec,
                                                                     V2[spec.kind]))
    for version in (1, 2):
        lookup = NameLookup(cached, registry, version)
        app.add_route(f"/api/v{version}/resouces/{{category}}/{{name}}", lookup)
        app.add_route(f"/api/v{version}/resources/{{category}}/{{name}}", lookup)
