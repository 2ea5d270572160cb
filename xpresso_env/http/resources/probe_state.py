"""GET /api/v2/{harnesses,engines}/{id}/state: a record's operational state and its last probe.

Not cached: the probe bookkeeping changes with every probe, and the answer is one or two
document reads."""
from __future__ import annotations

import falcon

from ...core import wire
from ...probes.state_reads import StateReads
from ...registry.service import ENGINE, HARNESS, KindSpec
from ..common import send_snapshot
from ..request import credentials_of

SCHEMA = wire.PROBE_STATE.schema()


class State:
    def __init__(self, states: StateReads, spec: KindSpec):
        self.states = states
        self.spec = spec

    def on_get(self, req: falcon.Request, resp: falcon.Response, record_id: str) -> None:
        snap = self.states.state(credentials_of(req.env), self.spec.kind, record_id, req.params)
        send_snapshot(req, resp, snap, snap.data)


def add_routes(app: falcon.App, states: StateReads) -> None:
    for plural, spec in (("harnesses", HARNESS), ("engines", ENGINE)):
        app.add_route(f"/api/v2/{plural}/{{record_id}}/state", State(states, spec))
