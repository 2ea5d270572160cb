"""The probe service: who probes what, when, on which threads, and what a result changes.

* **Off the request threads.** One scheduler thread and a pool of ``probes.concurrency`` probe
  threads per process; a request never waits for a probe. Each probe is bounded by
  ``probes.timeout_s`` (the probers keep that promise, see ``xpresso_env/probes/protocol.py``).
* **Shared by processes through storage.** Every probed record has a ``probe_state`` document
  (``probe_state.py``). A process CLAIMS a due record in a write transaction: it re-reads the
  document with ``get(lock=True)``, checks that it is due and not claimed by a live claim of
  another process, and writes ``claimed_by`` and ``lease_until``. The result is written back in
  another transaction, which also moves ``next_at`` one interval on (``next_due``) and releases
  the claim. So each record is probed by one process per interval; a process that dies leaves
  claims that expire after ``probes.lease_s``, and its records are simply due for whichever
  process looks next.
* **Batched.** Each scheduler step is ONE write transaction that writes every result finished
  since the last step and claims every record that became due (up to twice the pool's size in
  flight). Documents are locked in id order, so two processes on PostgreSQL cannot deadlock. A
  step runs when a pool's worth of results waits, or every probe in flight has finished, or at
  the next tick (``TICK_S``): not once per result, since a commit costs more than a probe's
  bookkeeping.
* **What is due** is known from an in-memory schedule, with a heap of due times (a step pops
  what is due, it does not scan every record). Every ``probes.sync_s`` the scheduler asks the
  store's change counters whether any harness, engine or group changed (one small read) and
  re-reads the records only then (and once an interval when another process probes too, or every
  time on a backend without counters): records added, edited or deleted through other processes.
  The service's own state changes move those counters too; it accounts for its own bumps
  (``_own_writes``), so a round that changes thousands of states does not re-read everything. An
  edit through this process is noticed at once (the ``xpresso_record_saved`` hook). Either way a
  new target is probed within a second.
* **A state change** writes the record's ``operational_state`` (and a harness's
  ``support_liveview``) without touching ``date_modified``, and the journal's history row and
  webhook outbox entries, in the same transaction as the probe result.
"""
from __future__ import annotations

import heapq
import logging
import os
import queue
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional, cast

from ..config import ProbesSettings
from ..core.codec import from_doc
from ..core.errors import AlreadyExists, XpressoError
from ..core.metrics import NULL_METRICS, MetricsSink
from ..core.models import Group
from ..core.timeutil import Clock, format_time, parse_time, utcnow
from ..hookspecs import hookimpl
from ..journal.journal import Journal
from ..runtime.events import Events
from ..storage import CountingTx, Doc, Key, StorageBackend, Tx, change_counters
from .protocol import Prober, ProbeResult, ProbeTarget
from .state import (
    DISABLED,
    DISABLED_REASON,
    RECORD_KINDS,
    STATE_KIND,
    UNKNOWN,
    ProbeState,
    fingerprint,
    judge,
    lease_end,
    next_due,
    record_type,
)

log = logging.getLogger("xpresso_env.probes")

TICK_S = 0.25  # the scheduler looks for due records at least this often
KIND_NAMES = {"harnesses": "harness", "engines": "engine"}


@dataclass
class Entry:
    """What the scheduler knows of one record between syncs."""

    kind: str
    group: str
    due: datetime
    target: str  # fingerprint
    disabled: bool


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
class _Step:
    jobs: list[Job] = field(default_factory=list)
    saved: list[tuple[str, Any]] = field(default_factory=list)  # (kind, record) to announce after commit
    outcomes: dict[str, Outcome] = field(default_factory=dict)
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


def _storable(result: ProbeResult) -> ProbeResult:
    version = None if result.version is None else _text(result.version, 100)
    return replace(result, ok=bool(result.ok), detail=_text(result.detail) or "no detail", version=version)


