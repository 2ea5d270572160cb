"""The OpenAPI 3.1 description of the API, generated from the sources the server itself uses:
record shapes and string grammars from ``wire.py``, body fields (each rule states its own schema),
required fields and list filters from the services' tables. Tests check it with a real validator,
against the mounted routes, and with schemathesis against the running app."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from .. import __version__
from ..builds.idempotency import KEY_RE as IDEMPOTENCY_KEY_RE
from ..builds.service import ADD, DELETE, PATCH_VALIDATORS, SUBMIT_REQUIRED, SUBMIT_VALIDATORS
from ..builds.service import FILTERS as IMAGE_FILTERS
from ..core import wire
from ..core.models import ALL_PERMISSIONS, Role
from ..core.validation import Rule
from ..registry.service import ENGINE, HARNESS, KindSpec

Schema = wire.Schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: Optional[list[str]] = None, extra: bool = False) -> Schema:
    out: Schema = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        out["required"] = required
    return out


def _body(fields: Mapping[str, Rule], required: frozenset[str] = frozenset()) -> Schema:
    """A request body: exactly the fields the service accepts, each as its rule states itself."""
    props = {}
    for name, rule in fields.items():
        props[name] = rule.schema()
        if name in wire.CREDENTIALS:
            props[name]["writeOnly"] = True
    return _obj(props, sorted(required))


def _filter_schema(enum_cls: Optional[type]) -> Schema:
    return wire.enum_schema(enum_cls) if enum_cls is not None else dict(wire.STRING)


SCHEMAS: dict[str, Any] = {
    "Error": _obj({"detail": {"type": "string"}}, ["detail"]),
    "FieldErrors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    "description": "DRF field errors: each refused field with its messages"},
    "Harness": wire.HARNESS.schema(),
    "HarnessV1": wire.HARNESS_V1.schema(),
    "HarnessCreate": _body(HARNESS.fields, HARNESS.required),
    "HarnessPatch": _body(HARNESS.fields),
    "Engine": wire.ENGINE.schema(),
    "EngineV1": wire.ENGINE_V1.schema(),
    "EngineCreate": _body(ENGINE.fields, ENGINE.required),
    "EnginePatch": _body(ENGINE.fields),
    "ResourceMeta": wire.RESOURCE_META.schema(),
    "ResourceMetaV1": wire.RESOURCE_META_V1.schema(),
    "Image": wire.IMAGE.schema(),
    "PolarisBuild": _body(SUBMIT_VALIDATORS, SUBMIT_REQUIRED),
    "ImagePatch": _body(PATCH_VALIDATORS, frozenset(PATCH_VALIDATORS)),
    "Plugin": _obj({"name": {"type": "string"}, "version": {"type": "string"},
                    "hooks": {"type": "array", "items": {"type": "string"}},
                    "storage": _obj({"backend": {"type": "string"}, "in_use": {"type": "boolean"},
                                     "response_cache": {"type": "string",
                                                        "description": "on, or off and why"}},
                                    ["backend", "in_use", "response_cache"])},
                   ["name", "version", "hooks"]),
    "Health": _obj({"status": {"type": "string"}, "version": {"type": "string"},
                    "storage": {"type": "string"}, "builder": {"type": ["string", "null"]},
                    "builder_problem": {"type": ["string", "null"]},
                    "probes": {"type": "object", "description": "enabled, running, problem, records, in_flight"},
                    "probes_problem": {"type": ["string", "null"], "description": "why probing is not working"},
                    "down": {"type": "object", "additionalProperties": {"type": "string"},
                             "description": "each part that is down (storage, builder, probes) and why; {} when "
                                            "all work"},
                    "plugins": {"type": "array", "items": _ref("Plugin")},
                    "processes": {"type": "object",
                                  "description": "the processes serving this port (server.processes): configured, "
                                                 "serving (now), generation (1, then one more per reload), pid (of "
                                                 "the process that answered), supervisor (its pid; null with one "
                                                 "process)"}},
                   ["status", "version", "storage"], extra=True),
}


def _err(description: str, headers: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}
    if headers:
        out["headers"] = headers
    return out


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_RE.pattern},
                   "description": "1 to 64 visible ASCII characters (a UUID, say). The same key and body from "
                                  "the same group within 24 h answers the first request's image (200) instead "
                                  "of building again; the same key with another body is a 422."}


def _json(description: str, schema: dict[str, Any], headers: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


AUTH_ERRORS = {"401": _err("Not authenticated, invalid or expired token"),
               "403": _err("Not a member of the group, or lacking the permission"),
               "400": {"description": "Bad input", "content": {"application/json": {
                   "schema": {"oneOf": [_ref("Error"), _ref("FieldErrors")]}}}}}
TOTAL = {"X-Total-Count": {"description": "the unpaged count", "schema": {"type": "integer"}}}
GROUP = {"$ref": "#/components/parameters/group"}
PAGING = [{"$ref": "#/components/parameters/limit"}, {"$ref": "#/components/parameters/offset"},
          {"$ref": "#/components/parameters/deleted"}]
BODY_ERRORS = {"413": _err("body too large"), "415": _err("not JSON")}


def _filters(filters: Mapping[str, Optional[type]]) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "required": False, "schema": _filter_schema(enum_cls),
             "description": "equality filter"} for name, enum_cls in filters.items()]


def _path_param(name: str, schema: Optional[Schema] = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or dict(wire.UUID)}


def _request(schema_name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _op(summary: str, responses: dict[str, Any], permission: Optional[str] = None,
        parameters: tuple[dict[str, Any], ...] | list[dict[str, Any]] = (), **extra: Any) -> dict[str, Any]:
    out = {"summary": summary + (f" (permission: {permission})" if permission else ""),
           "parameters": [GROUP, *parameters],
           "responses": {**responses, **AUTH_ERRORS}, "security": [{"jwt": []}]}
    out.update(extra)
    return out


def _registry_paths(plural: str, schema: str, spec: KindSpec) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    label = spec.label
    list_params = PAGING + _filters(spec.filters)
    paths[f"/api/v2/{plural}"] = {
        "get": _op(f"List the group's {plural}",
                   {"200": _json("the records", {"type": "array", "items": _ref(schema)}, TOTAL)},
                   parameters=list_params),
        "post": _op(f"Create a {label}", {"201": _json("created", _ref(schema)),
                                          "409": _err("name already used in the group"), **BODY_ERRORS},
                    spec.add, requestBody=_request(f"{schema}Create")),
    }
    paths[f"/api/v2/{plural}/{{id}}"] = {
        "parameters": [_path_param("id")],
        "get": _op(f"Retrieve a {label}", {"200": _json("the record", _ref(schema)), "404": _err("not found")}),
        "patch": _op(f"Change a {label}", {"200": _json("changed", _ref(schema)), "404": _err("not found"),
                                           "409": _err("name already used in the group, or the record is deleted"),
                                           **BODY_ERRORS},
                     spec.change, requestBody=_request(f"{schema}Patch")),
        "delete": _op(f"Soft-delete a {label}", {"204": {"description": "deleted"}, "404": _err("not found")},
                      spec.delete),
    }
    paths[f"/api/v1/{plural}"] = {
        "get": _op(f"List the group's {plural} (v1 shape)",
                   {"200": _json("the records", {"type": "array", "items": _ref(schema + "V1")}, TOTAL)},
                   parameters=list_params),
    }
    paths[f"/api/v1/{plural}/{{uuid}}"] = {
        "parameters": [_path_param("uuid")],
        "get": _op(f"Retrieve a {label} (v1 shape)", {"200": _json("the record", _ref(schema + "V1")),
                                                      "404": _err("not found")}),
    }
    return paths


def _lookup_paths() -> dict[str, Any]:
    paths = {}
    for version, schema in (("v1", "ResourceMetaV1"), ("v2", "ResourceMeta")):
        for spelling in ("resouces", "resources"):
            paths[f"/api/{version}/{spelling}/{{category}}/{{name}}"] = {
                "parameters": [_path_param("category", {"type": "string", "enum": list(wire.CATEGORIES)}),
                               _path_param("name", dict(wire.STRING))],
                "get": _op("Look a harness or engine up by name (a deleted one is not found)",
                           {"200": _json("meta", _ref(schema)), "404": _err("not found")}),
            }
    return paths


def _image_paths() -> dict[str, Any]:
    uuid_param = [_path_param("uuid")]
    return {
        "/api/v2/images": {"get": _op("List images visible in the group",
                                      {"200": _json("the images", {"type": "array", "items": _ref("Image")}, TOTAL)},
                                      parameters=PAGING + _filters(IMAGE_FILTERS))},
        "/api/v2/images/polaris_build": {"post": _op(
            "Build a Polaris image in the background", {"200": _json("the image, status building", _ref("Image")),
                                                        "409": _err("the same name:tag is building"), **BODY_ERRORS,
                                                        "422": _err("this Idempotency-Key came with another body "
                                                                    "within 24 h"),
                                                        "429": _err("the group has builds.max_queued_per_group "
                                                                    "builds building: retry later",
                                                                    headers=RETRY_AFTER),
                                                        "503": _err("no builder available, or polaris.repo is "
                                                                    "not configured")},
            ADD, parameters=[IDEMPOTENCY_KEY], requestBody=_request("PolarisBuild"))},
        "/api/v2/images/{uuid}": {
            "parameters": uuid_param,
            "get": _op("Retrieve an image", {"200": _json("the image", _ref("Image")), "404": _err("not found")}),
            "patch": _op("Pin or unpin an image against retention", {"200": _json("the image", _ref("Image")),
                                                                     "404": _err("not found"),
                                                                     "409": _err("the image has been deleted"),
                                                                     **BODY_ERRORS},
                         ADD, requestBody=_request("ImagePatch")),
            "delete": _op("Delete an image (cancels a running build)", {"204": {"description": "deleted"},
                                                                        "404": _err("not found")},
                          DELETE),
        },
        "/api/v2/images/{uuid}/logs": {
            "parameters": uuid_param,
            "get": _op("The build log", {"200": {"description": "log text (empty past its end)",
                                                 "content": {"text/plain": {"schema": {"type": "string"}}}},
                                         "404": _err("not found"),
                                         "429": _err("too many logs followed at once: poll with offset")},
                       parameters=[{"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                                   {"name": "follow", "in": "query", "schema": {"type": "boolean"},
                                    "description": "stream the log until the build ends"}]),
        },
        "/api/v2/images/{uuid}/cancel": {
            "parameters": uuid_param,
            "post": _op("Cancel a running build", {"200": _json("the image, cancelled", _ref("Image")),
                                                   "404": _err("not found"), "409": _err("the build has ended")},
                        ADD),
        },
    }


def _me_paths() -> dict[str, Any]:
    """GET /api/v2/me (api/me.py): the one route where the Group header is optional. It is stated
    in the description, not as a parameter: a route whose only input is an optional header has no
    schema-invalid request to generate (tests/api/test_schemathesis.py's negative run)."""
    roles = {"type": ["string", "null"], "enum": [r.value for r in Role] + [None],
             "description": "the role; null: a system administrator who is not a member"}
    identity, prefs = _identity_paths()
    me = _obj({"user": {"type": "string"}, "superuser": {"type": "boolean"},
               "groups": {"type": "object", "additionalProperties": roles},
               "group": {"type": ["string", "null"], "description": "the request's group, or null"},
               "permissions": {"type": "array", "items": {"type": "string", "enum": sorted(ALL_PERMISSIONS)},
                               "description": "held in `group` (empty without one)"},
               "email": {"type": ["string", "null"]}, "date_joined": {"type": ["string", "null"]},
               "last_login": {"type": ["string", "null"]},
               "preferences": {**prefs, "required": ["time_zone", "time_format"]},
               "provider": {"type": "string", "description": "the identity provider that keeps the user's "
                            "password (local: `POST /api/v2/me/password` changes it)"}},
              ["user", "superuser", "groups", "group", "permissions", "email", "date_joined", "last_login",
               "preferences", "provider"])
    return {**identity, "/api/v2/me": {"patch": {
        "summary": "Set your preferences (time zone, 12/24 h); answers what GET answers",
        "security": [{"jwt": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _obj(
            {"preferences": prefs}, ["preferences"])}}},
        "responses": {"200": _json("the caller", me), **AUTH_ERRORS, **BODY_ERRORS}}, "get": {
        "summary": "Who the token belongs to: groups, roles, and permissions in the request's group",
        "description": "Any valid token. The `Group` header (or `X-Group`) is optional here: without it "
                       "(and unless the user has exactly one group) `group` is null and `permissions` empty; "
                       "a group the caller may not use is a 403 as everywhere.",
        "security": [{"jwt": []}],
        "responses": {"200": _json("the caller", me), **AUTH_ERRORS}}}}


