"""The OpenAPI 3.1 description of the API, built here so it stays in step with the code:
tests check it with a real validator and against the mounted routes."""
from __future__ import annotations

from typing import Any

from .. import __version__

TIME = {"type": "string", "format": "date-time", "examples": ["2019-05-30T17:22:12.733397Z"]}
UUID = {"type": "string", "format": "uuid"}
CONFIG_STATE = {"type": "string", "enum": ["ENABLED", "DISABLED", "MAINTENANCE"]}
OPER_STATE = {"type": "string", "enum": ["ONLINE", "OFFLINE", "UNKNOWN"]}
HARNESS_TYPE = {"type": "string", "enum": ["pyATS", "Tcl-ATS"]}
ENGINE_TYPE = {"type": "string", "enum": ["jenkins", "cloud"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        out["required"] = required
    return out


_HARNESS_PROPS = {
    "id": UUID, "name": {"type": "string"}, "harness": HARNESS_TYPE, "path": {"type": "string"},
    "supporting_path": {"type": "string"}, "configuration_state": CONFIG_STATE,
    "operational_state": OPER_STATE, "site": {"type": "string"}, "bldg": {"type": "string"},
    "created_by": {"type": "string"}, "date_created": TIME, "date_modified": TIME, "deleted": {"type": "boolean"},
}
_ENGINE_PROPS = {
    "id": UUID, "name": {"type": "string"}, "type": ENGINE_TYPE, "base_url": {"type": "string", "format": "uri"},
    "configuration_state": CONFIG_STATE, "operational_state": OPER_STATE, "site": {"type": "string"},
    "bldg": {"type": "string"}, "created_by": {"type": "string"}, "date_created": TIME,
    "date_modified": TIME, "deleted": {"type": "boolean"},
}
_V1 = {"id": "uuid", "configuration_state": "config_state", "operational_state": "oper_state"}


def _v1(props: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {_V1.get(k, k): v for k, v in props.items()}
    out.update(extra or {})
    return _obj(out, list(out))


_HARNESS_WRITE = {
    "name": {"type": "string", "minLength": 1, "maxLength": 128}, "harness": HARNESS_TYPE,
    "path": {"type": "string", "pattern": "^/", "maxLength": 4096},
    "supporting_path": {"type": "string", "maxLength": 4096}, "configuration_state": CONFIG_STATE,
    "site": {"type": "string", "maxLength": 64}, "bldg": {"type": "string", "maxLength": 64},
    "support_liveview": {"type": "boolean"},
}
_ENGINE_WRITE = {
    "name": {"type": "string", "minLength": 1, "maxLength": 128}, "type": ENGINE_TYPE,
    "base_url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://", "maxLength": 2048},
    "configuration_state": CONFIG_STATE, "site": {"type": "string", "maxLength": 64},
    "bldg": {"type": "string", "maxLength": 64},
    "username": {"type": ["string", "null"], "writeOnly": True, "maxLength": 256},
    "api_token": {"type": ["string", "null"], "writeOnly": True, "maxLength": 4096},
}

IMAGE_PROPS = {
    "credentials": {"type": "null"}, "uuid": UUID, "name": {"type": "string"}, "tag": {"type": "string"},
    "data": {"type": "string", "description": "a Python literal dict, as XPRESSO writes it"},
    "status": {"type": "string", "enum": ["building", "successful", "failed", "cancelled"]},
    "group": {"type": "string"}, "git_ref": {"type": "string"}, "date_created": TIME, "date_updated": TIME,
    "container_details": {"type": ["object", "null"]}, "yaml_content": {"type": ["string", "null"]},
    "worker_meta": {"type": ["object", "null"]}, "size": {"type": "integer"}, "virtual_size": {"type": "integer"},
    "image_id": {"type": "string"}, "jobs": {"type": ["array", "null"], "items": {"type": "string"}},
    "manifests": {"type": ["array", "null"], "items": {"type": "string"}},
    "push_url": {"type": ["string", "null"]}, "pin_version": {"type": ["boolean", "null"]},
    "is_nfs_storage": {"type": "boolean"}, "nfs_path": {"type": "string"}, "is_deleted": {"type": "boolean"},
    "is_polaris_image": {"type": "boolean", "const": True}, "base_ref": {"type": ["string", "null"]},
    "meta": {"type": ["object", "null"]}, "type": {"type": "string", "const": "genie"},
    "custom": {"type": "boolean", "const": True},
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"detail": {"type": "string"}}, ["detail"]),
    "FieldErrors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    "Harness": _obj(_HARNESS_PROPS, list(_HARNESS_PROPS)),
    "HarnessV1": _v1(_HARNESS_PROPS, {"support_liveview": {"type": "boolean"}}),
    "HarnessCreate": _obj(_HARNESS_WRITE, ["name", "path"]),
    "HarnessPatch": _obj(_HARNESS_WRITE),
    "Engine": _obj(_ENGINE_PROPS, list(_ENGINE_PROPS)),
    "EngineV1": _v1(_ENGINE_PROPS),
    "EngineCreate": _obj(_ENGINE_WRITE, ["name", "base_url"]),
    "EnginePatch": _obj(_ENGINE_WRITE),
    "ResourceMeta": _obj({"id": UUID, "name": {"type": "string"}, "group": {"type": "string"},
                          "category": {"type": "string", "enum": ["harnesses", "engines"]},
                          "owner": {"type": "string"}, "date_created": TIME, "deleted": {"type": "boolean"}},
                         ["id", "name", "group", "category", "owner", "date_created", "deleted"]),
    "ResourceMetaV1": _obj({"uuid": UUID, "name": {"type": "string"}, "group": {"type": "string"},
                            "category": {"type": "string", "enum": ["harnesses", "engines"]},
                            "owner": {"type": "string"}, "date_created": TIME, "deleted": {"type": "boolean"}},
                           ["uuid", "name", "group", "category", "owner", "date_created", "deleted"]),
    "Image": _obj(IMAGE_PROPS, list(IMAGE_PROPS)),
    "PolarisBuild": _obj({
        "name": {"type": "string", "pattern": "^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"},
        "tag": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"},
        "git_ref": {"type": "string"}, "base_ref": {"type": ["string", "null"]},
        "groups": {"type": "array", "items": {"type": "string"}},
    }, ["name", "tag", "git_ref"]),
    "ImagePatch": _obj({"pin_version": {"type": "boolean"}}, ["pin_version"]),
    "Plugin": _obj({"name": {"type": "string"}, "version": {"type": "string"},
                    "hooks": {"type": "array", "items": {"type": "string"}}}, ["name", "version", "hooks"]),
    "Health": _obj({"status": {"type": "string"}, "version": {"type": "string"},
                    "storage": {"type": "string"}, "builder": {"type": ["string", "null"]},
                    "builder_problem": {"type": ["string", "null"]},
                    "plugins": {"type": "array", "items": _ref("Plugin")}}, ["status", "version", "storage"], extra=True),
}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


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
PAGING = [{"$ref": "#/components/parameters/limit"}, {"$ref": "#/components/parameters/offset"},
          {"$ref": "#/components/parameters/deleted"}]