class _ProbePool:
    """``size`` probe threads fed from one queue: ThreadPoolExecutor's work, without a Future, a
    work item, a Condition and a semaphore per probe (a visible share of the steady state's CPU at
    hundreds of probes a second). ``shutdown`` drops the jobs not started (their claims expire);
    running probes finish, bounded by ``timeout_s``, and their threads end."""

    def __init__(self, size: int, name: str):
        self._queue: "queue.SimpleQueue[Optional[tuple[Any, tuple]]]" = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Any, *args: Any) -> None:
        self._queue.put((fn, args))

    def shutdown(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._closed:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # _run catches the prober's errors; this is the pool's last word
                log.exception("probe thread")


class ProbeHooks:
    """The plugin object through which the service hears of saved records (registered on the
    plugin manager by the application context while the service runs)."""

    def __init__(self, service: "ProbeService"):
        self._service = service

    @hookimpl
    def xpresso_record_saved(self, kind, record, created):
        self._service.noticed(kind, record)


class ProbeService:
    """Probes harnesses and engines (see the module docstring).

    :param probers: the prober for each (record kind, type), from ``probers.choose_probers``.
    :param clock: wall time for probe times, claims and due times (shared by all processes).
    """

    def __init__(self, storage: StorageBackend, settings: ProbesSettings, probers: Mapping[tuple[str, str], Prober],
                 journal: Journal, events: Events, metrics: MetricsSink = NULL_METRICS, clock: Clock = utcnow):
        self.storage = storage
        self.settings = settings
        self.probers = dict(probers)
        self.journal = journal
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.hooks = ProbeHooks(self)
        self._cond = threading.Condition()
        self._schedule: dict[str, Entry] = {}
        # (due, record id) for the schedule's entries, earliest first: a step pops what is due
        # instead of scanning every entry. An entry whose due time moves gets a new item; the
        # old one is stale (its time no longer matches the entry) and is dropped when popped.
        self._heap: list[tuple[datetime, str]] = []
        self._inflight: set[str] = set()
        self._finished: list[Finished] = []
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._pool: Optional[_ProbePool] = None
        self._problem: Optional[str] = None
        self._next_sync = 0.0
        self._next_full = 0.0
        # Whether a claim or a result met another process's probing since the last re-read: alone,
        # this process moves every due time itself and the once-an-interval re-read (a quarter
        # of a second's CPU at 10,000 records) finds nothing new.
        self._others_seen = False
        # With change counters, "did any harness, engine or group change?" is one small read.
        self._counters = change_counters(storage)
        self._watched: Optional[Watched] = None

    # -- life cycle -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if not self.settings.enabled or self.running:
            return
        self._stopping.clear()
        self._pool = _ProbePool(self.settings.concurrency, "xpresso-probe")
        self._thread = threading.Thread(target=self._loop, name="xpresso-probe-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop probing; the claims of probes still running are released for other processes."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        with self._cond:
            held = sorted(self._inflight)
            self._inflight.clear()
        if held:
            try:
                with self.storage.write() as tx:
                    for record_id in held:
                        doc = tx.get(STATE_KIND, record_id, lock=True)
                        if doc is not None and doc.body.get("claimed_by") == self.owner:
                            tx.update(replace(doc, body={**doc.body, "claimed_by": None, "lease_until": None}))
            except XpressoError as exc:
                log.warning("probe claims not released (they expire): %s", exc.detail)

    def problem(self) -> Optional[str]:
        """None when probing works (or is off), else why not: for ``/api/v2/health``."""
        if not self.settings.enabled:
            return None
        if self._thread is not None and not self._thread.is_alive() and not self._stopping.is_set():
            return "the probe scheduler has stopped"
        return self._problem

    def status(self) -> dict[str, Any]:
        with self._cond:
            scheduled, inflight = len(self._schedule), len(self._inflight)
        return {"enabled": self.settings.enabled, "running": self.running, "problem": self.problem(),
                "records": scheduled, "in_flight": inflight}

    # -- hearing of edits -------------------------------------------------------------------
    def noticed(self, kind: str, record: Any) -> None:
        """A record was saved in this process: a new target (or a re-enabled record) is probed now."""
        if kind not in RECORD_KINDS or not self.running:
            return
        body = {"harness": getattr(record, "harness", None), "path": getattr(record, "path", None),
                "type": getattr(record, "type", None), "base_url": getattr(record, "base_url", None),
                "username": getattr(record, "username", None), "api_token": getattr(record, "api_token", None)}
        body = {k: (v.value if hasattr(v, "value") else v) for k, v in body.items()}
        record_id = str(record.id)
        target = fingerprint(kind, body)
        disabled = str(getattr(record, "configuration_state", "")) == DISABLED
        with self._cond:
            entry = self._schedule.get(record_id)
            if entry is not None and entry.target == target and entry.disabled == disabled:
                return
            now = self.clock()
            self._schedule[record_id] = Entry(kind, str(record.group), now, target, disabled)
            heapq.heappush(self._heap, (now, record_id))
            self._cond.notify_all()

    # -- the scheduler ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                now_m = time.monotonic()
                if now_m >= self._next_sync:
                    # A full re-read when records or groups changed (one counter read tells), and
                    # once an interval when another process probes too (due times moved by its
                    # probes; without the re-read each would cost a claim that finds it done).
                    periodic = now_m >= self._next_full and (self._others_seen or self._counters is None)
                    if periodic or self._records_changed():
                        self._others_seen = False
                        self._sync()
                        self._next_full = now_m + self.settings.interval_s
                    self._next_sync = now_m + self.settings.sync_s
                self._step()
                self._problem = None
            except XpressoError as exc:
                self._problem = f"storage: {exc.detail}"
                log.warning("probe scheduler: %s", exc.detail)
            except Exception as exc:  # keep probing whatever one step hit; say so in /health
                self._problem = f"{type(exc).__name__}: {exc}"
                log.exception("probe scheduler step failed")
            with self._cond:
                if not self._batch_ready() and not self._stopping.is_set():
                    self._cond.wait(TICK_S)

    def _batch_ready(self) -> bool:
        """Whether enough results wait to be worth a write transaction now (called holding
        ``_cond``): a pool's worth, or every probe in flight (so a few records are not kept
        waiting). Otherwise the results wait for the next tick; one transaction per result, at
        hundreds of probes a second, cost more CPU in commits than everything else together."""
        waiting = len(self._finished)
        return waiting > 0 and (waiting >= self.settings.concurrency or waiting >= len(self._inflight))

    def _records_changed(self) -> bool:
        if self._counters is None or self._watched is None:
            return True  # a backend without counters: re-read every sync_s
        keys, values = self._watched
        return self._counters.versions(keys) != values

    def _sync(self) -> None:
        """Re-read which records exist, their targets and when each is due."""
        now = self.clock()
        with self.storage.read() as tx:
            records = [(kind, d) for kind in RECORD_KINDS for d in tx.query(kind, include_deleted=False)]
            states = {d.id: d.body for d in tx.query(STATE_KIND)}
            if self._counters is not None:
                groups = sorted(d.id for d in tx.query(Group.KIND))
                keys = ((Group.KIND, ""),) + tuple((k, g) for g in groups for k in RECORD_KINDS)
                self._watched = (keys, cast(CountingTx, tx).versions(keys))
        schedule: dict[str, Entry] = {}
        for kind, doc in records:
            body = doc.body
            disabled = body.get("configuration_state") == DISABLED
            target = fingerprint(kind, body)
            state = states.get(doc.id)
            if disabled:
                if body.get("operational_state") == UNKNOWN and (state is None or state.get("disabled")):
                    continue  # nothing to do until it is enabled again
                due = now
            elif (kind, record_type(kind, body)) not in self.probers:
                continue
            elif state is None or state.get("target") != target or state.get("disabled") or not state.get("next_at"):
                due = now
            else:
                due = parse_time(state["next_at"])
                lease = state.get("lease_until")
                if state.get("claimed_by") not in (None, self.owner) and lease:
                    due = max(due, parse_time(lease))
            schedule[doc.id] = Entry(kind, str(doc.group), due, target, disabled)
        with self._cond:
            # An edit noticed while this read ran may be due sooner than the read says: keep the
            # earlier time (a claim checks storage, so an early look costs a read, not a probe).
            for record_id, entry in schedule.items():
                old = self._schedule.get(record_id)
                if old is not None and old.due < entry.due:
                    entry.due = old.due
            for record_id in self._inflight:
                if record_id in self._schedule:
                    schedule[record_id] = self._schedule[record_id]
            self._schedule = schedule
            self._heap = [(entry.due, record_id) for record_id, entry in schedule.items()]
            heapq.heapify(self._heap)

    def _step(self) -> None:
        now = self.clock()
        with self._cond:
            finished, self._finished = self._finished, []
            chosen = self._pop_due(now, 2 * self.settings.concurrency - len(self._inflight))
        if not finished and not chosen:
            return
        try:
            step = self._transact(finished, chosen, now, force=False)
        except BaseException:
            with self._cond:  # the results are lost (their claims expire); the records stay scheduled
                for f in finished:
                    self._inflight.discard(f.job.record_id)
                self._requeue([f.job.record_id for f in finished] + chosen, now)
            raise
        self._announce(step)
        pool = self._pool
        with self._cond:
            for f in finished:
                self._inflight.discard(f.job.record_id)
            self._inflight.update(job.record_id for job in step.jobs)
            self._requeue([f.job.record_id for f in finished] + chosen, now)
        for job in step.jobs:
            if pool is None:
                break
            pool.submit(self._run, job, self._deliver)

    def _pop_due(self, now: datetime, room: int) -> list[str]:
        """Up to ``room`` records due by ``now`` and not in flight, earliest first (holding ``_cond``)."""
        chosen: list[str] = []
        heap, schedule, inflight = self._heap, self._schedule, self._inflight
        while heap and len(chosen) < room and heap[0][0] <= now:
            due, record_id = heapq.heappop(heap)
            entry = schedule.get(record_id)
            if entry is None or entry.due != due or record_id in inflight or record_id in chosen:
                continue  # stale: deleted, moved, or in flight (looked at again when it is back)
            chosen.append(record_id)
        if len(heap) > 2 * len(schedule) + 1024:  # stale items pile up when many due times move
            self._heap = [(e.due, rid) for rid, e in schedule.items()]
            heapq.heapify(self._heap)
        return chosen

    def _requeue(self, record_ids: Iterable[str], now: datetime) -> None:
        """Put back on the heap the records a step looked at that are still due and not in flight
        (a claim that found nothing to do, a result not written): their heap items were popped,
        and the next step must see them again, as it did when each step scanned the schedule.
        A record the step moved on got its own item from ``_reschedule``. Holding ``_cond``."""
        for record_id in set(record_ids):
            entry = self._schedule.get(record_id)
            if entry is not None and entry.due <= now and record_id not in self._inflight:
                heapq.heappush(self._heap, (entry.due, record_id))

    def _deliver(self, finished: Finished) -> None:
        with self._cond:
            self._finished.append(finished)
            if self._batch_ready():
                self._cond.notify_all()

    def _run(self, job: Job, deliver: Any) -> Finished:
        at = self.clock()
        started = time.monotonic()
        try:
            result = job.prober.probe(ProbeTarget(kind=job.kind, type=job.type, record=job.body,
                                                  timeout_s=self.settings.timeout_s))
        except Exception as exc:  # a prober's bug is that record's failed probe, not the scheduler's end
            log.exception("prober %s failed on %s %s", getattr(job.prober, "name", "?"), job.kind, job.record_id)
            result = ProbeResult(ok=False, detail=f"probe error: {type(exc).__name__}")
        seconds = time.monotonic() - started
        result = _storable(result)
        try:
            self.metrics.probe_finished(job.kind, seconds, result.ok)
        except Exception:
            log.exception("probe metrics failed")
        finished = Finished(job=job, result=result, at=at, seconds=seconds)
        deliver(finished)
        return finished

    # -- one transaction: write results, claim due records ----------------------------------
    def _transact(self, finished: Iterable[Finished], due: Iterable[str], now: datetime, force: bool,
                  entries: Optional[Mapping[str, Entry]] = None) -> _Step:
        """Write ``finished`` results and claim the ``due`` records, in one write transaction,
        documents locked in id order. ``force`` claims even records not due or claimed by a
        live claim elsewhere (`xpresso-env probe`)."""
        step = _Step(watched=self._watched if self._counters is not None else None)
        work: list[tuple[str, int, Any]] = [(f.job.record_id, 0, f) for f in finished]
        work += [(rid, 1, None) for rid in due]
        work.sort(key=lambda w: (w[0], w[1]))
        with self.storage.write() as tx:
            for record_id, order, item in work:
                if order == 0:
                    self._apply(tx, item, now, step)
                else:
                    entry = (entries or {}).get(record_id)
                    if entry is None:
                        with self._cond:
                            entry = self._schedule.get(record_id)
                    if entry is not None:
                        self._claim(tx, record_id, entry.kind, now, force, step)
            if step.before is not None and step.watched is not None:
                step.after = cast(CountingTx, tx).versions(step.watched[0])
        self._own_writes(step)
        return step

    def _own_writes(self, step: _Step) -> None:
        """After a committed step that wrote records: if the watched change counters moved by
        exactly this step's own bumps, nobody else changed a harness, engine or group since the
        last sync, so the scheduler need not re-read every record to find out (a first round
        changes thousands of records' state, and each change used to cost a full re-read at the
        next look). Anything else (another writer's bump, a store-wide counter) leaves the
        watched values alone: the next look sees a change and re-reads, as before. Exact on
        every backend: a counter only grows, and a transaction bumps each key at most once
        after ``before`` was read (``versions`` flushes its earlier bumps)."""
        if step.watched is None or step.before is None or step.after is None:
            return
        keys, values = step.watched
        expected = tuple(v + (1 if k in step.bumped else 0) for k, v in zip(keys, step.before))
        if step.before != values or step.after != expected:
            return
        with self._cond:
            if self._watched is step.watched:  # not re-synced meanwhile
                self._watched = (keys, step.after)

    def _claim(self, tx: Tx, record_id: str, kind: str, now: datetime, force: bool, step: _Step) -> None:
        record = tx.get(kind, record_id)
        if record is None or record.deleted:
            with self._cond:
                self._schedule.pop(record_id, None)
            return
        body = record.body
        type_ = record_type(kind, body)
        doc = tx.get(STATE_KIND, record_id, lock=True)
        state = ProbeState.from_doc(doc) if doc is not None else ProbeState.fresh(record, kind, now)
        target = fingerprint(kind, body)
        if body.get("configuration_state") == DISABLED:
            self._disable(tx, record, state, doc is None, now, step)
            self._reschedule(record_id, None)
            step.outcomes[record_id] = Outcome(str(record.group), kind, str(body.get("name")), None, DISABLED_REASON,
                                               UNKNOWN)
            return
        prober = self.probers.get((kind, type_))
        if prober is None:
            self._reschedule(record_id, None)
            step.outcomes[record_id] = Outcome(str(record.group), kind, str(body.get("name")), None,
                                               f"no prober for {kind}s of type {type_}",
                                               str(body.get("operational_state")))
            return
        if state.target != target or state.disabled:
            state = state.restarted(record, now)  # a new target, or enabled again: from UNKNOWN
        elif not force:
            if state.claimed_elsewhere(self.owner, now):
                self._others_seen = True
                self._reschedule(record_id, parse_time(state.lease_until or format_time(now)))
                return
            if state.next_at is not None and parse_time(state.next_at) > now:
                self._others_seen = True
                self._reschedule(record_id, parse_time(state.next_at))  # another process probed it
                return
        state = state.but(claimed_by=self.owner, lease_until=lease_end(now, self.settings.lease_s))
        try:
            tx.insert(state.to_doc()) if doc is None else tx.update(state.to_doc())
        except AlreadyExists:
            self._others_seen = True
            return  # another process created it first: it holds the claim
        step.jobs.append(Job(record_id=record_id, kind=kind, group=str(record.group), name=str(body.get("name")),
                             type=type_, target=target, body=dict(body), prober=prober))

    def _disable(self, tx: Tx, record: Doc, state: ProbeState, new: bool, now: datetime, step: _Step) -> None:
        """A DISABLED record is not probed and shows UNKNOWN."""
        if record.body.get("operational_state") != UNKNOWN:
            self._set_record(tx, record, {"operational_state": UNKNOWN}, DISABLED_REASON, step)
        if not state.disabled:
            state = replace(state.restarted(record, now), disabled=True, reason=DISABLED_REASON, claimed_by=None,
                            lease_until=None)
            tx.insert(state.to_doc()) if new else tx.update(state.to_doc())

    def _apply(self, tx: Tx, done: Finished, now: datetime, step: _Step) -> None:
        job, result = done.job, done.result
        outcome = Outcome(job.group, job.kind, job.name, result)
        step.outcomes[job.record_id] = outcome
        doc = tx.get(STATE_KIND, job.record_id, lock=True)
        if doc is None:
            return
        state = ProbeState.from_doc(doc)
        if state.claimed_by != self.owner or state.target != job.target:
            self._others_seen = True
            return  # taken over after our lease ran out, or retargeted meanwhile: not ours to write
        released = state.but(claimed_by=None, lease_until=None)
        record = tx.get(job.kind, job.record_id, lock=True)
        if (record is None or record.deleted or record.body.get("configuration_state") == DISABLED
                or fingerprint(job.kind, record.body) != job.target):
            tx.update(released.but(next_at=None).to_doc())  # looked at again by the next claim
            return
        current = str(record.body.get("operational_state") or UNKNOWN)
        verdict = judge(current, state.restart, result.ok, result.detail, state.consecutive_failures,
                        state.consecutive_successes, self.settings.fail_after, self.settings.ok_after, state.reason)
        at = format_time(done.at)
        changes: dict[str, Any] = {}
        if verdict.changed:
            changes["operational_state"] = verdict.state
        if result.ok:
            changes.update({k: v for k, v in result.fields.items() if k in record.body and record.body[k] != v})
        if changes:
            self._set_record(tx, record, changes, result.detail if verdict.changed else None, step)
        state_changed = verdict.changed or state.restart or state.operational_state != verdict.state
        due_again = next_due(job.record_id, now, self.settings.interval_s)
        tx.update(released.but(
            restart=False, consecutive_failures=verdict.failures, consecutive_successes=verdict.successes,
            reason=verdict.reason, operational_state=verdict.state,
            since=format_time(now) if state_changed else (state.since or at),
            last_probe={"at": at, "ok": result.ok, "latency_ms": round(done.seconds * 1000, 3),
                        "detail": result.detail, "version": result.version},
            next_at=format_time(due_again)).to_doc())
        self._reschedule(job.record_id, due_again)
        step.outcomes[job.record_id] = replace(outcome, state=verdict.state)

    def _set_record(self, tx: Tx, record: Doc, changes: Mapping[str, Any], reason: Optional[str],
                    step: _Step) -> None:
        """Write observed fields on the record, ``date_modified`` untouched; a state change is
        journalled (history row, webhook outbox) in this same transaction."""
        before = record.body
        after = {**before, **{k: (v.value if hasattr(v, "value") else v) for k, v in changes.items()}}
        updated = replace(record, body=after)
        if step.watched is not None and not getattr(self._counters, "versions_store_wide", True):
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

    def _reschedule(self, record_id: str, due: Optional[datetime]) -> None:
        with self._cond:
            entry = self._schedule.get(record_id)
            if entry is None:
                return
            if due is None:
                self._schedule.pop(record_id, None)
            elif due != entry.due:
                entry.due = due
                heapq.heappush(self._heap, (due, record_id))

    def _announce(self, step: _Step) -> None:
        for kind, doc in step.saved:
            self.events.record_saved(kind, from_doc(doc), created=False)

    # -- probing on demand (CLI, tests) -----------------------------------------------------
    def probe_now(self, kind: Optional[str] = None, group: Optional[str] = None,
                  name: Optional[str] = None) -> list[Outcome]:
        """Probe the selected live records now, whether due or not, and write the results as a
        round of probes would (hysteresis included). Returns one outcome per record, in order."""
        kinds = [KIND_NAMES.get(kind, kind)] if kind else list(RECORD_KINDS)
        with self.storage.read() as tx:
            docs = [(k, d) for k in kinds for d in tx.query(k, group, include_deleted=False)
                    if (name is None or d.name == name) and (group is None or d.group == group)]
        now = self.clock()
        entries = {d.id: Entry(k, str(d.group), now, fingerprint(k, d.body), False) for k, d in docs}
        outcomes = self._round(list(entries), now, force=True, entries=entries)
        return [outcomes[d.id] for _, d in docs if d.id in outcomes]

    def run_due(self) -> list[Outcome]:
        """One synchronous round: re-read the records, then claim, probe and write every record
        that is due now (tests drive the schedule with this and a fake clock)."""
        self._sync()
        now = self.clock()
        with self._cond:
            due = sorted(rid for rid, e in self._schedule.items() if e.due <= now and rid not in self._inflight)
        return list(self._round(due, now, force=False).values())

    def _round(self, ids: list[str], now: datetime, force: bool,
               entries: Optional[Mapping[str, Entry]] = None) -> dict[str, Outcome]:
        step = self._transact([], ids, now, force, entries)
        self._announce(step)
        outcomes = dict(step.outcomes)
        if not step.jobs:
            return outcomes
        with ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="xpresso-probe-now") as pool:
            futures: list[Future] = [pool.submit(self._run, job, lambda f: None) for job in step.jobs]
            finished = [f.result() for f in futures]
        done = self._transact(finished, [], self.clock(), force)
        self._announce(done)
        outcomes.update(done.outcomes)
        return outcomes


def read_state(tx: Tx, group: str, kind: str, record_id: str, probed_types: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The ``/state`` answer for the record ``record_id`` of ``kind`` in ``group`` (404 for a
    record of another group: no leak)."""
    from ..core.errors import NotFound
    from ..core.validation import parse_uuid
    from .state import describe

    doc = tx.get(kind, str(parse_uuid(record_id)))
    if doc is None or doc.group != group:
        raise NotFound()
    state_doc = tx.get(STATE_KIND, doc.id)
    state = ProbeState.from_doc(state_doc) if state_doc is not None else None
    return describe(kind, doc.body, state, (kind, record_type(kind, doc.body)) in set(probed_types))
