"""The deliveries' retention sweep (CONTRACT section 16): what webhooks leave behind does not grow
without end.

Delivered and failed deliveries older than ``events.deliveries_retention_days`` are removed, and so
are spent outbox entries: those behind their webhook's queue head, or of a webhook that is gone
(``journal.py`` describes both kinds). Pending deliveries and the outbox entries still to be made
are never touched, whatever their age. Run by :attr:`DeliveryRetention.sweeper` (at start, then
every ``events.sweep_interval_s``), in short write transactions so writers never wait long.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Callable, Optional

from ..core.timeutil import Clock, format_time
from ..runtime.loop import Loop
from ..storage import Doc, StorageBackend, Tx
from .journal import DELIVERY_KIND, OUTBOX_KIND, QUEUE_KIND, WEBHOOK_KIND

log = logging.getLogger("xpresso_env.webhooks")

CHUNK = 500  # documents removed per write transaction
SPENT_ALL = 2 ** 63  # the head of a webhook that is gone: every entry of it is spent


def _finished(status: object) -> bool:
    return status in ("delivered", "failed")


class DeliveryRetention:
    def __init__(self, storage: StorageBackend, clock: Clock, retention_days: int, sweep_interval_s: float):
        self._storage = storage
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self.sweeper = Loop("delivery-sweep", self._round, sweep_interval_s, logger=log)

    def sweep(self) -> int:
        """Remove old finished deliveries and spent outbox entries; how many documents went."""
        cutoff = format_time(self._clock() - self._retention)
        with self._storage.read() as tx:
            hooks = [d.id for d in tx.query(WEBHOOK_KIND)]  # deleted ones too: their deliveries stay until swept
        removed = 0
        for hook_id in hooks:  # one webhook's deliveries at a time: memory follows the largest list
            with self._storage.read() as tx:
                old = [d.id for d in tx.query(DELIVERY_KIND, hook_id)
                       if d.created < cutoff and _finished(d.body.get("status"))]
            removed += self._purge(old, lambda tx, doc: doc.created < cutoff and _finished(doc.body.get("status")),
                                   DELIVERY_KIND)
        with self._storage.read() as tx:
            spent = self._spent_outbox(tx)
        removed += self._purge(spent, lambda tx, doc: self._spent_outbox(tx, [doc.id]) == [doc.id], OUTBOX_KIND)
        return removed

    @staticmethod
    def _spent_outbox(tx: Tx, ids: Optional[list[str]] = None) -> list[str]:
        """Outbox entries no delivery loop will ever take: behind their queue's head (made, but not
        removed), or of a webhook deleted or gone."""
        entries = tx.query(OUTBOX_KIND) if ids is None else [d for d in (tx.get(OUTBOX_KIND, i) for i in ids) if d]
        out: list[str] = []
        heads: dict[str, int] = {}  # per webhook: entries numbered below this are spent
        for entry in entries:
            hook_id = str(entry.body.get("webhook_id"))
            if hook_id not in heads:
                hook = tx.get(WEBHOOK_KIND, hook_id)
                queue = tx.get(QUEUE_KIND, hook_id)
                if hook is None or hook.deleted:
                    heads[hook_id] = SPENT_ALL
                else:  # no queue yet (an imported store): nothing is behind a head
                    heads[hook_id] = int(queue.body["head"]) if queue is not None else 0
            if int(entry.body.get("n", 0)) < heads[hook_id]:
                out.append(entry.id)
        return out

    def _purge(self, ids: list[str], still: Callable[[Tx, Doc], bool], kind: str) -> int:
        removed = 0
        for start in range(0, len(ids), CHUNK):
            with self._storage.write() as tx:
                for id_ in ids[start:start + CHUNK]:
                    doc = tx.get(kind, id_, lock=True)
                    if doc is not None and still(tx, doc):  # looked at again under the lock
                        removed += bool(tx.purge(kind, id_))
        return removed

    def _round(self) -> None:
        removed = self.sweep()
        if removed:
            log.info("delivery sweep removed %d deliveries and spent outbox entries", removed)
