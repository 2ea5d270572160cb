"""The served OpenAPI document is valid and matches the mounted routes, both ways."""
from __future__ import annotations

import re

import falcon.inspect
from openapi_spec_validator import validate

from xpresso_env.app import create_app

IGNORED = {"OPTIONS", "HEAD"}


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _mounted(app) -> set[tuple[str, str]]:
    out = set()
    for route in falcon.inspect.inspect_routes(app):
        for method in route.methods:
            if not method.internal and method.method not in IGNORED:
                out.add((_norm(route.path), method.method.lower()))
    return out


def _documented(doc) -> set[tuple[str, str]]:
    return {(_norm(path), method) for path, item in doc["paths"].items() for method in item
            if method in ("get", "post", "patch", "put", "delete")}


def test_served_document_is_valid_openapi_3_1(make_world):
    world = make_world(images=True)
    r = world.client.simulate_get("/api/v2/openapi.json")  # no token needed
    assert r.status_code == 200
    doc = r.json
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_route_documented_and_every_documented_path_mounted(make_world):
    world = make_world(images=True)
    doc = world.client.simulate_get("/api/v2/openapi.json").json
    mounted = _mounted(create_app(world.ctx))
    documented = _documented(doc)
    assert mounted - documented == set(), "mounted but not documented"
    assert documented - mounted == set(), "documented but not mounted"


def test_records_match_their_schemas(world):
    from jsonschema import Draft202012Validator

    doc = world.client.simulate_get("/api/v2/openapi.json").json
    schemas = doc["components"]["schemas"]

    def check(name, instance):
        schema = {**schemas[name], "components": doc["components"]}
        schema = _resolve_refs(schema, doc)
        Draft202012Validator(schema).validate(instance)

    h = world.post("/api/v2/harnesses", {"name": "h", "path": "/p"}, user="priv").json
    e = world.post("/api/v2/engines", {"name": "e", "base_url": "https://j.example.com"}, user="priv").json
    check("Harness", h)
    check("Engine", e)
    check("HarnessV1", world.get(f"/api/v1/harnesses/{h['id']}").json)
    check("EngineV1", world.get(f"/api/v1/engines/{e['id']}").json)
    check("ResourceMeta", world.get("/api/v2/resouces/harnesses/h").json)
    check("ResourceMetaV1", world.get("/api/v1/resouces/engines/e").json)
    check("Error", world.get("/api/v2/harnesses/nope").json)
    check("Health", world.client.simulate_get("/api/v2/health").json)


def _resolve_refs(node, doc):
    if isinstance(node, dict):
        if "$ref" in node and node["$ref"].startswith("#/components/schemas/"):
            return _resolve_refs(doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]], doc)
        return {k: _resolve_refs(v, doc) for k, v in node.items() if k != "components"}
    if isinstance(node, list):
        return [_resolve_refs(v, doc) for v in node]
    return node
