"""GET /api/v2/{harnesses,engines}/{id}/history: a record's history, oldest first.

Not cached: the response cache's counters are kept per (kind, group), and a history row may be
swept without a change to its record."""
from __future__ import annotations

import falcon

from ...access.reads import Reads
from ...journal.history import HistoryService
from ...registry.service import ENGINE, HARNESS, KindSpec
from ..common import send_list
from ..request import credentials_of, note_caller


class History:
    def __init__(self, reads: Reads, history: HistoryService, spec: KindSpec):
        self.reads = reads
        self.history = history
        self.spec = spec

    def on_get(self, req: falcon.Request, resp: falcon.Response, record_id: str) -> None:
        snap = self.reads.read(credentials_of(req.env), self.spec.kind,
                               lambda tx, caller: self.history.history(tx, caller, self.spec.kind, record_id,
                                                                       req.params))
        note_caller(req.env, snap.caller.user.name, snap.caller.group)
        send_list(resp, snap.data, snap.total or 0)


def add_routes(app: falcon.App, reads: Reads, history: HistoryService) -> None:
    for plural, spec in (("harnesses", HARNESS), ("engines", ENGINE)):
        app.add_route(f"/api/v2/{plural}/{{record_id}}/history", History(reads, history, spec))
