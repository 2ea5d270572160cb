"""Records to wire dicts. The v1/v2 names live only here."""
from __future__ import annotations

from typing import Any

from ..models import Engine, Harness
from ..timeutil import format_time


def _common_tail(r: Any) -> dict[str, Any]:
    return {"site": r.site, "bldg": r.bldg, "created_by": r.created_by,
            "date_created": format_time(r.date_created), "date_modified": format_time(r.date_modified),
            "deleted": r.deleted}


def harness_v2(h: Harness) -> dict[str, Any]:
    return {"id": str(h.id), "name": h.name, "harness": h.harness.value, "path": h.path,
            "supporting_path": h.supporting_path, "configuration_state": h.configuration_state.value,
            "operational_state": h.operational_state.value, **_common_tail(h)}


def engine_v2(g: Engine) -> dict[str, Any]:
    # Credentials (username, api_token) are write-only: never here.
    return {"id": str(g.id), "name": g.name, "type": g.type.value, "base_url": g.base_url,
            "configuration_state": g.configuration_state.value,
            "operational_state": g.operational_state.value, **_common_tail(g)}


_V1_NAMES = {"id": "uuid", "configuration_state": "config_state", "operational_state": "oper_state"}


def to_v1(v2: dict[str, Any]) -> dict[str, Any]:
    return {_V1_NAMES.get(k, k): v for k, v in v2.items()}


def harness_v1(h: Harness) -> dict[str, Any]:
    out = to_v1(harness_v2(h))
    # v1 harnesses carry support_liveview after bldg, as XPRESSO's v1 example shows.
    ordered: dict[str, Any] = {}
    for k, v in out.items():
        ordered[k] = v
        if k == "bldg":
            ordered["support_liveview"] = h.support_liveview
    return ordered


def engine_v1(g: Engine) -> dict[str, Any]:
    return to_v1(engine_v2(g))


def resource_meta(record: Any, category: str, id_key: str = "id") -> dict[str, Any]:
    return {id_key: str(record.id), "name": record.name, "group": record.group, "category": category,
            "owner": record.created_by, "date_created": format_time(record.date_created),
            "deleted": record.deleted}
