"""Wire dicts for harnesses and engines. The v1/v2 names live only here.

They are built from a record's stored body (``codec.record_body``), which already holds
wire-format values (id and time strings, enum values): a list answer needs no decoding of its
records at all. Each shape picks its keys explicitly, so engine credentials can never leak.
"""
from __future__ import annotations

from typing import Any

HARNESS_V2 = ("id", "name", "harness", "path", "supporting_path", "configuration_state", "operational_state",
              "site", "bldg", "created_by", "date_created", "date_modified", "deleted")
ENGINE_V2 = ("id", "name", "type", "base_url", "configuration_state", "operational_state", "site", "bldg",
             "created_by", "date_created", "date_modified", "deleted")
_V1_NAMES = {"id": "uuid", "configuration_state": "config_state", "operational_state": "oper_state"}
# v1 harnesses carry support_liveview after bldg, as XPRESSO's v1 example shows.
HARNESS_V1 = HARNESS_V2[:9] + ("support_liveview",) + HARNESS_V2[9:]
ENGINE_V1 = ENGINE_V2


def harness_v2(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in HARNESS_V2}


def engine_v2(body: dict[str, Any]) -> dict[str, Any]:
    # Credentials (username, api_token) are write-only: not among the keys.
    return {k: body[k] for k in ENGINE_V2}


def harness_v1(body: dict[str, Any]) -> dict[str, Any]:
    return {_V1_NAMES.get(k, k): body.get(k, False) if k == "support_liveview" else body[k] for k in HARNESS_V1}


def engine_v1(body: dict[str, Any]) -> dict[str, Any]:
    return {_V1_NAMES.get(k, k): body[k] for k in ENGINE_V1}


def resource_meta(body: dict[str, Any], category: str, id_key: str = "id") -> dict[str, Any]:
    return {id_key: body["id"], "name": body["name"], "group": body["group"], "category": category,
            "owner": body["created_by"], "date_created": body["date_created"], "deleted": body["deleted"]}
