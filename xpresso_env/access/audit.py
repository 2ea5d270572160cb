"""The audit (CONTRACT section 13): who signed in, failed, was locked out, made or revoked a token,
changed a password or a role; written in the transaction of the change it records, listed
newest first for system administrators, kept ``history.retention_days``."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Mapping, Optional

from ..core.codec import from_doc
from ..core.errors import PermissionDenied, ValidationError
from ..core.models import AuditEntry, LoginFailures
from ..core.timeutil import Clock, format_time
from ..core.validation import parse_list_query
from ..runtime.loop import Loop
from ..storage import StorageBackend, Tx
from .audit_rows import CLI, EVENTS, record_row
from .reads import Credentials, Reads, Snapshot

__all__ = ["Audit", "CLI", "EVENTS", "audit_wire"]

log = logging.getLogger("xpresso_env.auth")


def audit_wire(entry: AuditEntry) -> dict[str, Any]:
    return {"at": format_time(entry.date_created), "event": entry.event, "user": entry.user, "by": entry.by,
            "address": entry.address, "detail": entry.detail}


class Audit:
    """Writes rows into the caller's transaction, lists them, sweeps old ones (with the sign-in
    failure counts past their window: a guesser spraying made-up names leaves nothing behind)."""

    def __init__(self, storage: StorageBackend, reads: Reads, clock: Clock, retention_days: int,
                 login_window_s: float, sweep_interval_s: float):
        self.storage = storage
        self.reads = reads
        self.clock = clock
        self.retention_days = retention_days
        self.login_window_s = login_window_s
        self.sweeper = Loop("audit-sweep", self._sweep_round, sweep_interval_s, logger=log)

    def record(self, tx: Tx, event: str, user: str, by: str, address: str = "", detail: str = "") -> None:
        record_row(tx, self.clock(), event, user, by, address, detail)

    def entries(self, user: Optional[str] = None, event: Optional[str] = None) -> list[AuditEntry]:
        """Newest first (`xpresso-env audit`)."""
        if event is not None and event not in EVENTS:
            raise ValidationError.one("event", f'"{event[:100]}" is not a valid choice.')
        with self.storage.read() as tx:
            rows: list[AuditEntry] = [from_doc(d) for d in tx.query(AuditEntry.KIND)]
        rows = [r for r in rows if (user is None or r.user == user) and (event is None or r.event == event)]
        rows.reverse()
        return rows

    def list(self, credentials: Credentials, params: Mapping[str, Any]) -> Snapshot:
        """GET /api/v2/audit: system administrators only, paged, newest first."""
        with self.reads.scope(credentials, group_required=False) as scope:
            if not scope.caller.user.superuser:
                raise PermissionDenied(why=f"the audit is for system administrators (user {scope.caller.user.name!r})")
            query = parse_list_query(params, {"user": None, "event": None})
            event = query.filters.get("event")
            if event is not None and event not in EVENTS:
                raise ValidationError.one("event", f'"{event[:100]}" is not a valid choice.')
            rows: list[AuditEntry] = [from_doc(d) for d in scope.tx.query(AuditEntry.KIND)]
        rows = [r for r in reversed(rows) if all(getattr(r, k) == v for k, v in query.filters.items())]
        end = None if query.limit is None else query.offset + query.limit
        return scope.snapshot([audit_wire(r) for r in rows[query.offset:end]], len(rows))

    def sweep(self) -> int:
        """Remove audit rows older than the retention, and failure counts whose failures have all
        left the sign-in window; how many."""
        now = self.clock()
        cutoff = format_time(now - timedelta(days=self.retention_days))
        with self.storage.read() as tx:
            old = [(AuditEntry.KIND, d.id) for d in tx.query(AuditEntry.KIND) if d.created < cutoff]
            old += [(LoginFailures.KIND, d.id) for d in tx.query(LoginFailures.KIND)
                    if max(d.body.get("times") or [0]) <= now.timestamp() - self.login_window_s]
        removed = 0
        for start in range(0, len(old), 500):  # short write transactions: writers never wait long
            with self.storage.write() as tx:
                removed += sum(tx.purge(kind, id_) for kind, id_ in old[start:start + 500])
        return removed

    def _sweep_round(self) -> None:
        removed = self.sweep()
        if removed:
            log.info("audit sweep removed %d rows", removed)
