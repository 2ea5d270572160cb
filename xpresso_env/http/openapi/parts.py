"""The building blocks of the OpenAPI description: schema references and objects, request bodies
as the services' own rules state them, answers, parameters, and an operation with the errors every
authenticated call can answer."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from ...core import wire
from ...core.validation import Rule

Schema = wire.Schema


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Any], required: Optional[list[str]] = None, extra: bool = False) -> Schema:
    out: Schema = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        out["required"] = required
    return out


def body_schema(fields: Mapping[str, Rule], required: frozenset[str] = frozenset()) -> Schema:
    """A request body: exactly the fields the service accepts, each as its rule states itself."""
    props = {}
    for name, rule in fields.items():
        props[name] = rule.schema()
        if name in wire.CREDENTIALS:
            props[name]["writeOnly"] = True
    return obj(props, sorted(required))


def _filter_schema(enum_cls: Optional[type]) -> Schema:
    return wire.enum_schema(enum_cls) if enum_cls is not None else dict(wire.STRING)


def err(description: str, headers: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ref("Error")}}}
    if headers:
        out["headers"] = headers
    return out


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def json_answer(description: str, schema: dict[str, Any], headers: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


AUTH_ERRORS = {"401": err("Not authenticated, invalid or expired token"),
               "403": err("Not a member of the group, or lacking the permission"),
               "400": {"description": "Bad input", "content": {"application/json": {
                   "schema": {"oneOf": [ref("Error"), ref("FieldErrors")]}}}}}
TOTAL = {"X-Total-Count": {"description": "the unpaged count", "schema": {"type": "integer"}}}
GROUP = {"$ref": "#/components/parameters/group"}
PAGING = [{"$ref": "#/components/parameters/limit"}, {"$ref": "#/components/parameters/offset"},
          {"$ref": "#/components/parameters/deleted"}]
BODY_ERRORS = {"413": err("body too large"), "415": err("not JSON")}


def filter_params(filters: Mapping[str, Optional[type]]) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "required": False, "schema": _filter_schema(enum_cls),
             "description": "equality filter"} for name, enum_cls in filters.items()]


def path_param(name: str, schema: Optional[Schema] = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or dict(wire.UUID)}


def request_body(schema_name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(schema_name)}}}


def op(summary: str, responses: dict[str, Any], permission: Optional[str] = None,
       parameters: tuple[dict[str, Any], ...] | list[dict[str, Any]] = (), **extra: Any) -> dict[str, Any]:
    out = {"summary": summary + (f" (permission: {permission})" if permission else ""),
           "parameters": [GROUP, *parameters],
           "responses": {**responses, **AUTH_ERRORS}, "security": [{"jwt": []}]}
    out.update(extra)
    return out