def _filters(names: list[str]) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "required": False, "schema": {"type": "string"},
             "description": "equality filter"} for n in names]


def _path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _body(schema_name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _op(summary: str, responses: dict[str, Any], permission: str | None = None, **extra: Any) -> dict[str, Any]:
    out = {"summary": summary + (f" (permission: {permission})" if permission else ""),
           "responses": {**responses, **AUTH_ERRORS}, "security": [{"jwt": []}]}
    out.update(extra)
    return out


def _registry_paths(plural: str, schema: str, filters: list[str], perms: tuple[str, str, str]) -> dict[str, Any]:
    add, change, delete = perms
    paths: dict[str, Any] = {}
    item_param = [_path_param("id")]
    paths[f"/api/v2/{plural}"] = {
        "get": _op(f"List the group's {plural}", {"200": _json("the records", {"type": "array", "items": _ref(schema)}, TOTAL)},
                   parameters=PAGING + _filters(filters)),
        "post": _op(f"Create a {schema.lower()}", {"201": _json("created", _ref(schema)),
                                                   "409": _err("name already used in the group"),
                                                   "413": _err("body too large"), "415": _err("not JSON")},
                    add, requestBody=_body(f"{schema}Create")),
    }
    paths[f"/api/v2/{plural}/{{id}}"] = {
        "parameters": item_param,
        "get": _op(f"Retrieve a {schema.lower()}", {"200": _json("the record", _ref(schema)), "404": _err("not found")}),
        "patch": _op(f"Change a {schema.lower()}", {"200": _json("changed", _ref(schema)), "404": _err("not found"),
                                                    "409": _err("name clash"), "413": _err("body too large"),
                                                    "415": _err("not JSON")},
                     change, requestBody=_body(f"{schema}Patch")),
        "delete": _op(f"Soft-delete a {schema.lower()}", {"204": {"description": "deleted"}, "404": _err("not found")}, delete),
    }
    paths[f"/api/v1/{plural}"] = {
        "get": _op(f"List the group's {plural} (v1 shape)",
                   {"200": _json("the records", {"type": "array", "items": _ref(schema + "V1")}, TOTAL)},
                   parameters=PAGING + _filters(filters)),
    }
    paths[f"/api/v1/{plural}/{{uuid}}"] = {
        "parameters": [_path_param("uuid")],
        "get": _op(f"Retrieve a {schema.lower()} (v1 shape)", {"200": _json("the record", _ref(schema + "V1")),
                                                               "404": _err("not found")}),
    }
    return paths


def _lookup_paths() -> dict[str, Any]:
    paths = {}
    for version, schema in (("v1", "ResourceMetaV1"), ("v2", "ResourceMeta")):
        for spelling in ("resouces", "resources"):
            paths[f"/api/{version}/{spelling}/{{category}}/{{name}}"] = {
                "parameters": [_path_param("category", {"type": "string", "enum": ["harnesses", "engines"]}),
                               _path_param("name")],
                "get": _op("Look a harness or engine up by name", {"200": _json("meta", _ref(schema)),
                                                                   "404": _err("not found")}),
            }
    return paths


def _image_paths() -> dict[str, Any]:
    uuid_param = [_path_param("uuid")]
    return {
        "/api/v2/images": {"get": _op("List images visible in the group",
                                      {"200": _json("the images", {"type": "array", "items": _ref("Image")}, TOTAL)},
                                      parameters=PAGING + _filters(["name", "tag", "status", "git_ref"]))},
        "/api/v2/images/polaris_build": {"post": _op(
            "Build a Polaris image in the background", {"200": _json("the image, status building", _ref("Image")),
                                                        "409": _err("the same name:tag is building"),
                                                        "413": _err("body too large"), "415": _err("not JSON"),
                                                        "503": _err("no builder available")},
            "add_docker_image", requestBody=_body("PolarisBuild"))},
        "/api/v2/images/{uuid}": {
            "parameters": uuid_param,
            "get": _op("Retrieve an image", {"200": _json("the image", _ref("Image")), "404": _err("not found")}),
            "patch": _op("Pin or unpin an image against retention", {"200": _json("the image", _ref("Image")),
                                                                     "404": _err("not found")},
                         "add_docker_image", requestBody=_body("ImagePatch")),
            "delete": _op("Delete an image (cancels a running build)", {"204": {"description": "deleted"},
                                                                        "404": _err("not found")},
                          "delete_docker_image"),
        },
        "/api/v2/images/{uuid}/logs": {
            "parameters": uuid_param,
            "get": _op("The build log", {"200": {"description": "log text", "content": {"text/plain": {"schema": {"type": "string"}}}},
                                         "404": _err("not found"),
                                         "429": _err("too many logs followed at once: poll with offset")},
                       parameters=[{"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                                   {"name": "follow", "in": "query", "schema": {"type": "boolean"}}]),
        },
        "/api/v2/images/{uuid}/cancel": {
            "parameters": uuid_param,
            "post": _op("Cancel a running build", {"200": _json("the image, cancelled", _ref("Image")),
                                                   "404": _err("not found"), "409": _err("the build has ended")},
                        "add_docker_image"),
        },
    }


def build_openapi(include_images: bool = True) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    paths.update(_registry_paths("harnesses", "Harness",
                                 ["name", "harness", "site", "bldg", "configuration_state", "operational_state"],
                                 ("add_harness", "change_harness", "delete_harness")))
    paths.update(_registry_paths("engines", "Engine",
                                 ["name", "type", "site", "bldg", "configuration_state", "operational_state"],
                                 ("add_engine", "change_engine", "delete_engine")))
    paths.update(_lookup_paths())
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
                 "description": "XPRESSO Environment REST APIs: test harnesses, execution engines, Polaris image builds."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"jwt": {"type": "apiKey", "in": "header", "name": "Authorization",
                                        "description": "`Jwt <token>` (also `Bearer <token>` or the bare token)"}},
            "parameters": {
                "limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                "offset": {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                "deleted": {"name": "deleted", "in": "query", "schema": {"type": "boolean"},
                            "description": "true: list deleted records too"},
            },
        },
        "security": [{"jwt": []}],
    }
