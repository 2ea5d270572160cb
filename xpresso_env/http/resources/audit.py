"""GET /api/v2/audit?user=&event=: the audit, newest first, paged (system administrators only)."""
from __future__ import annotations

import falcon

from ...access.audit import Audit
from ..common import send_snapshot
from ..request import credentials_of


class AuditList:
    def __init__(self, audit: Audit):
        self.audit = audit

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        snap = self.audit.list(credentials_of(req.env), req.params)
        send_snapshot(req, resp, snap, snap.data)


def add_routes(app: falcon.App, audit: Audit) -> None:
    app.add_route("/api/v2/audit", AuditList(audit))