def _identity_paths() -> tuple[dict[str, Any], Schema]:
    """Signing in, a user's own tokens, password and preferences, and the audit (CONTRACT section
    13; http/resources/auth.py, me.py, audit.py), and the preferences schema GET /me shares. None of
    them takes a group."""
    from ..access.audit import EVENTS
    from ..access.passwords import MAX_LENGTH, MIN_LENGTH
    from ..access.profile import TIME_FORMATS, TOKEN_NAME_MAX, time_zones
    from ..config import AuthSettings

    text = {"type": "string", "minLength": 1, "maxLength": 1024}
    time = dict(wire.TIME)
    token = _obj({"jti": {"type": "string"}, "name": {"type": "string"},
                  "typ": {"type": "string", "enum": ["api", "session"]}, "created": time, "expires": time,
                  "last_used": {"type": ["string", "null"]}, "revoked": {"type": "boolean"}},
                 ["jti", "name", "typ", "created", "expires", "last_used", "revoked"])
    created = {**token, "properties": {**token["properties"], "token": {"type": "string",
                                                                        "description": "`Jwt <token>`, shown once"}},
               "required": ["token", *token["required"]]}
    prefs = _obj({"time_zone": {"type": "string", "enum": sorted(time_zones()),
                                "description": "an IANA time zone name (an unknown one is a 400)"},
                  "time_format": {"type": "string", "enum": list(TIME_FORMATS)}})
    audit_row = _obj({"at": time, "event": {"type": "string", "enum": list(EVENTS)}, "user": {"type": "string"},
                      "by": {"type": "string"}, "address": {"type": "string"}, "detail": {"type": "string"}},
                     ["at", "event", "user", "by", "address", "detail"])
    no_group = {"security": [{"jwt": []}], "responses": dict(AUTH_ERRORS)}

    def op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {**no_group, "summary": summary, **extra, "responses": {**responses, **AUTH_ERRORS}}

    login_body = _obj({"username": {**text, "maxLength": 150}, "password": text}, ["username", "password"])
    paths: dict[str, Any] = {
        "/api/v2/auth/login": {"post": {
            "summary": "Sign in: a session token (claim typ: session) for a user name and password",
            "description": "The identity providers of `auth.providers` are tried in order. A wrong user or a "
                           "wrong password is the same 401. After `auth.login_max_failures` failures for a "
                           "user name within `auth.login_window_s`, every attempt for it is a 429 with "
                           "Retry-After. With the `header` provider, a request from a trusted proxy that "
                           "carries no body (or `{}`) signs in the user its header names.",
            "security": [],
            "requestBody": {"required": True, "content": {"application/json": {"schema": login_body}}},
            "responses": {"200": _json("signed in", _obj({"token": {"type": "string"}, "expires": time,
                                                          "user": {"type": "string"}},
                                                         ["token", "expires", "user"])),
                          "400": AUTH_ERRORS["400"], "401": _err("Invalid username or password."),
                          "429": _err("too many failures for this user name", headers=RETRY_AFTER),
                          "503": _err("the directory cannot be reached"), **BODY_ERRORS}}},
        "/api/v2/auth/logout": {"post": op("Sign out: revoke the calling session token",
                                           {"204": {"description": "signed out"}})},
        "/api/v2/me/tokens": {
            "get": op("Your tokens (never the tokens themselves), oldest first",
                      {"200": _json("your tokens", {"type": "array", "items": token})}),
            "post": op("Make yourself an API token; the answer shows it this once",
                       {"201": _json("the new token", created), **BODY_ERRORS},
                       requestBody={"required": True, "content": {"application/json": {"schema": _obj(
                           {"name": {"type": "string", "minLength": 1, "maxLength": TOKEN_NAME_MAX, "pattern": r"\S",
                                    "description": "not only spaces"},
                            "days": {"type": "integer", "minimum": 1, "maximum": AuthSettings().token_days_max,
                                     "description": "lifetime in days, at most auth.token_days_max (the "
                                                    "maximum shown is its default)"}}, ["name"])}}}),
        },
        "/api/v2/me/tokens/{jti}": {
            "parameters": [_path_param("jti", {"type": "string", "maxLength": 64})],
            "delete": op("Revoke one of your tokens (another user's is a 404)",
                         {"204": {"description": "revoked"}, "404": _err("not one of your tokens")}),
        },
        "/api/v2/me/password": {"post": op(
            "Change your password (local provider)", {"204": {"description": "changed"}, **BODY_ERRORS},
            requestBody={"required": True, "content": {"application/json": {"schema": _obj(
                {"old": {"type": "string"}, "new": {"type": "string", "minLength": MIN_LENGTH,
                                                    "maxLength": MAX_LENGTH}}, ["old", "new"])}}})},
        "/api/v2/audit": {"get": op(
            "The audit, newest first (system administrators only)",
            {"200": _json("audit rows", {"type": "array", "items": audit_row}, TOTAL)},
            parameters=[{"$ref": "#/components/parameters/limit"}, {"$ref": "#/components/parameters/offset"},
                        {"name": "user", "in": "query", "schema": {"type": "string"}},
                        {"name": "event", "in": "query", "schema": {"type": "string", "enum": list(EVENTS)}}])},
    }
    return paths, prefs


