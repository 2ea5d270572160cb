"""Fan-out: an event the journal stored once becomes one delivery per webhook, off the write path.

A write stores one ``event`` document however many webhooks asked for it (``journal.py``); the
delivery loop (``delivery.py``) calls :func:`fan_out` before it looks for deliveries to make. Each
event is turned, in one write transaction, into a delivery and an outbox entry per webhook that
asked for it when it happened (and is not deleted since), and removed (several events a transaction,
each webhook's queue locked and written once for them): a crash before the commit
leaves the event to fan out again, after it leaves the deliveries; never both, never neither.

Events are fanned out oldest first (their ids are time-ordered), and a webhook's outbox entries
are numbered as they are enqueued, so its deliveries keep event order. The event is locked
before it is read: with several processes on one store, each event is fanned out once.
"""
from __future__ import annotations

import uuid
from typing import Callable

from ..storage import Doc, StorageBackend, Tx
from .journal import EVENT_KIND, WEBHOOK_KIND, Queues, delivery_doc

MAX_DELIVERIES = 200  # deliveries per write transaction: few commits, and a writer never waits long
MAX_EVENTS = 500  # events per call: the loop's claims are not held back by a long backlog


def pending(storage: StorageBackend) -> list[str]:
    """The ids of the events waiting to be fanned out, oldest first."""
    with storage.read() as tx:
        return sorted(d.id for d in tx.query(EVENT_KIND))


class _Batch:
    """The fan-out of several events in one write transaction: each webhook is looked up, and its
    queue locked and written, once for the whole batch."""

    def __init__(self, tx: Tx, new_id: Callable[[], uuid.UUID]):
        self._tx = tx
        self._new_id = new_id
        self._queues = Queues(tx)
        self._live: dict[str, bool] = {}

    def _is_live(self, webhook_id: str) -> bool:
        if webhook_id not in self._live:
            hook = self._tx.get(WEBHOOK_KIND, webhook_id)
            self._live[webhook_id] = hook is not None and not hook.deleted
        return self._live[webhook_id]

    def add(self, event: Doc) -> int:
        """The event's deliveries and outbox entries; the event is removed. How many were made."""
        body = event.body
        made = 0
        for webhook_id in body["webhooks"]:
            if not self._is_live(webhook_id):
                continue  # deleted since the event: nothing to deliver (its deliveries list is gone too)
            delivery_id = str(self._new_id())
            entry = self._queues.append(webhook_id, delivery_id, body["at"])
            # The event's id orders the deliveries list: a webhook has one delivery per event.
            self._tx.insert(delivery_doc(webhook_id, delivery_id, body["event"], body["at"], body["group"],
                                         body["data"], event.id, entry))
            made += 1
        self._tx.purge(EVENT_KIND, event.id)
        return made

    def close(self) -> None:
        self._queues.close()


def fan_out(storage: StorageBackend, new_id: Callable[[], uuid.UUID], limit: int = MAX_EVENTS) -> int:
    """Fan out up to ``limit`` waiting events, oldest first; the number of deliveries made. A read
    first: most calls find nothing to do and write nothing."""
    ids = pending(storage)[:limit]
    made = 0
    while ids:
        with storage.write() as tx:
            batch = _Batch(tx, new_id)
            in_batch = 0
            while ids and in_batch < MAX_DELIVERIES:
                event = tx.get(EVENT_KIND, ids.pop(0), lock=True)
                if event is not None:  # None: another process fanned it out first
                    in_batch += batch.add(event)
            batch.close()
        made += in_batch
    return made
