"""The paths of the registries and their look-up, the images, probe state, history, webhooks and
metrics."""
from __future__ import annotations

from typing import Any

from ...builds.idempotency import KEY_RE as IDEMPOTENCY_KEY_RE
from ...builds.service import ADD, DELETE
from ...builds.service import FILTERS as IMAGE_FILTERS
from ...core import wire
from ...journal.webhooks import PERMISSION
from ...registry.service import KindSpec
from .parts import (BODY_ERRORS, PAGING, RETRY_AFTER, TOTAL, err, filter_params, json_answer, op, path_param, ref,
                    request_body)

IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_RE.pattern},
                   "description": "1 to 64 visible ASCII characters (a UUID, say). The same key and body from "
                                  "the same group within 24 h answers the first request's image (200) instead "
                                  "of building again; the same key with another body is a 422."}


def registry_paths(plural: str, schema: str, spec: KindSpec) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    label = spec.label
    list_params = PAGING + filter_params(spec.filters)
    paths[f"/api/v2/{plural}"] = {
        "get": op(f"List the group's {plural}",
                  {"200": json_answer("the records", {"type": "array", "items": ref(schema)}, TOTAL)},
                  parameters=list_params),
        "post": op(f"Create a {label}", {"201": json_answer("created", ref(schema)),
                                         "409": err("name already used in the group"), **BODY_ERRORS},
                   spec.add, requestBody=request_body(f"{schema}Create")),
    }
    paths[f"/api/v2/{plural}/{{id}}"] = {
        "parameters": [path_param("id")],
        "get": op(f"Retrieve a {label}", {"200": json_answer("the record", ref(schema)), "404": err("not found")}),
        "patch": op(f"Change a {label}", {"200": json_answer("changed", ref(schema)), "404": err("not found"),
                                          "409": err("name already used in the group, or the record is deleted"),
                                          **BODY_ERRORS},
                    spec.change, requestBody=request_body(f"{schema}Patch")),
        "delete": op(f"Soft-delete a {label}", {"204": {"description": "deleted"}, "404": err("not found")},
                     spec.delete),
    }
    paths[f"/api/v1/{plural}"] = {
        "get": op(f"List the group's {plural} (v1 shape)",
                  {"200": json_answer("the records", {"type": "array", "items": ref(schema + "V1")}, TOTAL)},
                  parameters=list_params),
    }
    paths[f"/api/v1/{plural}/{{uuid}}"] = {
        "parameters": [path_param("uuid")],
        "get": op(f"Retrieve a {label} (v1 shape)", {"200": json_answer("the record", ref(schema + "V1")),
                                                     "404": err("not found")}),
    }
    return paths


def lookup_paths() -> dict[str, Any]:
    paths = {}
    for version, schema in (("v1", "ResourceMetaV1"), ("v2", "ResourceMeta")):
        for spelling in ("resouces", "resources"):
            paths[f"/api/{version}/{spelling}/{{category}}/{{name}}"] = {
                "parameters": [path_param("category", {"type": "string", "enum": list(wire.CATEGORIES)}),
                               path_param("name", dict(wire.STRING))],
                "get": op("Look a harness or engine up by name (a deleted one is not found)",
                          {"200": json_answer("meta", ref(schema)), "404": err("not found")}),
            }
    return paths


def image_paths() -> dict[str, Any]:
    uuid_param = [path_param("uuid")]
    return {
        "/api/v2/images": {"get": op("List images visible in the group",
                                     {"200": json_answer("the images", {"type": "array", "items": ref("Image")},
                                                         TOTAL)},
                                     parameters=PAGING + filter_params(IMAGE_FILTERS))},
        "/api/v2/images/polaris_build": {"post": op(
            "Build a Polaris image in the background", {"200": json_answer("the image, status building", ref("Image")),
                                                        "409": err("the same name:tag is building"), **BODY_ERRORS,
                                                        "422": err("this Idempotency-Key came with another body "
                                                                   "within 24 h"),
                                                        "429": err("the group has builds.max_queued_per_group "
                                                                   "builds building: retry later",
                                                                   headers=RETRY_AFTER),
                                                        "503": err("no builder available, or polaris.repo is "
                                                                   "not configured")},
            ADD, parameters=[IDEMPOTENCY_KEY], requestBody=request_body("PolarisBuild"))},
        "/api/v2/images/{uuid}": {
            "parameters": uuid_param,
            "get": op("Retrieve an image", {"200": json_answer("the image", ref("Image")), "404": err("not found")}),
            "patch": op("Pin or unpin an image against retention", {"200": json_answer("the image", ref("Image")),
                                                                    "404": err("not found"),
                                                                    "409": err("the image has been deleted"),
                                                                    **BODY_ERRORS},
                        ADD, requestBody=request_body("ImagePatch")),
            "delete": op("Delete an image (cancels a running build)", {"204": {"description": "deleted"},
                                                                       "404": err("not found")},
                         DELETE),
        },
        "/api/v2/images/{uuid}/logs": {
            "parameters": uuid_param,
            "get": op("The build log", {"200": {"description": "log text (empty past its end)",
                                                "content": {"text/plain": {"schema": {"type": "string"}}}},
                                        "404": err("not found"),
                                        "429": err("too many logs followed at once: poll with offset")},
                      parameters=[{"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                                  {"name": "follow", "in": "query", "schema": {"type": "boolean"},
                                   "description": "stream the log until the build ends"}]),
        },
        "/api/v2/images/{uuid}/cancel": {
            "parameters": uuid_param,
            "post": op("Cancel a running build", {"200": json_answer("the image, cancelled", ref("Image")),
                                                  "404": err("not found"), "409": err("the build has ended")},
                       ADD),
        },
    }


