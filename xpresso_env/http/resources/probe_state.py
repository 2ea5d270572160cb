"""GET /api/v2/{harnesses,engines}/{id}/state: a record's operational state and its last probe.

Not cached: the probe bookkeeping changes with every probe, and the answer is one or two
document reads."""
from __future__ import annotations

from typing import Any, Iterable

import falcon

from ...access.reads import Reads
from ...core import wire
from ...core.validation import reject_unknown_params
from ...probes.service import read_state
from ...registry.service import ENGINE, HARNESS, KindSpec
from ..common import send_json
from ..request import credentials_of, note_caller

_TIME_OR_NULL = {"type": ["string", "null"], "description": "UTC, YYYY-MM-DDTHH:MM:SS.ffffffZ"}
_STATES = ["ONLINE", "OFFLINE", "UNKNOWN"]

SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["operational_state", "since", "reason", "last_probe", "consecutive_failures",
                 "consecutive_successes"],
    "properties": {
        "operational_state": {"type": "string", "enum": _STATES},
        "since": {**_TIME_OR_NULL, "description": "when the record entered this state"},
        "reason": {"type": ["string", "null"],
                   "description": "why: the last probe that agrees with the state (e.g. `connection refused`, "
                                  "`pyATS 24.3`), or why the record is not probed"},
        "last_probe": {"oneOf": [{"type": "null"}, {
            "type": "object", "additionalProperties": False,
            "required": ["at", "ok", "latency_ms", "detail", "version"],
            "properties": {"at": dict(wire.STRING), "ok": {"type": "boolean"},
                           "latency_ms": {"type": "number", "minimum": 0},
                           "detail": {"type": "string"}, "version": {"type": ["string", "null"]}}}]},
        "consecutive_failures": {"type": "integer", "minimum": 0},
        "consecutive_successes": {"type": "integer", "minimum": 0},
    },
}


class State:
    def __init__(self, reads: Reads, spec: KindSpec, probed: Iterable[tuple[str, str]]):
        self.reads = reads
        self.spec = spec
        self.probed = frozenset(probed)

    def on_get(self, req: falcon.Request, resp: falcon.Response, record_id: str) -> None:
        def produce(tx, caller):
            reject_unknown_params(req.params)
            return read_state(tx, caller.group, self.spec.kind, record_id, self.probed), None

        snap = self.reads.read(credentials_of(req.env), self.spec.kind, produce)
        note_caller(req.env, snap.caller.user.name, snap.caller.group)
        send_json(resp, snap.data)


def add_routes(app: falcon.App, reads: Reads, probed: Iterable[tuple[str, str]]) -> None:
    probed = frozenset(probed)
    for plural, spec in (("harnesses", HARNESS), ("engines", ENGINE)):
        app.add_route(f"/api/v2/{plural}/{{record_id}}/state", State(reads, spec, probed))
