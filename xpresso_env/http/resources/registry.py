"""Harness and engine resources, v2 and v1, and the name look-up.

Their GETs are cached reads (``CachedRead``): on a miss the registry is asked for a snapshot with
the request's credentials, the snapshot is rendered here and the bytes go to the response cache.
"""
from __future__ import annotations

from typing import Any, Callable

import falcon

from ...access.reads import Credentials, Reads, Snapshot
from ...core.codec import record_body
from ...core.render import engine_v1, engine_v2, harness_v1, harness_v2, resource_meta
from ...registry.service import ENGINE, HARNESS, KindSpec, RegistryService
from ..cache_frontend import CachedAnswers, CachedRead
from ..common import JsonBody, encode, send_json, who

Render = Callable[[dict[str, Any]], dict[str, Any]]
V2 = {HARNESS.kind: harness_v2, ENGINE.kind: engine_v2}
V1 = {HARNESS.kind: harness_v1, ENGINE.kind: engine_v1}


class Collection(CachedRead):
    def __init__(self, cached: CachedAnswers, registry: RegistryService, spec: KindSpec, render: Render):
        super().__init__(cached)
        self.registry = registry
        self.spec = spec
        self.render = render

    def fresh(self, credentials: Credentials, params: dict) -> tuple[Snapshot, bytes]:
        snap = self.registry.list(credentials, self.spec, params)
        return snap, encode(list(map(self.render, snap.data)))


class WritableCollection(Collection):
    """v2 only: v1 is read-only, as in XPRESSO."""

    def __init__(self, cached: CachedAnswers, reads: Reads, body: JsonBody, registry: RegistryService,
                 spec: KindSpec, render: Render):
        super().__init__(cached, registry, spec, render)
        self.reads = reads
        self.body = body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        record = self.registry.create(who(req, self.reads), self.spec, self.body.of(req))
        send_json(resp, self.render(record_body(record)), falcon.HTTP_201)


class Item(CachedRead):
    def __init__(self, cached: CachedAnswers, registry: RegistryService, spec: KindSpec, render: Render):
        super().__init__(cached)
        self.registry = registry
        self.spec = spec
        self.render = render

    def fresh(self, credentials: Credentials, params: dict, record_id: str) -> tuple[Snapshot, bytes]:
        snap = self.registry.get(credentials, self.spec, record_id, params)
        return snap, encode(self.render(snap.data))


class WritableItem(Item):
    def __init__(self, cached: CachedAnswers, reads: Reads, body: JsonBody, registry: RegistryService,
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


class NameLookup(CachedRead):
    """GET /api/v{1,2}/resouces/{category}/{name} (XPRESSO's spelling; `resources` too)."""

    def __init__(self, cached: CachedAnswers, registry: RegistryService, version: int):
        super().__init__(cached)
        self.registry = registry
        self.id_key = "id" if version == 2 else "uuid"

    def fresh(self, credentials: Credentials, params: dict, category: str, name: str) -> tuple[Snapshot, bytes]:
        snap = self.registry.lookup(credentials, category, name, params)
        return snap, encode(resource_meta(snap.data, category, self.id_key))


def add_routes(app: falcon.App, cached: CachedAnswers, reads: Reads, body: JsonBody,
               registry: RegistryService) -> None:
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
