"""What the probe scheduler knows of each record between re-reads, worked out from storage.

``entries`` turns records and their ``probe_state`` documents into schedule entries (when each is
due, its target); the scheduler (``scheduler.py``) reads them for every record, or only for the
(kind, group)s whose change counters moved (``moved_keys``): one edited harness must not cost a
re-read of every record in the store.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional

from ..core.models import Group
from ..core.timeutil import parse_time
from ..runtime import lease
from ..storage import Doc, Key, Tx
from .state import DISABLED, STATE_KIND, UNKNOWN, fingerprint, record_type

GROUPS_KEY: Key = (Group.KIND, "")  # the first watched key: groups added or deleted


@dataclass
class Entry:
    """What the scheduler knows of one record between syncs."""

    kind: str
    group: str
    due: datetime
    target: str  # fingerprint
    disabled: bool


def entries(records: Iterable[tuple[str, Doc]], states: Mapping[str, Mapping[str, Any]], now: datetime,
            probed: Mapping[tuple[str, str], Any], owner: str) -> dict[str, Entry]:
    """The schedule entries of ``records`` ((kind, document) pairs) given their probe states by
    record id; records with nothing to do (disabled and already UNKNOWN, no prober for their
    type) have none. ``probed``: the probers by (kind, type); ``owner``: this process's worker id."""
    now_us = lease.micros(now)
    out: dict[str, Entry] = {}
    for kind, doc in records:
        body = doc.body
        disabled = body.get("configuration_state") == DISABLED
        target = fingerprint(kind, body)
        state = states.get(doc.id)
        if disabled:
            if body.get("operational_state") == UNKNOWN and (state is None or state.get("disabled")):
                continue  # nothing to do until it is enabled again
            due = now
        elif (kind, record_type(kind, body)) not in probed:
            continue
        elif state is None or state.get("target") != target or state.get("disabled") or not state.get("next_at"):
            due = now
        else:
            due = parse_time(state["next_at"])
            if state.get("claimed_by") is not None:  # (most are not: no claim to read)
                held = lease.read_fields(state)
                if held is not None and not lease.takeable(held, now_us, by=owner):
                    due = max(due, lease.from_micros(held.until))  # another process's live claim
        out[doc.id] = Entry(kind, str(doc.group), due, target, disabled)
    return out


def moved_keys(keys: tuple[Key, ...], before: tuple[int, ...], now: tuple[int, ...],
               store_wide: bool) -> Optional[frozenset[Key]]:
    """The watched (kind, group) keys whose counters moved from ``before`` to ``now``: empty when
    none did, None when every record must be re-read (a group added or deleted, or a store with
    one counter for everything, whose keys all move together)."""
    if now == before:
        return frozenset()
    if store_wide or keys[0] != GROUPS_KEY or now[0] != before[0]:
        return None
    return frozenset(k for k, old, new in zip(keys, before, now) if old != new)


def read_moved(tx: Tx, moved: frozenset[Key], known: Mapping[str, Entry]
               ) -> tuple[list[tuple[str, Doc]], dict[str, Mapping[str, Any]], set[str]]:
    """What changed in the (kind, group)s of ``moved`` (an edit, an addition, a deletion), read
    in ``tx``: the live records that need a new entry, their probe states by record id, and the
    ids of the live records whose ``known`` entry still holds (same target, same enabled state:
    their due times are the scheduler's own). Only the records that need one cost a state read."""
    records: list[tuple[str, Doc]] = []
    unchanged: set[str] = set()
    for kind, group in sorted(moved):
        for doc in tx.query(kind, group, include_deleted=False):
            if doc.group != group:
                continue
            entry = known.get(doc.id)
            if (entry is not None and entry.group == group
                    and entry.disabled == (doc.body.get("configuration_state") == DISABLED)
                    and entry.target == fingerprint(kind, doc.body)):
                unchanged.add(doc.id)
            else:
                records.append((kind, doc))
    states = {}
    for _, doc in records:
        state = tx.get(STATE_KIND, doc.id)
        if state is not None:
            states[doc.id] = state.body
    return records, states, unchanged
