"""The journal: what a change leaves behind, written in the change's own transaction.

Every service that changes a harness, an engine or an image calls :meth:`Journal.record` inside
its write transaction. The journal then writes, in that same transaction:

* a **history** row (harnesses and engines): ``GET .../{id}/history`` reads them back;
* one **event** entry when an active webhook of the group asks for the event: the event, its
  record's wire shape and the ids of the webhooks that asked. That is all a write pays for its
  webhooks, however many there are (CONTRACT section 16, bounded fan-out). The delivery loop
  (``delivery.py``) then fans each event out, off the write path and in event order (``fanout.py``):
  one **delivery** and one **outbox** entry per webhook, in one transaction that also removes the
  event. The outbox is what the delivery loop works from; the delivery is what
  ``GET /api/v2/webhooks/{id}/deliveries`` shows.

So a change and its history and events are committed together or not at all: a crash right after
the commit still delivers the event (at least once), and a refused write leaves nothing behind.
On a storage with change notices the same transaction announces what other processes wait for
(``storage.announce``): new outbox entries (their delivery loops look at once) and a harness or
engine created, edited or deleted (their probe schedulers look at it at once).

Storage layout (document kinds of the journal's own; the index columns are chosen so the hot paths
are index scans, never a scan of a whole kind):

* ``history``: group column = the record's id (a record's history is one ``query``), ordered by
  (created, id) with a time-ordered id so rows of one instant keep their order.
* ``webhook``: group column = the webhook's group; the secret is in the body (never on the wire).
* ``delivery``: group column = the webhook's id (its deliveries list is one ``query``).
* ``event``: no group; one per journaled event some webhook asked for, until it is fanned out. The
  id is time-ordered (``SequenceIds``): fanned out oldest first.
* ``outbox``: no group; one document per delivery still to be made, with the id
  ``<webhook id>:<n>`` (n counts up per webhook), purged when it is delivered or failed.
* ``webhook_group``: one per group that has had webhooks, id = the group: the ``id``, ``events`` and
  ``active`` of its live webhooks, rewritten with each webhook change (rare). A write reads this
  one document, not every webhook of its group (``subscriptions``); a group without one (a store
  from before it, an import) is read the long way.
* ``webhook_queue``: one per webhook, ``{head, tail}``: entries head..tail-1 are pending. The delivery
  loop reads these few documents and then looks each head up by id; it never lists the outbox.
"""
from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

from ..core import wire
from ..core.codec import record_body
from ..core.models import Group
from ..core.render import record_v2
from ..core.timeutil import Clock, format_time
from ..runtime import lease
from ..storage import OUTBOX, PROBE_TARGETS, Doc, Tx, announce

HISTORY_KIND = "history"
WEBHOOK_KIND = "webhook"
DELIVERY_KIND = "delivery"
OUTBOX_KIND = "outbox"
EVENT_KIND = "event"  # one journaled event waiting to be fanned out to its webhooks

RECORD_EVENTS = ("created", "updated", "deleted", "state")
IMAGE_EVENTS = ("submitted", "finished")
EVENT_NAMES = wire.EVENT_NAMES  # every event name a webhook may ask for (CONTRACT section 9)
MASK = "***"  # what history shows for a credential's value

# Stored fields that are bookkeeping, not something a user changed: never listed in `changes`.
_NOT_CHANGES = {"id", "group", "created_by", "date_created", "date_modified"}
# The fields a history row may list, per kind: the wire keys, plus the write-only credentials
# (masked) and v1's support_liveview. Anything else a body holds (probe bookkeeping) is not history.
_HISTORY_FIELDS: dict[str, tuple[str, ...]] = {
    "harness": tuple(k for k in wire.HARNESS.keys if k not in _NOT_CHANGES) + ("support_liveview",),
    "engine": tuple(k for k in wire.ENGINE.keys if k not in _NOT_CHANGES) + wire.CREDENTIALS,
}


