"""The whole document: every group of paths, each answer with its X-Request-Id header and each
GET with its ETag, the operations tagged and ordered by tag."""
from __future__ import annotations

from typing import Any, Optional

from ... import __version__
from ...core import wire
from ...registry.service import ENGINE, HARNESS
from .identity import me_paths
from .parts import json_answer, ref
from .paths import (history_and_webhook_paths, image_paths, lookup_paths, metrics_paths, registry_paths,
                    state_paths)
from .schemas import SCHEMAS


# Not `required`: the edge (create_wsgi_app) adds it, and the bare falcon app is tested too.
REQUEST_ID_HEADER = {"description": "sent on every answer: the request's X-Request-Id if it was safe, else a new id",
                     "schema": wire.REQUEST_ID.schema()}


def _with_request_id(paths: dict[str, Any]) -> dict[str, Any]:
    """Every documented answer with the X-Request-Id header (CONTRACT section 10)."""
    out: dict[str, Any] = {}
    for path, item in paths.items():
        out[path] = {method: ({**op, "responses": {code: {**answer, "headers": {**answer.get("headers", {}),
                                                                              "X-Request-Id": REQUEST_ID_HEADER}}
                                                   for code, answer in op["responses"].items()}}
                              if isinstance(op, dict) and "responses" in op else op)
                     for method, op in item.items()}
    return out


# Conditional GET (CONTRACT section 14, http/conditional.py): documented on every GET.
ETAG_HEADER = {"description": "the answer's tag: send it back as If-None-Match to get a 304 while the answer "
                              "is unchanged (not on a streamed log)", "schema": {"type": "string"}}
NOT_MODIFIED = {"description": "Not Modified: If-None-Match named the current ETag; no body",
                "headers": {"ETag": ETAG_HEADER}}


def _with_etags(paths: dict[str, Any]) -> dict[str, Any]:
    """Every GET's 200 with its ETag header, and its 304."""
    out: dict[str, Any] = {}
    for path, item in paths.items():
        get = item.get("get")
        if isinstance(get, dict) and "200" in get.get("responses", {}):
            ok = get["responses"]["200"]
            ok = {**ok, "headers": {**ok.get("headers", {}), "ETag": ETAG_HEADER}}
            get = {**get, "responses": {**get["responses"], "200": ok, "304": NOT_MODIFIED}}
            item = {**item, "get": get}
        out[path] = item
    return out


# The operations' tags, in the order the API reference shows them (CONTRACT third wave).
TAGS = (("registries", "Test harnesses and execution engines, and their look-up by name"),
        ("images", "Polaris image builds, their logs, pins and retention"),
        ("probes", "Operational state: what the probes found, since when and why"),
        ("events", "What happened: each record's history, and webhooks that carry events out"),
        ("identity", "Who you are: signing in, your profile and API tokens, the audit"),
        ("meta", "This document, plugins, health and metrics"))
# path prefix or suffix -> tag; the first rule that fits wins (suffixes first: /harnesses/{id}/state
# is about probes, not the registry).
_TAG_SUFFIXES = (("/state", "probes"), ("/history", "events"))
_TAG_PREFIXES = (("/api/v2/webhooks", "events"), ("/api/v2/images", "images"),
                 ("/api/v2/me", "identity"), ("/api/v2/auth", "identity"), ("/api/v2/audit", "identity"),
                 ("/api/v2/users", "identity"), ("/api/v2/tokens", "identity"),
                 ("/api/v2/openapi.json", "meta"), ("/api/v2/plugins", "meta"), ("/api/v2/health", "meta"),
                 ("/metrics", "meta"), ("/api/v1/", "registries"), ("/api/v2/harnesses", "registries"),
                 ("/api/v2/engines", "registries"), ("/api/v2/resources", "registries"),
                 ("/api/v2/resouces", "registries"))
_TAG_ORDER = {name: i for i, (name, _) in enumerate(TAGS)}


def tag_of(path: str) -> Optional[str]:
    """The tag of a documented path; None for one no rule covers (tests/api/test_openapi.py
    fails then: every operation is tagged)."""
    for suffix, tag in _TAG_SUFFIXES:
        if path.endswith(suffix):
            return tag
    for prefix, tag in _TAG_PREFIXES:
        if path.startswith(prefix):
            return tag
    return None


def _tagged(paths: dict[str, Any]) -> dict[str, Any]:
    """Each operation with its tag (one it already states is kept), the paths in the tags' order."""
    out: dict[str, Any] = {}
    for path, item in paths.items():
        tag = tag_of(path)
        out[path] = {method: ({**op, "tags": op.get("tags") or ([tag] if tag else [])}
                              if isinstance(op, dict) and "responses" in op else op)
                     for method, op in item.items()}

    def rank(path: str) -> int:
        tags = [t for op in out[path].values() if isinstance(op, dict) for t in op.get("tags", ())]
        return _TAG_ORDER.get(tags[0], len(TAGS)) if tags else len(TAGS)

    return {path: out[path] for path in sorted(out, key=rank)}  # sorted() is stable: order within a tag kept


def build_openapi(include_images: bool = True, include_metrics: bool = True) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    paths.update(history_and_webhook_paths())
    paths.update(state_paths())
    if include_metrics:
        paths.update(metrics_paths())
    paths.update(registry_paths("harnesses", "Harness", HARNESS))
    paths.update(registry_paths("engines", "Engine", ENGINE))
    paths.update(lookup_paths())
    paths.update(me_paths())
    if include_images:
        paths.update(image_paths())
    paths["/api/v2/openapi.json"] = {"get": {"summary": "This document", "security": [],
                                             "responses": {"200": json_answer("OpenAPI 3.1", {"type": "object"})}}}
    plugins = json_answer("plugins", {"type": "array", "items": ref("Plugin")})
    paths["/api/v2/plugins"] = {"get": {"summary": "Loaded plugins and their versions", "security": [],
                                        "responses": {"200": plugins}}}
    paths["/api/v2/health"] = {"get": {"summary": "Liveness and the storage/builder in use", "security": [],
                                       "responses": {"200": json_answer("healthy", ref("Health")),
                                                     "503": json_answer("storage unreachable", ref("Health"))}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "xpresso-env", "version": __version__,
                 "description": "XPRESSO Environment REST APIs: test harnesses, execution engines, Polaris image "
                                "builds. Every string a client sends must be valid Unicode: a lone UTF-16 "
                                "surrogate (such as \\ud800) is a 400 field error. Every GET answer carries an "
                                "ETag: sent back as If-None-Match, an unchanged answer is a 304 with no body."},
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": _with_request_id(_with_etags(_tagged(paths))),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"jwt": {"type": "apiKey", "in": "header", "name": "Authorization",
                                        "description": "`Jwt <token>` (also `Bearer <token>` or the bare token)"}},
            "parameters": {
                "group": {"name": "Group", "in": "header", "required": True,
                          "schema": wire.ACCOUNT_NAME.schema(),
                          "description": "the group the request is for (`X-Group` is read when `Group` is absent)"},
                "limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                "offset": {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                "deleted": {"name": "deleted", "in": "query", "schema": {"type": "boolean"},
                            "description": "true: list deleted records too"},
            },
        },
        "security": [{"jwt": []}],
    }
