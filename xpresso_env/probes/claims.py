"""Probe claims and results: the storage half of the probe service, one write transaction a step.

A process CLAIMS a due record in a write transaction: it re-reads the record's ``probe_state``
document with ``get(lock=True)``, checks that it is due and not held by a live claim of another
process (``runtime/lease.py``), and writes the claim. The result is written back in a later
transaction, which also moves ``next_at`` one interval on (``state.next_due``) and releases the
claim. So each record is probed by one process per interval; a process that dies leaves claims
that expire after ``probes.lease_s``, and its records are due for whichever process looks next.

Each step writes every result finished since the last one and claims every record that became
due, documents locked in id order (two processes on PostgreSQL cannot deadlock). A state change
writes the record's ``operational_state`` (and a harness's ``support_liveview``) without touching
``date_modified``, and the journal's history row and webhook outbox entries, in the same
transaction. What the step means for the schedule (due times moved, records dropped, jobs to
run) comes back in the :class:`Step`; the scheduler (``scheduler.py``) applies it after commit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional, cast

from ..config import ProbesSettings
from ..core.errors import AlreadyExists, XpressoError
from ..core.timeutil import format_time, parse_time
from ..journal.journal import Journal
from ..runtime import lease
from ..storage import ChangeCounters, CountingTx, Doc, Key, StorageBackend, Tx
from .protocol import Prober, ProbeResult
from .state import (
    DISABLED,
    DISABLED_REASON,
    STATE_KIND,
    UNKNOWN,
    ProbeState,
    fingerprint,
    judge,
    next_due,
    record_type,
)

log = logging.getLogger("xpresso_env.probes")


@dataclass(frozen=True)
class Job:
    record_id: str
    kind: str
    group: str
    name: str
    type: str
    target: str
    body: Mapping[str, Any]
    prober: Prober


@dataclass(frozen=True)
class Finished:
    job: Job
    result: ProbeResult
    at: datetime  # when the probe started
    seconds: float


@dataclass(frozen=True)
class Outcome:
    """One record's line of `xpresso-env probe`."""

    group: str
    kind: str
    name: str
    result: Optional[ProbeResult]  # None: not probed (see skipped)
    skipped: Optional[str] = None
    state: Optional[str] = None  # the record's operational_state after the probe

    def line(self) -> str:
        head = f"{self.group} {self.kind} {self.name}"
        if self.result is None:
            return f"{head}: {UNKNOWN}: {self.skipped}"
        if self.result.ok:
            return f"{head}: ONLINE ({self.result.detail})"
        return f"{head}: OFFLINE: {self.result.detail}"


Watched = tuple[tuple[Key, ...], tuple[int, ...]]  # change counter keys and their values at the last sync


@dataclass
class Step:
    jobs: list[Job] = field(default_factory=list)
    saved: list[tuple[str, Any]] = field(default_factory=list)  # (kind, record) to announce after commit
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    # What the scheduler does with its entries after commit: a record's new due time, or None to
    # drop it (deleted, disabled, no prober). Applied in this order.
    moves: dict[str, Optional[datetime]] = field(default_factory=dict)
    # Whether a claim or a result met another process's probing (see ProbeService._others_seen).
    others_seen: bool = False
    # Our own record writes move the change counters the scheduler watches. To tell them from
    # other processes' edits: the watched counters as the transaction read them before its first
    # record write, and the keys its record writes bump (see ProbeService._own_writes).
    watched: Optional[Watched] = None
    before: Optional[tuple[int, ...]] = None
    bumped: set[Key] = field(default_factory=set)
    after: Optional[tuple[int, ...]] = None


def _text(value: str, limit: int = 500) -> str:
    """Storable one-line text: a name read from a file system may hold undecodable bytes (lone
    surrogates), which no store can write, and would fail every transaction it joined."""
    text = " ".join(str(value).split())
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def storable(result: ProbeResult) -> ProbeResult:
    version = None if result.version is None else _text(result.version, 100)
    return replace(result, ok=bool(result.ok), detail=_text(result.detail) or "no detail", version=version)


