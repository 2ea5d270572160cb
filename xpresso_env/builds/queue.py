"""The build queue: storage holds it, worker threads claim from it, leases keep it honest.

* A submitted build is a stored Image with ``status: building`` and no claim: that is the queue.
  Nothing about it lives only in memory, so every process that shares the storage (several
  ``serve`` processes on one PostgreSQL database, or one restarted after a crash) sees it.
* Each service runs a pool of worker threads (:attr:`BuildQueue.workers`, ``builds.max_concurrent``
  of them unless `worker --concurrency` says otherwise). A worker takes the oldest
  claimable build (``date_created`` order) by CLAIMING it in a write transaction: it re-reads
  the record with ``get(lock=True)`` (SQLite's write lock, PostgreSQL's ``SELECT ... FOR
  UPDATE``, the YAML backend's lock), checks it is still claimable, and writes the claim
  (``claimed_by=<worker id>``, ``lease_until=now + builds.lease_s``: ``runtime/lease.py``),
  ``attempts + 1`` and who it is (``worker_meta``: host, boot id, pid namespace, pid). Two
  workers racing for one build serialize on that lock; the loser moves on to the next one. The
  claim rules of a build are ``claims.py``; one attempt, from workspace to outcome, ``attempt.py``.
* Each attempt works in its own folder, ``<workspace_root>/<image id>/<attempt>``, and records
  in its claim the process groups it starts (git, buildah): they run in sessions of their own,
  so a killed server leaves them running, still writing into that attempt's folder.
* A heartbeat loop (:attr:`BuildQueue.heartbeat`) renews the lease of every build this process
  runs. It also re-reads each record, so a cancel or delete made through ANOTHER process is
  noticed within a few seconds and the local build is stopped.
* A claim whose lease has expired belongs to a process that died (kill -9, a crash, a lost
  machine): any worker of any process takes it over and runs the build again in a new folder.
  On the same machine a dead owner (its pid gone) is taken over at once, without waiting for
  the lease, and the taker first kills the process groups the claim lists and removes the
  earlier attempts' folders. An earlier attempt on another machine is stopped by its own
  heartbeat (or died with its machine); the retention sweep removes its folder. After
  ``max_attempts`` claims a build is failed with "interrupted by restart" instead of being
  tried for ever. A graceful stop releases the claims of the builds it interrupts, so the next
  process starts them at once.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import replace
from typing import Optional

from ..config import BuildsSettings
from ..core.codec import from_doc, to_doc
from ..core.errors import XpressoError
from ..core.models import Image, ImageStatus
from ..core.timeutil import Clock, format_time
from ..journal.journal import Journal
from ..runtime import lease
from ..runtime.events import Events
from ..runtime.lease import Identity
from ..runtime.loop import Loop
from ..storage import BUILDS, StorageBackend, announce
from . import claims
from .attempt import (
    TIMEOUT_GRACE_S,
    BuildRunner,
    Outcome,
    RunningBuild,
    lower_priority,
    summary,
)
from .files import ImagePaths, remove_tar, remove_tree
from .log import BuildLogStore
from .sdk import procrun

log = logging.getLogger("xpresso_env.images")

DEFAULT_MAX_ATTEMPTS = 3
STOP_JOIN_S = 30.0  # how long a stop waits for the interrupted builds to give their claims back


def describe(image: Image) -> str:
    """How the operators' log names a build: its image id, then what it builds."""
    return f"{image.id} ({image.name}:{image.tag}, group {image.group})"


def outcome_text(final: Image, outcome: Outcome) -> str:
    """The end of a build in the operators' log: its status, what it made or why not, how long."""
    took = outcome.meta.get("timings", {}).get("total_s")
    text = final.status.value
    if outcome.result is not None and final.status == ImageStatus.SUCCESSFUL:
        text += f", image_id {outcome.result.image_id}"
    elif final.meta and final.meta.get("error"):
        text += f": {final.meta['error']}"
    return text + (f" after {took:g} s" if took is not None else "")


def announce_finished(events: Events, image: Image) -> None:
    """After a build's final state is committed: the build_finished and record hooks."""
    events.build_finished(image)
    events.record_saved(Image.KIND, image, created=False)


