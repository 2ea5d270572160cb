"""History and audit: what happened to a harness or engine, oldest first, and the retention sweep.

The rows are written by the journal (``journal.py``) in the transaction of the change they
describe; this module only reads them, and removes the old ones.
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any, Mapping, Optional

from ..access.auth import Caller
from ..core import wire
from ..core.errors import NotFound, XpressoError
from ..core.timeutil import Clock, format_time
from ..core.validation import page, parse_list_query, parse_uuid, reject_unknown_params
from ..storage import StorageBackend, Tx
from .journal import DELIVERY_KIND, HISTORY_KIND

log = logging.getLogger("xpresso_env.history")


def history_wire(body: Mapping[str, Any]) -> dict[str, Any]:
    return {key: body.get(key) for key in wire.HISTORY_ENTRY.keys}


class HistoryService:
    def __init__(self, storage: StorageBackend, clock: Clock, retention_days: int, sweep_interval_s: float = 3600.0):
        self._storage = storage
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self._interval_s = sweep_interval_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def history(self, tx: Tx, caller: Caller, kind: str, record_id: str,
                params: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Oldest first. A record of another group (or none) is a 404."""
        reject_unknown_params(params, {"limit", "offset"})
        query = parse_list_query(params, {})
        key = str(parse_uuid(record_id))
        doc = tx.get(kind, key)
        if doc is None or doc.group != caller.group:
            raise NotFound()
        rows = [d.body for d in tx.query(HISTORY_KIND, key) if d.body.get("record_kind") == kind]
        chosen, total = page(rows, query)
        return [history_wire(r) for r in chosen], total

    # -- retention ----------------------------------------------------------------------------
    def sweep(self) -> int:
        """Remove history rows, and delivered or failed deliveries, older than the retention."""
        cutoff = format_time(self._clock() - self._retention)
        removed = 0
        with self._storage.read() as tx:
            old_rows = [d.id for d in tx.query(HISTORY_KIND) if d.created < cutoff]
            old_deliveries = [d.id for d in tx.query(DELIVERY_KIND)
                              if d.created < cutoff and d.body.get("status") != "pending"]
        for kind, ids in ((HISTORY_KIND, old_rows), (DELIVERY_KIND, old_deliveries)):
            for start in range(0, len(ids), 500):  # short write transactions: writers never wait long
                with self._storage.write() as tx:
                    for id_ in ids[start:start + 500]:
                        doc = tx.get(kind, id_, lock=True)
                        if doc is not None and (kind == HISTORY_KIND or doc.body.get("status") != "pending"):
                            removed += bool(tx.purge(kind, id_))
        return removed

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="history-sweep", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                removed = self.sweep()
                if removed:
                    log.info("history sweep removed %d rows", removed)
            except XpressoError as exc:
                log.warning("history sweep: %s", exc.detail)
            except Exception:
                log.exception("history sweep failed")
            self._stop.wait(self._interval_s)