def pattern_matches(pattern: str, event: str) -> bool:
    """An exact name, ``<kind>.*`` or ``*``."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event.startswith(pattern[:-1])
    return pattern == event


def matches_any(patterns: Iterable[str], event: str) -> bool:
    return any(pattern_matches(p, event) for p in patterns)


def changes_between(kind: str, before: Optional[Mapping[str, Any]], after: Optional[Mapping[str, Any]],
                    event: str) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` for each changed field; credentials as ``***`` (or None when unset)."""
    if event == "state":
        old = (before or {}).get("operational_state")
        new = (after or {}).get("operational_state")
        return {"operational_state": [old, new]}
    out: dict[str, list[Any]] = {}
    for key in _HISTORY_FIELDS.get(kind, ()):
        old = None if before is None else before.get(key)
        new = None if after is None else after.get(key)
        if before is not None and after is not None and old == new:
            continue
        if before is None and new is None:
            continue  # a create lists the values it set
        if key in wire.CREDENTIALS:  # a changed token shows as ["***", "***"]: changed, value unseen
            old, new = _mask(old), _mask(new)
        out[key] = [old, new]
    return out


def _mask(value: Any) -> Any:
    return None if value is None else MASK


class SequenceIds:
    """Time-ordered, unique, text-sortable ids: ``<ns since epoch>-<counter>-<random>``. History rows
    and outbox entries of one instant keep the order they were written in (a frozen test clock,
    or two events in one microsecond)."""

    def __init__(self, ns_clock: Callable[[], int] = time.time_ns):
        self._ns_clock = ns_clock
        self._lock = threading.Lock()
        self._last = 0
        self._counter = itertools.count()

    def next(self) -> str:
        with self._lock:
            now = max(self._ns_clock(), self._last + 1)  # never backwards within a process
            self._last = now
            return f"{now:020d}-{next(self._counter) % 1000000:06d}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Webhook:
    """A stored webhook subscription (``webhook`` document body)."""

    id: str
    group: str
    url: str
    events: tuple[str, ...]
    secret: str
    active: bool
    created_by: str
    date_created: str
    date_modified: str
    deleted: bool = False

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "Webhook":
        return cls(id=body["id"], group=body["group"], url=body["url"], events=tuple(body["events"]),
                   secret=body["secret"], active=bool(body["active"]), created_by=body["created_by"],
                   date_created=body["date_created"], date_modified=body["date_modified"],
                   deleted=bool(body.get("deleted", False)))

    def body(self) -> dict[str, Any]:
        return {"id": self.id, "group": self.group, "url": self.url, "events": list(self.events),
                "secret": self.secret, "active": self.active, "created_by": self.created_by,
                "date_created": self.date_created, "date_modified": self.date_modified, "deleted": self.deleted}

    def doc(self) -> Doc:
        return Doc(kind=WEBHOOK_KIND, id=self.id, group=self.group, name=None, deleted=self.deleted,
                   created=self.date_created, body=self.body())


QUEUE_KIND = "webhook_queue"  # one per webhook: {head, tail} of its outbox entries
SUBSCRIPTIONS_KIND = "webhook_group"  # one per group: what its live webhooks ask for
# What `export` / `import` carry besides the records (services/transfer.py).
JOURNAL_KINDS: tuple[str, ...] = (HISTORY_KIND, WEBHOOK_KIND, SUBSCRIPTIONS_KIND, QUEUE_KIND, DELIVERY_KIND,
                                  OUTBOX_KIND, EVENT_KIND)


def subscriptions(tx: Tx, group: str) -> list[dict[str, Any]]:
    """``{"id", "events", "active"}`` of each live webhook of ``group``: one document read."""
    doc = tx.get(SUBSCRIPTIONS_KIND, group)
    if doc is not None:
        return list(doc.body["webhooks"])
    return [{"id": d.id, "events": list(d.body["events"]), "active": bool(d.body["active"])}
            for d in tx.query(WEBHOOK_KIND, group, include_deleted=False) if d.group == group and not d.deleted]


