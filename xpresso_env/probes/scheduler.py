"""The probe service's scheduler: who probes what, when, on which threads.

* **Off the request threads.** One scheduler loop (:attr:`ProbeService.scheduler`, a
  ``runtime/loop.py`` loop the app starts) and a pool of ``probes.concurrency`` probe threads per
  process (``pool.py``); a request never waits for a probe. Each probe is bounded by
  ``probes.timeout_s`` (the probers keep that promise, see ``xpresso_env/probes/protocol.py``).
* **Shared by processes through storage.** Every probed record has a ``probe_state`` document
  (``state.py``); a process claims a due record before probing it and writes the result back
  (``claims.py``), so each record is probed by one process per interval, and the records of a
  process that died are due for whichever process looks next once its claims expire.
* **Batched.** Each scheduler step is ONE write transaction that writes every result finished
  since the last step and claims every record that became due (up to twice the pool's size in
  flight). A step runs when a pool's worth of results waits, or every probe in flight has
  finished, or at the next tick (``TICK_S``): not once per result, since a commit costs more than
  a probe's bookkeeping.
* **What is due** is known from an in-memory schedule, with a heap of due times (a step pops
  what is due, it does not scan every record). Every ``probes.sync_s`` the scheduler asks the
  store's change counters whether any harness, engine or group changed (one small read) and
  re-reads only the (kind, group)s whose counter moved (``schedule.py``; every record when a group
  was added or deleted, once an interval when another process probes too, or every time on a
  backend without counters): records added, edited or deleted through other processes.
  The service's own state changes move those counters too; it accounts for its own bumps
  (``_own_writes``), so a round that changes thousands of states does not re-read everything. An
  edit through this process is noticed at once (the ``xpresso_record_saved`` hook). Either way a
  new target is probed within a second. On a storage with change notices (PostgreSQL), an edit
  through another process is announced with its commit and read at once
  (:meth:`ProbeService.changed_elsewhere`).
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional, cast

from ..config import ProbesSettings
from ..core.codec import from_doc
from ..core.errors import XpressoError
from ..core.metrics import NULL_METRICS, MetricsSink
from ..core.models import Group
from ..core.timeutil import Clock, utcnow
from ..hookspecs import hookimpl
from ..journal.journal import Journal
from ..runtime.events import Events
from ..runtime.loop import Loop
from ..storage import CountingTx, Key, StorageBackend, change_counters
from .claims import Finished, Job, Outcome, ProbeClaims, Step, Watched, storable
from .pool import ProbePool
from .protocol import Prober, ProbeResult, ProbeTarget
from .schedule import GROUPS_KEY, Entry, entries, moved_keys, read_moved
from .state import DISABLED, RECORD_KINDS, STATE_KIND, fingerprint

log = logging.getLogger("xpresso_env.probes")

TICK_S = 0.25  # the scheduler looks for due records at least this often
STOP_JOIN_S = 10.0  # how long a stop waits for a scheduler step to end
KIND_NAMES = {"harnesses": "harness", "engines": "engine"}


class ProbeHooks:
    """The plugin object through which the service hears of saved records (registered on the
    plugin manager by the application context while the service runs)."""

    def __init__(self, service: "ProbeService"):
        self._service = service

    @hookimpl
    def xpresso_record_saved(self, kind, record, created):
        self._service.noticed(kind, record)


class ProbeService:
    """Probes harnesses and engines (see the module docstring). Its storage half, the claims and
    results (``claims.py``), is made here from the same collaborators.

    :param probers: the prober for each (record kind, type), from ``probers.choose_probers``.
    :param clock: wall time for probe times, claims and due times (shared by all processes).
    :param owner: the worker id of this service's claims (``lease.worker_id()``).
    """

    def __init__(self, storage: StorageBackend, settings: ProbesSettings, probers: Mapping[tuple[str, str], Prober],
                 journal: Journal, events: Events, metrics: MetricsSink = NULL_METRICS, clock: Clock = utcnow,
                 *, owner: str):
        self.storage = storage
        self.settings = settings
        self.probers = dict(probers)
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.owner = owner
        self.hooks = ProbeHooks(self)
        # With change counters, "did any harness, engine or group change?" is one small read.
        self._counters = change_counters(storage)
        self.claims = ProbeClaims(storage, settings, self.probers, journal, owner, self._counters)
        self._lock = threading.RLock()
        self._schedule: dict[str, Entry] = {}
        # (due, record id) for the schedule's entries, earliest first: a step pops what is due
        # instead of scanning every entry. An entry whose due time moves gets a new item; the
        # old one is stale (its time no longer matches the entry) and is dropped when popped.
        self._heap: list[tuple[datetime, str]] = []
        self._inflight: set[str] = set()
        self._finished: list[Finished] = []
        self._pool: Optional[ProbePool] = None
        self._problem: Optional[str] = None
        self._next_sync = 0.0
        self._next_full = 0.0
        # Whether a claim or a result met another process's probing since the last re-read: alone,
        # this process moves every due time itself and the once-an-interval re-read (a quarter
        # of a second's CPU at 10,000 records) finds nothing new.
        self._others_seen = False
        self._watched: Optional[Watched] = None
        # The scheduler's steps, run by the app (background()): the probe threads start with it;
        # its stop releases the claims of the probes still running, for other processes.
        self.scheduler = Loop("xpresso-probe-scheduler", self._tick, TICK_S, logger=log, join_s=STOP_JOIN_S,
                              on_start=self._open_pool, on_stop=self._close_pool)

    # -- life cycle -------------------------------------------------------------------------
    def _open_pool(self) -> None:
        self._pool = ProbePool(self.settings.concurrency, "xpresso-probe")

    def _close_pool(self) -> None:
        """After the scheduler's last step: jobs not started are dropped (their claims expire),
        and the claims of the records in flight are released."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        with self._lock:
            held = sorted(self._inflight)
            self._inflight.clear()
        if held:
            self.claims.release(held)

    def problem(self) -> Optional[str]:
        """None when probing works (or is off), else why not: for ``/api/v2/health``."""
        if not self.settings.enabled:
            return None
        return self._problem

    def status(self) -> dict[str, Any]:
        with self._lock:
            scheduled, inflight = len(self._schedule), len(self._inflight)
        return {"enabled": self.settings.enabled, "running": self.scheduler.running, "problem": self.problem(),
                "records": scheduled, "in_flight": inflight}

    # -- hearing of edits -------------------------------------------------------------------
    def noticed(self, kind: str, record: Any) -> None:
        """A record was saved in this process: a new target (or a re-enabled record) is probed now."""
        if kind not in RECORD_KINDS or not self.scheduler.running:
            return
        body = {"harness": getattr(record, "harness", None), "path": getattr(record, "path", None),
                "type": getattr(record, "type", None), "base_url": getattr(record, "base_url", None),
                "username": getattr(record, "username", None), "api_token": getattr(record, "api_token", None)}
        body = {k: (v.value if hasattr(v, "value") else v) for k, v in body.items()}
        record_id = str(record.id)
        target = fingerprint(kind, body)
        disabled = str(getattr(record, "configuration_state", "")) == DISABLED
        with self._lock:
            entry = self._schedule.get(record_id)
            if entry is not None and entry.target == target and entry.disabled == disabled:
                return
            now = self.clock()
            self._schedule[record_id] = Entry(kind, str(record.group), now, target, disabled)
            heapq.heappush(self._heap, (now, record_id))
        self.scheduler.wake()

    def changed_elsewhere(self, key: str) -> None:
        """A change notice (``runtime/notices.py``): a harness or engine, ``"<kind>:<id>"``, was
        saved by another process; "" when notices may have been missed. The record is read and
        treated as an edit made here, instead of waiting for the next ``sync_s`` re-read."""
        if not self.scheduler.running:
            return
        kind, _, record_id = key.partition(":")
        if kind not in RECORD_KINDS or not record_id:
            self._next_sync = 0.0  # look at the change counters now
            self.scheduler.wake()
            return
        with self.storage.read() as tx:
            doc = tx.get(kind, record_id)
        if doc is None or doc.deleted:
            return  # gone: the next re-read drops it (a claim of it finds nothing to do meanwhile)
        self.noticed(kind, from_doc(doc))

    # -- the scheduler ----------------------------------------------------------------------
    def _tick(self) -> Optional[float]:
        """One turn of the scheduler loop: re-read the records when they changed, then a step;
        the next turn comes at once when results wait to be written, else after ``TICK_S`` (or
        when woken). Never raises: what went wrong is the ``problem`` /api/v2/health reports."""
        try:
            now_m = time.monotonic()
            if now_m >= self._next_sync:
                # A full re-read when records or groups changed (one counter read tells), and
                # once an interval when another process probes too (due times moved by its
                # probes; without the re-read each would cost a claim that finds it done).
                periodic = now_m >= self._next_full and (self._others_seen or self._counters is None)
                moved = None if periodic else self._moved()
                if moved is None:
                    self._others_seen = False
                    self._sync()
                    self._next_full = now_m + self.settings.interval_s
                elif moved:
                    self._sync(moved)
                self._next_sync = now_m + self.settings.sync_s
            self._step()
            self._problem = None
        except XpressoError as exc:
            self._problem = f"storage: {exc.detail}"
            log.warning("probe scheduler: %s", exc.detail)
        except Exception as exc:  # keep probing whatever one step hit; say so in /health
            self._problem = f"{type(exc).__name__}: {exc}"
            log.exception("probe scheduler step failed")
        with self._lock:
            return 0.0 if self._batch_ready() else None

    def _batch_ready(self) -> bool:
        """Whether enough results wait to be worth a write transaction now (called holding
        ``_lock``): a pool's worth, or every probe in flight (so a few records are not kept
        waiting). Otherwise the results wait for the next tick; one transaction per result, at
        hundreds of probes a second, cost more CPU in commits than everything else together."""
        waiting = len(self._finished)
        return waiting > 0 and (waiting >= self.settings.concurrency or waiting >= len(self._inflight))

    def _moved(self) -> Optional[frozenset[Key]]:
        """The watched (kind, group)s changed since the last read (``schedule.moved_keys``);
        None: re-read every record (also on a backend without counters, every sync_s)."""
        if self._counters is None or self._watched is None:
            return None
        keys, values = self._watched
        return moved_keys(keys, values, self._counters.versions(keys), self._counters.versions_store_wide)

    def _sync(self, moved: Optional[frozenset[Key]] = None) -> None:
        """Re-read which records exist, their targets and when each is due: every record, or with
        ``moved`` only those of the (kind, group)s whose counters moved (``schedule.read_moved``).
        Only the counters read are taken as of this read: a change to the others meanwhile is
        seen at the next look."""
        now = self.clock()
        watched = self._watched
        with self.storage.read() as tx:
            if moved is None or watched is None:
                moved = None
                records = [(kind, d) for kind in RECORD_KINDS for d in tx.query(kind, include_deleted=False)]
                states = {d.id: d.body for d in tx.query(STATE_KIND)}
                if self._counters is not None:
                    groups = sorted(d.id for d in tx.query(Group.KIND))
                    keys = (GROUPS_KEY,) + tuple((k, g) for g in groups for k in RECORD_KINDS)
                    watched = (keys, cast(CountingTx, tx).versions(keys))
            else:
                # Looked up one id at a time (atomic under the GIL), not iterated: no copy, no lock.
                records, states, unchanged = read_moved(tx, moved, self._schedule)
                read = cast(CountingTx, tx).versions(watched[0])
        fresh = entries(records, states, now, self.probers, self.owner)
        with self._lock:
            old = self._schedule
            schedule = {} if moved is None else {rid: e for rid, e in old.items()
                                                  if (e.kind, e.group) not in moved or rid in fresh or rid in unchanged}
            for record_id, entry in fresh.items():
                known = old.get(record_id)
                # An edit noticed while this read ran may be due sooner than the read says: keep the
                # earlier time (a claim checks storage, so an early look costs a read, not a probe).
                if known is not None and known.due < entry.due:
                    entry.due = known.due
                schedule[record_id] = entry
                if moved is not None and (known is None or known.due != entry.due):
                    heapq.heappush(self._heap, (entry.due, record_id))  # (dropped entries' items go stale)
            for record_id in self._inflight:
                if record_id in old:
                    schedule[record_id] = old[record_id]
            self._schedule = schedule
            if moved is None:
                self._heap = [(entry.due, record_id) for record_id, entry in schedule.items()]
                heapq.heapify(self._heap)
                self._watched = watched
            elif self._watched is not None:
                keys, values = self._watched
                self._watched = (keys, tuple(new if key in moved else value
                                             for key, value, new in zip(keys, values, read)))

    def _step(self) -> None:
        now = self.clock()
        with self._lock:
            finished, self._finished = self._finished, []
            chosen = self._pop_due(now, 2 * self.settings.concurrency - len(self._inflight))
        if not finished and not chosen:
            return
        try:
            step = self._transact(finished, chosen, now, force=False)
        except BaseException:
            with self._lock:  # the results are lost (their claims expire); the records stay scheduled
                for f in finished:
                    self._inflight.discard(f.job.record_id)
                self._requeue([f.job.record_id for f in finished] + chosen, now)
            raise
        self._announce(step)
        pool = self._pool
        with self._lock:
            for f in finished:
                self._inflight.discard(f.job.record_id)
            self._inflight.update(job.record_id for job in step.jobs)
            self._requeue([f.job.record_id for f in finished] + chosen, now)
        for job in step.jobs:
            if pool is None:
                break
            pool.submit(self._run, job, self._deliver)

    def _pop_due(self, now: datetime, room: int) -> list[str]:
        """Up to ``room`` records due by ``now`` and not in flight, earliest first (holding ``_lock``)."""
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
        A record the step moved on got its own item from ``_reschedule``. Holding ``_lock``."""
        for record_id in set(record_ids):
            entry = self._schedule.get(record_id)
            if entry is not None and entry.due <= now and record_id not in self._inflight:
                heapq.heappush(self._heap, (entry.due, record_id))

    def _deliver(self, finished: Finished) -> None:
        with self._lock:
            self._finished.append(finished)
            ready = self._batch_ready()
        if ready:
            self.scheduler.wake()

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
        result = storable(result)
        try:
            self.metrics.probe_finished(job.kind, seconds, result.ok)
        except Exception:
            log.exception("probe metrics failed")
        finished = Finished(job=job, result=result, at=at, seconds=seconds)
        deliver(finished)
        return finished

    # -- one transaction: write results, claim due records (claims.py) -----------------------
    def _transact(self, finished: Iterable[Finished], due: Iterable[str], now: datetime, force: bool,
                  entries: Optional[Mapping[str, Entry]] = None) -> Step:
        """One step of ``claims.py``, then what it means for the schedule, after commit."""
        kinds: dict[str, str] = {}
        with self._lock:
            for record_id in due:
                entry = (entries or {}).get(record_id) or self._schedule.get(record_id)
                if entry is not None:
                    kinds[record_id] = entry.kind
        step = self.claims.transact(finished, kinds, now, force, self._watched)
        if step.others_seen:
            self._others_seen = True
        for record_id, moved in step.moves.items():
            self._reschedule(record_id, moved)
        self._own_writes(step)
        return step

    def _own_writes(self, step: Step) -> None:
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
        with self._lock:
            if self._watched is step.watched:  # not re-synced meanwhile
                self._watched = (keys, step.after)

    def _reschedule(self, record_id: str, due: Optional[datetime]) -> None:
        with self._lock:
            entry = self._schedule.get(record_id)
            if entry is None:
                return
            if due is None:
                self._schedule.pop(record_id, None)
            elif due != entry.due:
                entry.due = due
                heapq.heappush(self._heap, (due, record_id))

    def _announce(self, step: Step) -> None:
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
        with self._lock:
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