class BuildQueue:
    """The workers and the heartbeat of one service: two loops the app starts, the heartbeat
    first (it renews the claims of the builds the workers run) and stopped last.

    :param threads: worker threads of this process (builds run at once here).
    :param runner: runs one attempt of a claimed build (``attempt.py``).
    :param clock: record times (``date_updated``, ``built_at``, log stamps).
    :param lease_clock: wall time for leases, shared by every process on the storage.
    :param worker_id: this service's id (``lease.worker_id()``); its workers are ``<id>/w<n>``.
    :param identity: this process (``Identity.here()``): a claim of a dead process of this
        machine is taken over at once.
    :param poll_s: how often idle workers look for builds submitted through other processes.
    :param max_attempts: claims after which an unfinished build fails "interrupted by restart".
    :param logs: build logs, in storage (``log.py``): every process reads and follows them.
    :param journal: image.submitted / image.finished webhook events, in the change's transaction.
    :param process: what this process is called in operators' words ("server", "worker"): a build
        a stop interrupts says "the worker is stopping".
    """

    def __init__(self, storage: StorageBackend, builds: BuildsSettings, paths: ImagePaths, runner: BuildRunner,
                 events: Events, clock: Clock, lease_clock: Clock, *, threads: int, worker_id: str,
                 identity: Identity, logs: BuildLogStore, journal: Journal, process: str, poll_s: float = 1.0,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self.storage = storage
        self.process = process
        self.journal = journal
        self.logs = logs
        self.builds = builds
        self.paths = paths
        self.runner = runner
        self.events = events
        self.clock = clock
        self.lease_clock = lease_clock
        self.max_attempts = max_attempts
        self.identity = identity
        self.service_id = worker_id
        self.running: dict[str, RunningBuild] = {}
        self._lock = threading.Lock()
        # Set when this process begins to stop: from then on it claims nothing (``hold``).
        self._held = False
        # Worker n is ``<worker id>/w<n>`` on thread ``xpresso-build-<n>``; idle, it looks for
        # builds every poll_s or when woken. Its stop interrupts the running builds: each gives
        # its claim back (``Outcome.release``) and goes back to the queue for the next process.
        self.workers = Loop.pool("xpresso-build", [functools.partial(self._work_round, f"{worker_id}/w{n}")
                                                   for n in range(threads)],
                                 poll_s, logger=log, join_s=STOP_JOIN_S, interrupt=self._interrupt)
        self.heartbeat = Loop("xpresso-build-heartbeat", self.beat_all, max(0.2, min(2.0, builds.lease_s / 3)),
                              logger=log, wait_first=True)

    # -- life cycle ---------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self.workers.stopping

    def hold(self) -> None:
        """Claim no more builds: this process is about to stop. One assignment, so a signal
        handler may call it: without it, a process told to drain could still claim the build
        another draining process just handed back (woken at once by its change notice), and that
        build would be handed over twice."""
        self._held = True

    def _interrupt(self) -> None:
        with self._lock:
            for run in self.running.values():
                run.stop("shutdown")

    def wake(self) -> None:
        """Idle workers look for builds now (a build was submitted through this process)."""
        self.workers.wake()

    def is_running_here(self, image_id: str) -> bool:
        with self._lock:
            return image_id in self.running

    def stop_local(self, image_id: str, reason: str, wait_s: float) -> bool:
        """Stop a build this process runs and wait for it to end; False if it is not here."""
        with self._lock:
            run = self.running.get(image_id)
        if run is None:
            return False
        run.stop(reason)
        run.done.wait(wait_s)
        return True

    # -- claiming ---------------------------------------------------------------------------
    def _now(self) -> lease.Micros:
        return lease.micros(self.lease_clock())

    def claim_next(self, worker: str) -> Optional[Image]:
        if self._held:
            return None
        now = self._now()
        with self.storage.read() as tx:
            docs = tx.query(Image.KIND, include_deleted=False)
        with self._lock:
            here = set(self.running)
        candidates = [d for d in docs if d.body.get("status") == ImageStatus.BUILDING.value and d.id not in here]
        for candidate in candidates:
            if not claims.claimable(from_doc(candidate), now, self.identity):
                continue
            finished: Optional[Image] = None
            claimed: Optional[Image] = None
            with self.storage.write() as tx:
                doc = tx.get(Image.KIND, candidate.id, lock=True)
                if doc is None:
                    continue
                image = from_doc(doc)
                now = self._now()
                if not claims.claimable(image, now, self.identity):
                    continue
                previous = image
                if image.attempts >= self.max_attempts:
                    finished = claims.given_up(image, self.clock())
                    tx.update(to_doc(finished))
                    self.journal.image(tx, "finished", finished)
                    # in the same commit: whoever sees `failed` also finds the reason in the log
                    self.logs.line_in(tx, str(finished.id), finished.group, f"failed: {finished.meta['error']}")
                else:
                    claimed = claims.claimed(image, worker, now, self.builds.lease_s, self.identity, self.clock())
                    tx.update(to_doc(claimed))
            if finished is not None:
                log.warning("build %s: %s", describe(finished), finished.meta["error"])
                self._end_previous(finished, previous)
                remove_tree(self.paths.workspace(finished.id), self.paths.workspace_root)
                announce_finished(self.events, finished)
                continue
            if claimed is not None:
                if previous.claimed_by is not None:
                    self._log(claimed, f"worker {previous.claimed_by} stopped renewing its claim "
                                       f"(lease until {claims.expiry_text(previous)}): taking the build over")
                    log.info("build %s: taken over by %s from %s, attempt %d of %d", describe(claimed), worker,
                             previous.claimed_by, claimed.attempts, self.max_attempts)
                else:
                    log.info("build %s: claimed by %s, attempt %d of %d", describe(claimed), worker,
                             claimed.attempts, self.max_attempts)
                self._end_previous(claimed, previous)
                return claimed
        return None

    def _end_previous(self, image: Image, previous: Image) -> None:
        claims.end_previous(image, previous, self.identity, self.paths, functools.partial(self._log, image))

    def _started(self, run: RunningBuild, pid: int) -> None:
        """Record a process group the build just started in its claim, with the groups it
        started before that still run (see :func:`claims.end_previous`)."""
        if run.log is not None:
            # The buffered log lines (the command just started among them) are stored before the
            # claim names its process: a worker killed now leaves a log that says what it ran.
            run.log.flush()
        start = procrun.start_time(pid)
        if start is None:
            return  # already gone
        run.groups = [g for g in run.groups if procrun.start_time(g["pgid"]) == g["start"]]
        run.groups.append({"pgid": pid, "start": start})
        try:
            with self.storage.write() as tx:
                doc = tx.get(Image.KIND, run.image_id, lock=True)
                image = from_doc(doc) if doc is not None else None
                if image is None or image.claimed_by != run.worker:
                    return  # the heartbeat stops this build
                meta = {**(image.worker_meta or {}), "groups": list(run.groups)}
                tx.update(to_doc(replace(image, worker_meta=meta)))
        except XpressoError as exc:  # the build goes on; only a take-over after a crash misses it
            log.warning("build %s: cannot record process group %d in its claim: %s", run.image_id, pid, exc.detail)

    def _log(self, image: Image, text: str) -> None:
        try:
            self.logs.line(str(image.id), image.group, text)
        except XpressoError:
            log.exception("cannot write the build log of %s", image.id)

    # -- the worker ---------------------------------------------------------------------------
    def _work_round(self, worker: str) -> Optional[float]:
        """A round of a worker thread: after a build, look for the next at once; else wait."""
        lower_priority()  # the thread's own niceness, set again each round: a cheap system call
        return 0.0 if self.work_once(worker) else None

    def work_once(self, worker: str) -> bool:
        """One turn of a worker: claim a build and run it; False when there was none to claim."""
        try:
            image = self.claim_next(worker)
        except XpressoError as exc:
            log.warning("build queue: %s", exc.detail)
            return False
        except Exception:
            log.exception("build queue: unexpected error while claiming")
            return False
        if image is None:
            return False
        try:
            self._run(image, worker)
        except Exception:  # the worker must survive anything a build does
            log.exception("build %s: unexpected error", image.id)
        return True

    def _run(self, image: Image, worker: str) -> None:
        run = RunningBuild(image_id=str(image.id), worker=worker, deadline=time.monotonic() + self.builds.timeout_s)
        with self._lock:
            self.running[run.image_id] = run
        if self.stopping:
            run.stop("shutdown")
        started = self.clock()
        t0 = time.monotonic()
        ws = self.paths.workspace(image.id, image.attempts)
        try:
            with self.logs.writer(str(image.id), image.group) as blog:
                run.log = blog
                blog(f"attempt {image.attempts} of {self.max_attempts}: worker {worker} "
                     f"(host {self.identity.host}, pid {self.identity.pid})")
                outcome = self.runner.build(image, run, blog, ws, t0, functools.partial(self._started, run))
                elapsed = time.monotonic() - t0
                outcome.meta.setdefault("timings", {})["total_s"] = round(elapsed, 3)
                outcome.meta.update({"started_at": format_time(started), "finished_at": format_time(self.clock()),
                                     "attempt": image.attempts})
                blog(summary(image, outcome, self.process))
            self._finish(image, run, outcome)
        finally:
            # After the final commit: the result is visible without waiting for the clean-up.
            remove_tree(ws, self.paths.workspace_root)
            try:
                ws.parent.rmdir()  # the image's folder, unless another attempt's folder is left in it
            except OSError:
                pass
            with self._lock:
                self.running.pop(run.image_id, None)
            run.done.set()

    def _finish(self, image: Image, run: RunningBuild, outcome: Outcome) -> None:
        published = outcome.status == ImageStatus.SUCCESSFUL
        final: Optional[Image] = None
        handed_back = False
        with self.storage.write() as tx:
            doc = tx.get(Image.KIND, str(image.id), lock=True)
            current = from_doc(doc) if doc is not None else None
            if current is None or current.status != ImageStatus.BUILDING or current.is_deleted:
                # Cancelled or deleted meanwhile (here or in another process): that record stays
                # as it is, and a tar this build published is not wanted.
                if published and current is not None and current.status != ImageStatus.SUCCESSFUL:
                    remove_tar(self.paths, image.nfs_path)
                log.info("build %s: stopped, its record was %s meanwhile", describe(image),
                         "deleted" if current is None or current.is_deleted else current.status.value)
                return
            if current.claimed_by != run.worker:
                log.warning("build %s: the claim passed to %s; result dropped", image.id, current.claimed_by)
                return
            now = self.clock()
            meta = {**(current.meta or {}), **outcome.meta}
            if outcome.release:
                tx.update(to_doc(claims.released(current, date_updated=now)))
                announce(tx, BUILDS)  # another process's idle worker takes it when this commits
                handed_back = True
            elif outcome.status == ImageStatus.SUCCESSFUL:
                r = outcome.result
                assert r is not None
                meta.pop("error", None)
                final = claims.released(current, status=ImageStatus.SUCCESSFUL, size=int(r.size),
                                        virtual_size=int(r.virtual_size), image_id=str(r.image_id), jobs=outcome.jobs,
                                        manifests=outcome.manifests, meta=meta, built_at=now, date_updated=now)
            else:
                meta["error"] = outcome.error or outcome.status.value
                final = claims.released(current, status=outcome.status, meta=meta, date_updated=now)
            if final is not None:
                tx.update(to_doc(final))
                self.journal.image(tx, "finished", final)
        if handed_back:
            log.info("build %s: handed back to the queue, the %s is stopping", describe(image), self.process)
        if final is not None:
            log.info("build %s: %s", describe(final), outcome_text(final, outcome))
            announce_finished(self.events, final)

    # -- heartbeat ------------------------------------------------------------------------------
    def beat_all(self) -> None:
        """One heartbeat: renew (and check) the claim of every build this process runs."""
        with self._lock:
            runs = list(self.running.values())
        for run in runs:
            try:
                self._beat(run)
            except XpressoError as exc:
                log.warning("heartbeat of build %s: %s", run.image_id, exc.detail)
            except Exception:
                log.exception("heartbeat of build %s", run.image_id)

    def _beat(self, run: RunningBuild) -> None:
        if time.monotonic() > run.deadline + TIMEOUT_GRACE_S:
            run.stop("timeout")
        with self.storage.read() as tx:
            doc = tx.get(Image.KIND, run.image_id)
        image = from_doc(doc) if doc is not None else None
        if self._check(run, image):
            return
        held = claims.claim_of(image)
        if held is not None and not held.due_for_renewal(self._now(), self.builds.lease_s):
            return
        with self.storage.write() as tx:
            doc = tx.get(Image.KIND, run.image_id, lock=True)
            image = from_doc(doc) if doc is not None else None
            if self._check(run, image):
                return
            tx.update(to_doc(claims.renewed(image, self._now(), self.builds.lease_s)))

    @staticmethod
    def _check(run: RunningBuild, image: Optional[Image]) -> bool:
        """Stop the local build if its record says so; True when it was stopped."""
        if image is None or image.status != ImageStatus.BUILDING or image.is_deleted:
            run.stop("cancel")
            return True
        if image.claimed_by != run.worker:
            run.stop("lost")
            return True
        return False