def refresh_subscriptions(tx: Tx, group: str, created: str) -> None:
    """Rewrite ``group``'s subscriptions from its webhooks, in the transaction that changed one.
    The group's document is locked first: two webhook changes at once in one group take turns,
    and the second reads the first's webhook (READ COMMITTED), never an older list."""
    tx.get(Group.KIND, group, lock=True)
    webhooks = [{"id": d.id, "events": list(d.body["events"]), "active": bool(d.body["active"])}
                for d in tx.query(WEBHOOK_KIND, group, include_deleted=False) if d.group == group and not d.deleted]
    current = tx.get(SUBSCRIPTIONS_KIND, group, lock=True)
    doc = Doc(kind=SUBSCRIPTIONS_KIND, id=group, group=None, name=None, deleted=False,
              created=current.created if current is not None else created,
              body={"group": group, "webhooks": webhooks})
    if current is None:
        tx.insert(doc)
    else:
        tx.update(doc)


def outbox_id(webhook_id: str, n: int) -> str:
    """Outbox entries are numbered per webhook, so every hot path is a point look-up."""
    return f"{webhook_id}:{n:012d}"


def queue_doc(webhook_id: str, created: str) -> Doc:
    return Doc(kind=QUEUE_KIND, id=webhook_id, group=None, name=None, deleted=False, created=created,
               body={"webhook_id": webhook_id, "head": 0, "tail": 0})


class Queues:
    """Appends to webhooks' outbox queues within one write transaction: each queue document is
    locked and read once, and written once by :meth:`close`, however many entries it gets (the
    fan-out of a batch of events). Entries of one webhook are numbered in commit order."""

    def __init__(self, tx: Tx):
        self._tx = tx
        self._open: dict[str, tuple[Doc, int]] = {}  # webhook id -> (its queue as read, the tail now)

    def append(self, webhook_id: str, delivery_id: str, created: str) -> str:
        """A new outbox entry at the end of the webhook's queue; its id."""
        if webhook_id not in self._open:
            queue = self._tx.get(QUEUE_KIND, webhook_id, lock=True)
            if queue is None:  # a webhook from before the queue (an import): start one
                queue = queue_doc(webhook_id, created)
                self._tx.insert(queue)
            self._open[webhook_id] = (queue, int(queue.body["tail"]))
        queue, n = self._open[webhook_id]
        entry = outbox_id(webhook_id, n)
        self._tx.insert(Doc(kind=OUTBOX_KIND, id=entry, group=None, name=None, deleted=False, created=created,
                            body={"webhook_id": webhook_id, "delivery_id": delivery_id, "n": n, "next_at": 0.0,
                                  **lease.release()}))
        self._open[webhook_id] = (queue, n + 1)
        return entry

    def close(self) -> None:
        """Write each queue's new tail."""
        for queue, tail in self._open.values():
            self._tx.update(Doc(kind=QUEUE_KIND, id=queue.id, group=None, name=None, deleted=False,
                                created=queue.created, body={**queue.body, "tail": tail}))
        self._open.clear()


def enqueue(tx: Tx, webhook_id: str, delivery_id: str, created: str) -> str:
    """Append one delivery to its webhook's outbox queue (a redelivery); the outbox entry's id."""
    queues = Queues(tx)
    entry = queues.append(webhook_id, delivery_id, created)
    queues.close()
    return entry


def delivery_doc(webhook_id: str, delivery_id: str, event: str, at: str, group: str, data: Mapping[str, Any],
                 seq: str, outbox: str) -> Doc:
    """What the deliveries list shows (group column: the webhook's id)."""
    return Doc(kind=DELIVERY_KIND, id=delivery_id, group=webhook_id, name=None, deleted=False, created=at,
               body={"id": delivery_id, "webhook_id": webhook_id, "event": event, "at": at, "group": group,
                     "data": dict(data), "status": "pending", "attempts": 0, "last_status_code": None,
                     "last_error": None, "date_created": at, "date_delivered": None, "seq": seq,
                     "outbox_id": outbox})


