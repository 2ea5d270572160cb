"""Fan-out: an event the journal stored once becomes one delivery per webhook, off the write path.

A write stores one ``event`` document however many webhooks asked for it (``journal.py``); the
delivery loop (``delivery.py``) calls :func:`fan_out` before it looks for deliveries to make. Each
event is turned, in one write transaction, into a delivery and an outbox entry per webhook that
asked for it when it happened (and is not deleted since), and removed: a crash before the commit
leaves the event to fan out again, after it leaves the deliveries; never both, never neither.

Events are fanned out oldest first (their ids are time-ordered), and a webhook's outbox entries
are numbered as they are enqueued, so its deliveries keep event order. The event is locked
before it is read: with several processes on one store, each event is fanned out once.
"""
from __future__ import annotations

import uuid
from typing import Callable

from ..storage import Doc, StorageBackend, Tx
from .journal import EVENT_KIND, WEBHOOK_KIND, delivery_doc, enqueue

BATCH = 20  # events per write transaction: few commits under a burst, and short transactions
MAX_EVENTS = 500  # events per call: the loop's claims are not held back by a long backlog


def pending(storage: StorageBackend) -> list[str]:
    """The ids of the events waiting to be fanned out, oldest first."""
    with storage.read() as tx:
        return sorted(d.id for d in tx.query(EVENT_KIND))


def fan_out_event(tx: Tx, event: Doc, new_id: Callable[[], uuid.UUID]) -> int:
    """One event's deliveries and outbox entries, in ``tx``; the event is removed. The number of
    deliveries made."""
    body = event.body
    made = 0
    for webhook_id in body["webhooks"]:
        hook = tx.get(WEBHOOK_KIND, webhook_id)
        if hook is None or hook.deleted:
            continue  # deleted since the event: nothing to deliver (its deliveries list is gone too)
        delivery_id = str(new_id())
        entry = enqueue(tx, webhook_id, delivery_id, body["at"])
        # The event's id orders the deliveries list: a webhook has one delivery per event.
        tx.insert(delivery_doc(webhook_id, delivery_id, body["event"], body["at"], body["group"], body["data"],
                               event.id, entry))
        made += 1
    tx.purge(EVENT_KIND, event.id)
    return made


def fan_out(storage: StorageBackend, new_id: Callable[[], uuid.UUID], limit: int = MAX_EVENTS) -> int:
    """Fan out up to ``limit`` waiting events, oldest first; the number of deliveries made. A read
    first: most calls find nothing to do and write nothing."""
    ids = pending(storage)[:limit]
    made = 0
    for start in range(0, len(ids), BATCH):
        with storage.write() as tx:
            for event_id in ids[start:start + BATCH]:
                event = tx.get(EVENT_KIND, event_id, lock=True)
                if event is not None:  # None: another process fanned it out first
                    made += fan_out_event(tx, event, new_id)
    return made