def metrics_paths() -> dict[str, Any]:
    """GET /metrics (api/metrics.py): outside /api, no token, Prometheus' text format."""
    text = {"schema": {"type": "string"}}
    return {"/metrics": {"get": {
        "summary": "Prometheus metrics (off with server.metrics: false)", "security": [],
        "description": "The Prometheus text exposition format (OpenMetrics when the Accept header asks for it).",
        "responses": {"200": {"description": "the metrics",
                              "content": {"text/plain": text, "application/openmetrics-text": text}}}}}}


def state_paths() -> dict[str, Any]:
    """GET /api/v2/{harnesses,engines}/{id}/state (api/probe_state.py)."""
    from ..resources.probe_state import SCHEMA as STATE_SCHEMA

    return {f"/api/v2/{plural}/{{id}}/state": {
        "parameters": [path_param("id")],
        "get": op(f"The {label}'s operational state: since when, why, and its last probe",
                  {"200": json_answer("the state", STATE_SCHEMA), "404": err("not found")}),
    } for plural, label in (("harnesses", "harness"), ("engines", "engine"))}


def history_and_webhook_paths() -> dict[str, Any]:
    """History (api/history.py) and webhooks (api/webhooks.py): CONTRACT sections 8 and 9."""
    paging = PAGING[:2]
    paths: dict[str, Any] = {f"/api/v2/{plural}/{{id}}/history": {
        "parameters": [path_param("id")],
        "get": op(f"The {label}'s history, oldest first: created, updated, deleted and state events",
                  {"200": json_answer("the history", {"type": "array", "items": ref("HistoryEntry")}, TOTAL),
                   "404": err("not found (or another group's)")}, parameters=paging),
    } for plural, label in (("harnesses", "harness"), ("engines", "engine"))}
    hook_404 = {"404": err("no such webhook in the group")}
    paths["/api/v2/webhooks"] = {
        "get": op("List the group's webhooks",
                  {"200": json_answer("the webhooks", {"type": "array", "items": ref("Webhook")}, TOTAL)}, PERMISSION,
                  parameters=paging),
        "post": op("Subscribe a URL to events", {"201": json_answer("created", ref("Webhook")), **BODY_ERRORS,
                                                 "409": err("the group has events.max_webhooks_per_group webhooks")},
                   PERMISSION, requestBody=request_body("WebhookCreate")),
    }
    paths["/api/v2/webhooks/{id}"] = {
        "parameters": [path_param("id")],
        "get": op("Retrieve a webhook", {"200": json_answer("the webhook", ref("Webhook")), **hook_404}, PERMISSION),
        "patch": op("Change a webhook", {"200": json_answer("changed", ref("Webhook")), **hook_404, **BODY_ERRORS},
                    PERMISSION, requestBody=request_body("WebhookPatch")),
        "delete": op("Delete a webhook (its pending deliveries fail)", {"204": {"description": "deleted"},
                                                                        **hook_404}, PERMISSION),
    }
    status = {"name": "status", "in": "query", "required": False, "description": "equality filter",
              "schema": {"type": "string", "enum": ["pending", "delivered", "failed"]}}
    paths["/api/v2/webhooks/{id}/deliveries"] = {
        "parameters": [path_param("id")],
        "get": op("The webhook's deliveries, newest first",
                  {"200": json_answer("the deliveries", {"type": "array", "items": ref("Delivery")}, TOTAL),
                   **hook_404},
                  PERMISSION, parameters=[*paging, status]),
    }
    paths["/api/v2/webhooks/{id}/deliveries/{delivery_id}/redeliver"] = {
        "parameters": [path_param("id"), path_param("delivery_id")],
        "post": op("Queue a delivery again (same id, same body)",
                   {"202": json_answer("the delivery, pending", ref("Delivery")),
                    "404": err("no such webhook or delivery")}, PERMISSION),
    }
    return paths
