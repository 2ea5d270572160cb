"""GET /api/v2/{harnesses,engines}/{id}/history: a record's history, oldest first.

Not cached: the response cache's counters are kept per (kind, group), and a history row may be
swept without a change to its record."""
from __future__ import annotations

import falcon

from ...journal.history import HistoryReads
from ...registry.service import ENGINE, HARNESS, KindSpec
from ..common import send_snapshot
from ..request import credentials_of


class History:
    def __init__(self, history: HistoryReads, spec: KindSpec):
        self.history = history
        self.spec = spec

    def on_get(self, req: falcon.Request, resp: falcon.Response, record_id: str) -> None:
        snap = self.history.history(credentials_of(req.env), self.spec.kind, record_id, req.params)
        send_snapshot(req, resp, snap, snap.data)


def add_routes(app: falcon.App, history: HistoryReads) -> None:
    for plural, spec in (("harnesses", HARNESS), ("engines", ENGINE)):
        app.add_route(f"/api/v2/{plural}/{{record_id}}/history", History(history, spec))
