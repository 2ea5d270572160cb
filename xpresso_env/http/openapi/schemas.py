"""The named schemas (``components.schemas``): records as ``core.wire`` shapes them, request bodies
from the services' field tables."""
from __future__ import annotations

from typing import Any

from ...builds.service import PATCH_VALIDATORS, SUBMIT_REQUIRED, SUBMIT_VALIDATORS
from ...core import wire
from ...journal.webhooks import FIELDS as WEBHOOK_FIELDS
from ...journal.webhooks import REQUIRED as WEBHOOK_REQUIRED
from ...registry.service import ENGINE, HARNESS
from .parts import Schema, body_schema, obj, ref


def _webhook_body(required: frozenset[str]) -> Schema:
    body = body_schema(WEBHOOK_FIELDS, required)
    body["properties"]["secret"]["writeOnly"] = True
    return body


SCHEMAS: dict[str, Any] = {
    "Error": obj({"detail": {"type": "string"}}, ["detail"]),
    "FieldErrors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    "description": "DRF field errors: each refused field with its messages"},
    "Harness": wire.HARNESS.schema(),
    "HarnessV1": wire.HARNESS_V1.schema(),
    "HarnessCreate": body_schema(HARNESS.fields, HARNESS.required),
    "HarnessPatch": body_schema(HARNESS.fields),
    "Engine": wire.ENGINE.schema(),
    "EngineV1": wire.ENGINE_V1.schema(),
    "EngineCreate": body_schema(ENGINE.fields, ENGINE.required),
    "EnginePatch": body_schema(ENGINE.fields),
    "ResourceMeta": wire.RESOURCE_META.schema(),
    "ResourceMetaV1": wire.RESOURCE_META_V1.schema(),
    "Image": wire.IMAGE.schema(),
    "PolarisBuild": body_schema(SUBMIT_VALIDATORS, SUBMIT_REQUIRED),
    "ImagePatch": body_schema(PATCH_VALIDATORS, frozenset(PATCH_VALIDATORS)),
    "Plugin": obj({"name": {"type": "string"}, "version": {"type": "string"},
                   "hooks": {"type": "array", "items": {"type": "string"}},
                   "storage": obj({"backend": {"type": "string"}, "in_use": {"type": "boolean"},
                                   "response_cache": {"type": "string",
                                                      "description": "on, or off and why"}},
                                  ["backend", "in_use", "response_cache"])},
                  ["name", "version", "hooks"]),
    "Health": obj({"status": {"type": "string"}, "version": {"type": "string"},
                   "storage": {"type": "string"}, "builder": {"type": ["string", "null"]},
                   "builder_problem": {"type": ["string", "null"]},
                   "probes": {"type": "object", "description": "enabled, running, problem, records, in_flight"},
                   "probes_problem": {"type": ["string", "null"], "description": "why probing is not working"},
                   "down": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": "each part that is down (storage, builder, probes) and why; {} when "
                                            "all work"},
                   "plugins": {"type": "array", "items": ref("Plugin")},
                   "processes": {"type": "object",
                                 "description": "the processes serving this port (server.processes): configured, "
                                                 "serving (now), generation (1, then one more per reload), pid (of "
                                                 "the process that answered), supervisor (its pid; null with one "
                                                 "process)"}},
                  ["status", "version", "storage"], extra=True),
    "HistoryEntry": wire.HISTORY_ENTRY.schema(),
    "Webhook": wire.WEBHOOK.schema(),
    "Delivery": wire.DELIVERY.schema(),
    "WebhookCreate": _webhook_body(WEBHOOK_REQUIRED),
    "WebhookPatch": _webhook_body(frozenset()),
}