class ProbeClaims:
    """Claims due records and writes results (see the module docstring).

    :param owner: the worker id written in this service's claims (``lease.worker_id()``).
    :param counters: the store's change counters (None: a backend without them).
    """

    def __init__(self, storage: StorageBackend, settings: ProbesSettings, probers: Mapping[tuple[str, str], Prober],
                 journal: Journal, owner: str, counters: Optional[ChangeCounters]):
        self.storage = storage
        self.settings = settings
        self.probers = probers
        self.journal = journal
        self.owner = owner
        self.counters = counters

    def transact(self, finished: Iterable[Finished], due: Mapping[str, str], now: datetime, force: bool,
                 watched: Optional[Watched]) -> Step:
        """Write ``finished`` results and claim the ``due`` records (id -> record kind), in one write
        transaction, documents locked in id order. ``force`` claims even records not due or held
        by a live claim elsewhere (`xpresso-env probe`)."""
        step = Step(watched=watched if self.counters is not None else None)
        work: list[tuple[str, int, Any]] = [(f.job.record_id, 0, f) for f in finished]
        work += [(rid, 1, kind) for rid, kind in due.items()]
        work.sort(key=lambda w: (w[0], w[1]))
        with self.storage.write() as tx:
            for record_id, order, item in work:
                if order == 0:
                    self._apply(tx, item, now, step)
                else:
                    self._claim(tx, record_id, item, now, force, step)
            if step.before is not None and step.watched is not None:
                step.after = cast(CountingTx, tx).versions(step.watched[0])
        return step

    def release(self, record_ids: Iterable[str]) -> None:
        """Give back this service's claims of ``record_ids`` (a stop: other processes probe them now)."""
        try:
            with self.storage.write() as tx:
                for record_id in sorted(record_ids):
                    doc = tx.get(STATE_KIND, record_id, lock=True)
                    if doc is not None and doc.body.get("claimed_by") == self.owner:
                        tx.update(replace(doc, body={**doc.body, **lease.release()}))
        except XpressoError as exc:
            log.warning("probe claims not released (they expire): %s", exc.detail)

    def _claim(self, tx: Tx, record_id: str, kind: str, now: datetime, force: bool, step: Step) -> None:
        record = tx.get(kind, record_id)
        if record is None or record.deleted:
            step.moves[record_id] = None
            return
        body = record.body
        type_ = record_type(kind, body)
        doc = tx.get(STATE_KIND, record_id, lock=True)
        state = ProbeState.from_doc(doc) if doc is not None else ProbeState.fresh(record, kind, now)
        target = fingerprint(kind, body)
        if body.get("configuration_state") == DISABLED:
            self._disable(tx, record, state, doc is None, now, step)
            step.moves[record_id] = None
            step.outcomes[record_id] = Outcome(str(record.group), kind, str(body.get("name")), None, DISABLED_REASON,
                                               UNKNOWN)
            return
        prober = self.probers.get((kind, type_))
        if prober is None:
            step.moves[record_id] = None
            step.outcomes[record_id] = Outcome(str(record.group), kind, str(body.get("name")), None,
                                               f"no prober for {kind}s of type {type_}",
                                               str(body.get("operational_state")))
            return
        now_us = lease.micros(now)
        if state.target != target or state.disabled:
            state = state.restarted(record, now)  # a new target, or enabled again: from UNKNOWN
        elif not force:
            held = state.claim()
            if not lease.takeable(held, now_us, by=self.owner):
                assert held is not None
                step.others_seen = True
                step.moves[record_id] = lease.from_micros(held.until)
                return
            if state.next_at is not None and parse_time(state.next_at) > now:
                step.others_seen = True
                step.moves[record_id] = parse_time(state.next_at)  # another process probed it
                return
        state = state.but(**lease.claim(self.owner, now_us, self.settings.lease_s).fields())
        try:
            tx.insert(state.to_doc()) if doc is None else tx.update(state.to_doc())
        except AlreadyExists:
            step.others_seen = True
            return  # another process created it first: it holds the claim
        step.jobs.append(Job(record_id=record_id, kind=kind, group=str(record.group), name=str(body.get("name")),
                             type=type_, target=target, body=dict(body), prober=prober))

    def _disable(self, tx: Tx, record: Doc, state: ProbeState, new: bool, now: datetime, step: Step) -> None:
        """A DISABLED record is not probed and shows UNKNOWN."""
        if record.body.get("operational_state") != UNKNOWN:
            self._set_record(tx, record, {"operational_state": UNKNOWN}, DISABLED_REASON, step)
        if not state.disabled:
            state = state.restarted(record, now).but(disabled=True, reason=DISABLED_REASON, **lease.release())
            tx.insert(state.to_doc()) if new else tx.update(state.to_doc())

    def _apply(self, tx: Tx, done: Finished, now: datetime, step: Step) -> None:
        job, result = done.job, done.result
        outcome = Outcome(job.group, job.kind, job.name, result)
        step.outcomes[job.record_id] = outcome
        doc = tx.get(STATE_KIND, job.record_id, lock=True)
        if doc is None:
            return
        state = ProbeState.from_doc(doc)
        if state.claimed_by != self.owner or state.target != job.target:
            step.others_seen = True
            return  # taken over after our lease ran out, or retargeted meanwhile: not ours to write
        released = state.but(**lease.release())
        record = tx.get(job.kind, job.record_id, lock=True)
        if (record is None or record.deleted or record.body.get("configuration_state") == DISABLED
                or fingerprint(job.kind, record.body) != job.target):
            tx.update(released.but(next_at=None).to_doc())  # looked at again by the next claim
            return
        current = str(record.body.get("operational_state") or UNKNOWN)
        s = self.settings
        verdict = judge(current, state.restart, result.ok, result.detail, state.consecutive_failures,
                        state.consecutive_successes, s.fail_after, s.ok_after, state.reason)
        at = format_time(done.at)
        changes: dict[str, Any] = {}
        if verdict.changed:
            changes["operational_state"] = verdict.state
        if result.ok:
            changes.update({k: v for k, v in result.fields.items() if k in record.body and record.body[k] != v})
        if changes:
            self._set_record(tx, record, changes, result.detail if verdict.changed else None, step)
        state_changed = verdict.changed or state.restart or state.operational_state != verdict.state
        due_again = next_due(job.record_id, now, s.interval_s)
        tx.update(released.but(
            restart=False, consecutive_failures=verdict.failures, consecutive_successes=verdict.successes,
            reason=verdict.reason, operational_state=verdict.state,
            since=format_time(now) if state_changed else (state.since or at),
            last_probe={"at": at, "ok": result.ok, "latency_ms": round(done.seconds * 1000, 3),
                        "detail": result.detail, "version": result.version},
            next_at=format_time(due_again)).to_doc())
        step.moves[job.record_id] = due_again
        step.outcomes[job.record_id] = replace(outcome, state=verdict.state)

    def _set_record(self, tx: Tx, record: Doc, changes: Mapping[str, Any], reason: Optional[str],
                    step: Step) -> None:
        """Write observed fields on the record, ``date_modified`` untouched; a state change is
        journalled (history row, webhook outbox) in this same transaction."""
        before = record.body
        after = {**before, **{k: (v.value if hasattr(v, "value") else v) for k, v in changes.items()}}
        updated = replace(record, body=after)
        if step.watched is not None and not getattr(self.counters, "versions_store_wide", True):
            if step.before is None:  # the watched counters before this transaction's first record write
                step.before = cast(CountingTx, tx).versions(step.watched[0])
            step.bumped.add((record.kind, str(record.group or "")))
            step.bumped.update((record.kind, g) for g in record.visible)
        tx.update(updated)
        if after.get("operational_state") != before.get("operational_state"):
            kind = record.kind
            self.journal.record(tx, kind=kind, event="state", group=str(record.group), record_id=record.id,
                                before=before, after=after, by=None, reason=reason)
        step.saved.append((record.kind, updated))
