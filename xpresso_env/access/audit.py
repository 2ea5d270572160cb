"""The audit (CONTRACT section 13): who signed in, failed, was locked out, made or revoked a token,
changed a password or a role; written in the transaction of the change it records, listed
newest first for system administrators, kept ``history.retention_days``."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, Optional

from ..core.codec import from_doc, to_doc
from ..core.errors import PermissionDenied, ValidationError
from ..core.models import AuditEntry
from ..core.timeutil import Clock, format_time
from ..core.validation import parse_list_query
from ..storage import StorageBackend, Tx
from .reads import Credentials, Reads, Snapshot

EVENTS = ("login", "login_failed", "login_locked", "logout", "token_created", "token_revoked", "password_changed",
          "role_changed")
CLI = "(cli)"  # ``by`` of what an administrator did with `xpresso-env`


def audit_wire(entry: AuditEntry) -> dict[str, Any]:
    return {"at": format_time(entry.date_created), "event": entry.event, "user": entry.user, "by": entry.by,
            "address": entry.address, "detail": entry.detail}


@dataclass(frozen=True)
class Audit:
    """Writes rows into the caller's transaction, lists them, sweeps old ones."""

    storage: StorageBackend
    reads: Reads
    clock: Clock
    retention_days: int

    def record(self, tx: Tx, event: str, user: str, by: str, address: str = "", detail: str = "") -> None:
        assert event in EVENTS, event
        tx.insert(to_doc(AuditEntry(id=uuid.uuid4().hex, date_created=self.clock(), event=event, user=user, by=by,
                                    address=address, detail=detail)))

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
        """Remove rows older than the retention; how many."""
        cutoff: datetime = self.clock() - timedelta(days=self.retention_days)
        removed = 0
        with self.storage.write() as tx:
            for doc in tx.query(AuditEntry.KIND):
                if from_doc(doc).date_created < cutoff:
                    removed += tx.purge(AuditEntry.KIND, doc.id)
        return removed
