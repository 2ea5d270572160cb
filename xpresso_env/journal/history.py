"""History and audit: what happened to a harness or engine, oldest first, and the retention sweep.

The rows are written by the journal (``journal.py``) in the transaction of the change they
describe; this module only reads them, and removes the old ones.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Mapping

from ..access.reads import Credentials, Reads, Snapshot
from ..core import wire
from ..core.errors import NotFound
from ..core.timeutil import Clock, format_time
from ..core.validation import page, parse_list_query, parse_uuid, reject_unknown_params
from ..runtime.loop import Loop
from ..storage import StorageBackend
from .journal import HISTORY_KIND

log = logging.getLogger("xpresso_env.history")


def history_wire(body: Mapping[str, Any]) -> dict[str, Any]:
    return {key: body.get(key) for key in wire.HISTORY_ENTRY.keys}


class HistoryReads:
    """GET /api/v2/{harnesses,engines}/{id}/history: the API's reads of history, each in the
    caller's read scope (the sweep below runs in every role, HTTP or not)."""

    def __init__(self, reads: Reads):
        self._reads = reads

    def history(self, credentials: Credentials, kind: str, record_id: str, params: Mapping[str, Any]) -> Snapshot:
        """Oldest first. A record of another group (or none) is a 404."""
        with self._reads.scope(credentials, kind) as scope:
            reject_unknown_params(params, {"limit", "offset"})
            query = parse_list_query(params, {})
            key = str(parse_uuid(record_id))
            doc = scope.tx.get(kind, key)
            if doc is None or doc.group != scope.caller.group:
                raise NotFound()
            rows = [d.body for d in scope.tx.query(HISTORY_KIND, key) if d.body.get("record_kind") == kind]
        chosen, total = page(rows, query)
        return scope.snapshot([history_wire(r) for r in chosen], total)


class HistoryService:
    """The retention sweep: run by :attr:`sweeper` (at start, then every
    ``sweep_interval_s``; the app starts it) or on demand by :meth:`sweep`."""

    def __init__(self, storage: StorageBackend, clock: Clock, retention_days: int, sweep_interval_s: float = 3600.0):
        self._storage = storage
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self.sweeper = Loop("history-sweep", self._sweep_round, sweep_interval_s, logger=log)

    # -- retention ----------------------------------------------------------------------------
    def sweep(self) -> int:
        """Remove history rows older than the retention (webhook deliveries have their own
        retention: ``retention.py``)."""
        cutoff = format_time(self._clock() - self._retention)
        removed = 0
        with self._storage.read() as tx:
            old_rows = [d.id for d in tx.query(HISTORY_KIND) if d.created < cutoff]
        for start in range(0, len(old_rows), 500):  # short write transactions: writers never wait long
            with self._storage.write() as tx:
                for id_ in old_rows[start:start + 500]:
                    if tx.get(HISTORY_KIND, id_, lock=True) is not None:
                        removed += bool(tx.purge(HISTORY_KIND, id_))
        return removed

    def _sweep_round(self) -> None:
        removed = self.sweep()
        if removed:
            log.info("history sweep removed %d rows", removed)