def event_doc(seq: str, event: str, at: str, group: str, data: Mapping[str, Any], webhooks: list[str]) -> Doc:
    """One event for the webhooks that asked for it when it happened (``seq``: its time-ordered id)."""
    return Doc(kind=EVENT_KIND, id=seq, group=None, name=None, deleted=False, created=at,
               body={"event": event, "at": at, "group": group, "data": dict(data), "webhooks": list(webhooks)})


class Journal:
    """Writes history rows and events inside the caller's write transaction.

    ``wake`` is called after each record that stored an event (the delivery loop looks sooner;
    the entries are only visible to it once the caller commits)."""

    def __init__(self, clock: Clock, wake: Optional[Callable[[], None]] = None):
        """:param wake: called after a journal entry stored an event (the delivery loop's nudge)."""
        self._clock = clock
        self._ids = SequenceIds()  # this journal's own: the order of what it writes
        self._wake = wake

    def record(self, tx: Tx, *, kind: str, event: str, group: str, record_id: str,
               before: Optional[Mapping[str, Any]], after: Optional[Mapping[str, Any]], by: Optional[str],
               reason: Optional[str] = None) -> None:
        """Journal one change of a record of ``kind`` (harness | engine | image) in ``tx``.

        Harness/engine events (created, updated, deleted, state) write a history row and store the
        event for the matching webhooks; image events (submitted, finished) only store the event.
        ``before``/``after`` are the stored bodies before and after the change (None: absent).
        """
        at = format_time(self._clock())
        record_id = str(record_id)
        if kind in _HISTORY_FIELDS:
            if event not in RECORD_EVENTS:
                raise ValueError(f"unknown {kind} event {event!r}")
            if event != "state":  # a new, edited or deleted target: other processes' probes look at once
                announce(tx, PROBE_TARGETS, f"{kind}:{record_id}")
            row_id = self._ids.next()
            tx.insert(Doc(kind=HISTORY_KIND, id=row_id, group=record_id, name=None, deleted=False, created=at,
                          body={"record_kind": kind, "record_id": record_id, "group": group, "at": at,
                                "event": event, "by": by, "changes": changes_between(kind, before, after, event),
                                "reason": reason if event == "state" else None}))
        elif kind == "image":
            if event not in IMAGE_EVENTS:
                raise ValueError(f"unknown image event {event!r}")
        else:
            raise ValueError(f"the journal keeps no records of kind {kind!r}")
        self.queue(tx, event=f"{kind}.{event}", group=group, kind=kind, record=after if after is not None else before,
                   at=at)

    def image(self, tx: Tx, event: str, image: Any) -> None:
        """``image.submitted`` (where the image is inserted) or ``image.finished`` (where its final
        status is committed: successful, failed or cancelled), in that write transaction."""
        self.record(tx, kind="image", event=event, group=image.group, record_id=str(image.id), before=None,
                    after=record_body(image), by=None)

    def queue(self, tx: Tx, *, event: str, group: str, kind: str, record: Optional[Mapping[str, Any]],
              at: str) -> int:
        """Store the event once for the active webhooks of ``group`` that ask for it (the delivery
        loop fans it out); the number of those webhooks."""
        hook_ids = [h["id"] for h in subscriptions(tx, group) if h["active"] and matches_any(h["events"], event)]
        if not hook_ids:
            return 0
        seq = self._ids.next()
        tx.insert(event_doc(seq, event, at, group, record_v2(kind, dict(record or {})), hook_ids))
        announce(tx, OUTBOX)  # the delivery loops of other processes look when this commits
        if self._wake is not None:
            self._wake()  # the loop re-reads shortly; an entry not yet committed is found on its next look
        return len(hook_ids)