def _metrics_paths() -> dict[str, Any]:
    """GET /metrics (api/metrics.py): outside /api, no token, Prometheus' text format."""
    text = {"schema": {"type": "string"}}
    return {"/metrics": {"get": {
        "summary": "Prometheus metrics (off with server.metrics: false)", "security": [],
        "description": "The Prometheus text exposition format (OpenMetrics when the Accept header asks for it).",
        "responses": {"200": {"description": "the metrics",
                              "content": {"text/plain": text, "application/openmetrics-text": text}}}}}}


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


def _state_paths() -> dict[str, Any]:
    """GET /api/v2/{harnesses,engines}/{id}/state (api/probe_state.py)."""
    from .resources.probe_state import SCHEMA as STATE_SCHEMA

    return {f"/api/v2/{plural}/{{id}}/state": {
        "parameters": [_path_param("id")],
        "get": _op(f"The {label}'s operational state: since when, why, and its last probe",
                   {"200": _json("the state", STATE_SCHEMA), "404": _err("not found")}),
    } for plural, label in (("harnesses", "harness"), ("engines", "engine"))}


def _history_and_webhook_paths() -> dict[str, Any]:
    """History (api/history.py) and webhooks (api/webhooks.py): CONTRACT sections 8 and 9."""
    from ..journal.webhooks import FIELDS as WEBHOOK_FIELDS
    from ..journal.webhooks import PERMISSION
    from ..journal.webhooks import REQUIRED as WEBHOOK_REQUIRED

    SCHEMAS.setdefault("HistoryEntry", wire.HISTORY_ENTRY.schema())
    SCHEMAS.setdefault("Webhook", wire.WEBHOOK.schema())
    SCHEMAS.setdefault("Delivery", wire.DELIVERY.schema())
    for name, required in (("WebhookCreate", WEBHOOK_REQUIRED), ("WebhookPatch", frozenset())):
        body = _body(WEBHOOK_FIELDS, required)
        body["properties"]["secret"]["writeOnly"] = True
        SCHEMAS.setdefault(name, body)
    paging = PAGING[:2]
    paths: dict[str, Any] = {f"/api/v2/{plural}/{{id}}/history": {
        "parameters": [_path_param("id")],
        "get": _op(f"The {label}'s history, oldest first: created, updated, deleted and state events",
                   {"200": _json("the history", {"type": "array", "items": _ref("HistoryEntry")}, TOTAL),
                    "404": _err("not found (or another group's)")}, parameters=paging),
    } for plural, label in (("harnesses", "harness"), ("engines", "engine"))}
    hook_404 = {"404": _err("no such webhook in the group")}
    paths["/api/v2/webhooks"] = {
        "get": _op("List the group's webhooks",
                   {"200": _json("the webhooks", {"type": "array", "items": _ref("Webhook")}, TOTAL)}, PERMISSION,
                   parameters=paging),
        "post": _op("Subscribe a URL to events", {"201": _json("created", _ref("Webhook")), **BODY_ERRORS,
                                                  "409": _err("the group has events.max_webhooks_per_group webhooks")},
                    PERMISSION, requestBody=_request("WebhookCreate")),
    }
    paths["/api/v2/webhooks/{id}"] = {
        "parameters": [_path_param("id")],
        "get": _op("Retrieve a webhook", {"200": _json("the webhook", _ref("Webhook")), **hook_404}, PERMISSION),
        "patch": _op("Change a webhook", {"200": _json("changed", _ref("Webhook")), **hook_404, **BODY_ERRORS},
                     PERMISSION, requestBody=_request("WebhookPatch")),
        "delete": _op("Delete a webhook (its pending deliveries fail)", {"204": {"description": "deleted"},
                                                                         **hook_404}, PERMISSION),
    }
    status = {"name": "status", "in": "query", "required": False, "description": "equality filter",
              "schema": {"type": "string", "enum": ["pending", "delivered", "failed"]}}
    paths["/api/v2/webhooks/{id}/deliveries"] = {
        "parameters": [_path_param("id")],
        "get": _op("The webhook's deliveries, newest first",
                   {"200": _json("the deliveries", {"type": "array", "items": _ref("Delivery")}, TOTAL), **hook_404},
                   PERMISSION, parameters=[*paging, status]),
    }
    paths["/api/v2/webhooks/{id}/deliveries/{delivery_id}/redeliver"] = {
        "parameters": [_path_param("id"), _path_param("delivery_id")],
        "post": _op("Queue a delivery again (same id, same body)",
                    {"202": _json("the delivery, pending", _ref("Delivery")),
                     "404": _err("no such webhook or delivery")}, PERMISSION),
    }
    return paths


def build_openapi(include_images: bool = True, include_metrics: bool = True) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    paths.update(_history_and_webhook_paths())
    paths.update(_state_paths())
    if include_metrics:
        paths.update(_metrics_paths())
    paths.update(_registry_paths("harnesses", "Harness", HARNESS))
    paths.update(_registry_paths("engines", "Engine", ENGINE))
    paths.update(_lookup_paths())
    paths.update(_me_paths())
    if include_images:
        paths.update(_image_paths())
    paths["/api/v2/openapi.json"] = {"get": {"summary": "This document", "security": [],
                                             "responses": {"200": {"description": "OpenAPI 3.1",
                                                                   "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    paths["/api/v2/plugins"] = {"get": {"summary": "Loaded plugins and their versions", "security": [],
                                        "responses": {"200": _json("plugins", {"type": "array", "items": _ref("Plugin")})}}}
    paths["/api/v2/health"] = {"get": {"summary": "Liveness and the storage/builder in use", "security": [],
                                       "responses": {"200": _json("healthy", _ref("Health")),
                                                     "503": _json("storage unreachable", _ref("Health"))}}}
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
