"""The served OpenAPI document is valid and matches the mounted routes, both ways."""
from __future__ import annotations

import re

import falcon.inspect
from openapi_spec_validator import validate

from xpresso_env.app import create_app
from xpresso_env.http.resources import ui as api_ui

IGNORED = {"OPTIONS", "HEAD"}
# Routes that are not part of the API: the web page and its shipped files (api/ui.py).
NOT_API = set(api_ui.ROUTES)


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _mounted(app) -> set[tuple[str, str]]:
    out = set()
    for route in falcon.inspect.inspect_routes(app):
        for method in route.methods:
            if not method.internal and method.method not in IGNORED and route.path not in NOT_API:
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


# The points an independent probe found where the document allowed what the server refused, and
# a few neighbours: for each request, the served document's verdict and the server's must agree.
AGREEMENT_CASES = [
    # (method, path, body or None, query, valid per the document)
    ("GET", "/api/v2/harnesses", None, "configuration_state=", False),
    ("GET", "/api/v2/harnesses", None, "configuration_state=ENABLED", True),
    ("GET", "/api/v2/engines", None, "type=", False),
    ("GET", "/api/v2/images", None, "status=", False),
    ("GET", "/api/v2/harnesses", None, "site=", True),
    ("POST", "/api/v2/harnesses", {"name": "h", "path": "/p", "supporting_path": "relative"}, "", False),
    ("POST", "/api/v2/harnesses", {"name": "h", "path": "/p", "supporting_path": ""}, "", True),
    ("POST", "/api/v2/harnesses", {"name": " h", "path": "/p"}, "", False),
    ("POST", "/api/v2/harnesses", {"name": "h\u00a0", "path": "/p"}, "", False),
    ("POST", "/api/v2/harnesses", {"name": "h", "path": "/p", "site": "a\x01"}, "", False),
    ("POST", "/api/v2/engines", {"name": "e", "base_url": "HTTP://J.EXAMPLE.COM"}, "", True),
    ("POST", "/api/v2/engines", {"name": "e2", "base_url": "Https://j.example.com:8443/x"}, "", True),
    ("POST", "/api/v2/engines", {"name": "e", "base_url": "http://"}, "", False),
    ("POST", "/api/v2/engines", {"name": "e", "base_url": "http://j:99999"}, "", False),
    ("POST", "/api/v2/engines", {"name": "e", "base_url": "https://j", "api_token": "a\x01b"}, "", False),
    ("POST", "/api/v2/engines", {"name": "e", "base_url": "https://j", "username": "u\x7f"}, "", False),
    ("POST", "/api/v2/images/polaris_build", {"name": "a" * 256, "tag": "t", "git_ref": "main"}, "", False),
    ("POST", "/api/v2/images/polaris_build", {"name": "a", "tag": "t", "git_ref": ""}, "", False),
    ("POST", "/api/v2/images/polaris_build", {"name": "a", "tag": "t", "git_ref": "main", "groups": [""]}, "", False),
    ("POST", "/api/v2/images/polaris_build", {"name": "a", "tag": "t", "git_ref": "a..b"}, "", False),
    ("POST", "/api/v2/images/polaris_build", {"name": "a", "tag": ".t", "git_ref": "main"}, "", False),
    ("POST", "/api/v2/images/polaris_build", {"name": "a" * 255, "tag": "t", "git_ref": "main", "groups": ["g1"]},
     "", True),
]


def _request_is_valid(doc, method: str, path: str, body, query: str) -> bool:
    from urllib.parse import parse_qsl

    import jsonschema_rs

    op = doc["paths"][path][method.lower()]
    params = {}
    for p in op.get("parameters", []):
        if "$ref" in p:
            p = doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
        if p["in"] == "query":
            params[p["name"]] = p["schema"]
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in params or not jsonschema_rs.validator_for(params[name]).is_valid(value):
            return False
    if body is not None:
        schema = _resolve_refs(op["requestBody"]["content"]["application/json"]["schema"], doc)
        return jsonschema_rs.validator_for(schema).is_valid(body)
    return True


def test_document_and_server_agree_on_the_probe_findings(make_world):
    world = make_world(images=True)  # polaris.repo unset: a valid build request answers 503
    doc = world.client.simulate_get("/api/v2/openapi.json").json
    for method, path, body, query, valid in AGREEMENT_CASES:
        assert _request_is_valid(doc, method, path, body, query) is valid, (path, body, query)
        before = world.dump()
        r = world.client.simulate_request(method, path, json=body, query_string=query,
                                          headers=world.headers("admin"))
        assert (r.status_code != 400) is valid, (path, body, query, r.status_code, r.text)
        if not valid:
            assert world.dump() == before
        elif path.endswith("polaris_build"):
            assert r.status_code == 503 and "polaris.repo" in r.json["detail"]


def test_every_operation_is_tagged_and_the_tags_come_in_their_order(make_world):
    """Swagger shows the tags in the document's order: registries, images, probes, events,
    identity, meta (CONTRACT third wave); nothing under "default"."""
    world = make_world(images=True)
    doc = world.client.simulate_get("/api/v2/openapi.json").json
    order = ["registries", "images", "probes", "events", "identity", "meta"]
    assert [t["name"] for t in doc["tags"]] == order
    seen = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "patch", "put", "delete"):
                assert len(op.get("tags", [])) == 1 and op["tags"][0] in order, (method, path)
                seen.append(order.index(op["tags"][0]))
    assert seen == sorted(seen), "paths not in the tags' order"
    assert set(seen) == set(range(len(order))), "a tag with no operation"
    tag = {path: item["get"]["tags"][0] for path, item in doc["paths"].items() if "get" in item}
    assert tag["/api/v2/harnesses/{id}/state"] == "probes"
    assert tag["/api/v2/engines/{id}/history"] == "events" and tag["/api/v2/webhooks"] == "events"
    assert tag["/api/v1/engines"] == "registries" and tag["/api/v2/resources/{category}/{name}"] == "registries"
    assert tag["/api/v2/images/{uuid}/logs"] == "images" and tag["/api/v2/me"] == "identity"
    assert tag["/api/v2/health"] == "meta" and tag["/metrics"] == "meta"


def test_every_get_documents_its_etag_and_304(make_world):
    doc = make_world(images=True).client.simulate_get("/api/v2/openapi.json").json
    for path, item in doc["paths"].items():
        if "get" in item:
            responses = item["get"]["responses"]
            assert "ETag" in responses["200"]["headers"] and "304" in responses, path
