"""The build queue: storage holds it, worker threads claim from it, leases keep it honest.

* A submitted build is a stored Image with ``status: building`` and no claim: that is the queue.
  Nothing about it lives only in memory, so every process that shares the storage (several
  ``serve`` processes on one PostgreSQL database, or one restarted after a crash) sees it.
* Each service runs ``builds.max_concurrent`` worker threads. A worker takes the oldest
  claimable build (``date_created`` order) by CLAIMING it in a write transaction: it re-reads
  the record with ``get(lock=True)`` (SQLite's write lock, PostgreSQL's ``SELECT ... FOR
  UPDATE``, the YAML backend's lock), checks it is still claimable, and writes
  ``claimed_by=<worker id>``, ``lease_until=now + builds.lease_s``, ``attempts + 1`` and who
  it is (``worker_meta``: host, boot id, pid namespace, pid). Two workers racing for one build
  serialize on that lock; the loser moves on to the next one.
* Each attempt works in its own folder, ``<workspace_root>/<image id>/<attempt>``, and records
  in its claim the process groups it starts (git, buildah): they run in sessions of their own,
  so a killed server leaves them running, still writing into that attempt's folder.
* A heartbeat thread renews the lease of every build this process runs. It also re-reads each
  record, so a cancel or delete made through ANOTHER process is noticed within a few seconds
  and the local build is stopped.
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
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..config import BuildsSettings, ImagesSettings, PolarisSettings
from ..core.codec import from_doc, to_doc
from ..core.errors import XpressoError
from ..core.models import Image, ImageStatus
from ..core.timeutil import Clock, format_time
from ..journal.journal import Journal
from ..runtime.events import Events
from ..runtime.redact import redact
from ..storage import StorageBackend
from . import workspace
from .files import ImagePaths, attempt_folders, remove_tar, remove_tree
from .log import BuildLog, BuildLogStore
from .push import PushError, PushTargets
from .sdk import procrun
from .sdk.builder import BuildCancelled, BuildFailed, BuildRequest, BuildResult, BuildTimedOut
from .slot import BuilderSlot

log = logging.getLogger("xpresso_env.images")

DEFAULT_MAX_ATTEMPTS = 3
TIMEOUT_GRACE_S = 30.0  # a builder that ignores its own timeout is stopped this much later


def one_line(text: str, limit: int = 500) -> str:
    """The first non-blank line, shortened: what ``meta.error`` holds."""
    for line in str(text).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return "error"


# --------------------------------------------------------------------------- identity


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_identity() -> dict[str, Any]:
    """Enough to tell whether a claim belongs to a dead process on this very machine."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "boot": _read("/proc/sys/kernel/random/boot_id"), "pidns": _pid_namespace()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def announce_finished(events: Events, image: Image) -> None:
    """After a build's final state is committed: the build_finished and record hooks."""
    events.build_finished(image)
    events.record_saved(Image.KIND, image, created=False)


def _lower_priority(niceness: int = 10) -> None:
    """Give this worker thread (and the git/buildah processes it starts) a lower CPU priority than
    the request threads: a build must not slow the API down. Linux nices threads one by one."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


# --------------------------------------------------------------------------- the queue


@dataclass
class RunningBuild:
    image_id: str
    worker: str
    deadline: float  # time.monotonic() after which the build has timed out
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    reason: Optional[str] = None  # why cancel was set: cancel | shutdown | lost | timeout
    groups: list[dict[str, Any]] = field(default_factory=list)  # process groups it started: pgid, start
    log: Optional[BuildLog] = None  # its log while it runs (flushed when a step starts a process)

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.cancel.set()


@dataclass
class Outcome:
    status: ImageStatus
    error: Optional[str] = None
    result: Optional[BuildResult] = None
    jobs: Optional[list[str]] = None
    manifests: Optional[list[str]] = None
    meta: dict[str, Any] = field(default_factory=dict)
    release: bool = False  # give the build back to the queue (graceful stop)


class BuildQueue:
    """The workers and the heartbeat of one service.

    :param clock: record times (``date_updated``, ``built_at``, log stamps).
    :param lease_clock: wall time for leases, shared by every process on the storage.
    :param poll_s: how often idle workers look for builds submitted through other processes.
    :param max_attempts: claims after which an unfinished build fails "interrupted by restart".
    """

    def __init__(self, storage: StorageBackend, builds: BuildsSettings, polaris: PolarisSettings,
                 images: ImagesSettings, paths: ImagePaths, builders: BuilderSlot, events: Events,
                 clock: Clock, lease_clock: Clock, poll_s: float = 1.0, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 logs: Optional[BuildLogStore] = None, push: Optional[PushTargets] = None,
                 journal: Optional[Journal] = None):
        self.storage = storage
        # image.submitted / image.finished webhook events, in the transaction of the change.
        self.journal = journal or Journal(clock)
        self.push = push  # registry.*: where a successful build is pushed (None or url null: nowhere)
        # Build logs live in storage (build_log.py), so every process reads and follows them.
        self.logs = logs or BuildLogStore(storage, paths.logs_root, clock)
        self.builds = builds
        self.polaris = polaris
        self.images = images
        self.paths = paths
        self.builders = builders
        self.events = events
        self.clock = clock
        self.lease_clock = lease_clock
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.identity = process_identity()
        self.service_id = f"{self.identity['host']}:{self.identity['pid']}:{uuid.uuid4().hex[:8]}"
        self.lease = timedelta(seconds=builds.lease_s)
        self.running: dict[str, RunningBuild] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        for n in range(self.builds.max_concurrent):
            worker = f"{self.service_id}/w{n}"
            self._spawn(f"xpresso-build-{n}", lambda w=worker: self._worker_loop(w))
        self._spawn("xpresso-build-heartbeat", self._heartbeat_loop)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the workers; interrupted builds go back to the queue for the next process."""
        self._stopping.set()
        with self._lock:
            for run in self.running.values():
                run.stop("shutdown")
        self.wake()
        end = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.1, end - time.monotonic()))
        self._threads = []

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

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
    def _claimable(self, image: Image, now: datetime) -> bool:
        if image.status != ImageStatus.BUILDING or image.is_deleted:
            return False
        if image.claimed_by is None or image.lease_until is None or image.lease_until <= now:
            return True
        return self._owner_dead(image)

    def _on_this_machine(self, owner: Mapping[str, Any]) -> bool:
        """True when a claim's owner (its ``worker_meta``) ran on this machine since its boot, in
        this pid namespace: its pids and process groups are ours to look at."""
        return bool(owner.get("boot")) and all(owner.get(k) == self.identity[k] for k in ("host", "boot", "pidns"))

    def _owner_dead(self, image: Image) -> bool:
        """True when the claim's owner is a process of this machine that no longer exists."""
        owner = image.worker_meta or {}
        if not self._on_this_machine(owner):
            return False
        pid = owner.get("pid")
        return isinstance(pid, int) and pid != self.identity["pid"] and not _pid_alive(pid)

    def claim_next(self, worker: str) -> Optional[Image]:
        now = self.lease_clock()
        with self.storage.read() as tx:
            docs = tx.query(Image.KIND, include_deleted=False)
        with self._lock:
            here = set(self.running)
        candidates = [d for d in docs if d.body.get("status") == ImageStatus.BUILDING.value and d.id not in here]
        for candidate in candidates:
            if not self._claimable(from_doc(candidate), now):
                continue
            finished: Optional[Image] = None
            claimed: Optional[Image] = None
            with self.storage.write() as tx:
                doc = tx.get(Image.KIND, candidate.id, lock=True)
                if doc is None:
                    continue
                image = from_doc(doc)
                now = self.lease_clock()
                if not self._claimable(image, now):
                    continue
                previous = image
                if image.attempts >= self.max_attempts:
                    error = f"interrupted by restart ({image.attempts} attempts did not finish)"
                    finished = replace(image, status=ImageStatus.FAILED, claimed_by=None, lease_until=None,
                                       meta={**(image.meta or {}), "error": error}, date_updated=self.clock())
                    tx.update(to_doc(finished))
                    self.journal.image(tx, "finished", finished)
                    # in the same commit: whoever sees `failed` also finds the reason in the log
                    self.logs.line_in(tx, str(finished.id), finished.group, f"failed: {error}")
                else:
                    worker_meta = {"worker_id": worker, **self.identity, "claimed_at": format_time(now)}
                    claimed = replace(image, claimed_by=worker, lease_until=now + self.lease,
                                      attempts=image.attempts + 1, worker_meta=worker_meta,
                                      date_updated=self.clock())
                    tx.update(to_doc(claimed))
            if finished is not None:
                self._end_previous(finished, previous)
                remove_tree(self.paths.workspace(finished.id), self.paths.workspace_root)
                announce_finished(self.events, finished)
                continue
            if claimed is not None:
                if previous.claimed_by is not None:
                    self._log(claimed, f"worker {previous.claimed_by} stopped renewing its claim "
                                       f"(lease until {format_time(previous.lease_until) if previous.lease_until else '-'}): "
                                       f"taking the build over")
                self._end_previous(claimed, previous)
                return claimed
        return None

    def _end_previous(self, image: Image, previous: Image) -> None:
        """Before a new attempt (or the final failure): kill the process groups an earlier
        attempt of this machine left running (a killed server's git and buildah go on in sessions
        of their own) and remove the earlier attempts' folders. An attempt of another machine is
        stopped by its own heartbeat, or died with its machine; it works in a folder of its own,
        which the retention sweep removes."""
        owner = previous.worker_meta or {}
        if not self._on_this_machine(owner):
            return
        for group in owner.get("groups") or ():
            pgid = group.get("pgid") if isinstance(group, dict) else None
            # Never our own group, init's or "every process" (0, -1): only a recorded build step's.
            if type(pgid) is not int or pgid <= 1 or pgid == os.getpgrp():
                continue
            if procrun.end_group(pgid, group.get("start")):
                self._log(image, f"killed process group {pgid}, left running by attempt {previous.attempts}")
        for attempt, folder in attempt_folders(self.paths.workspace(image.id)):
            if attempt < image.attempts:
                remove_tree(folder, self.paths.workspace_root)

    def _started(self, run: RunningBuild, pid: int) -> None:
        """Record a process group the build just started in its claim, with the groups it
        started before that still run (see :meth:`_end_previous`)."""
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
    def _worker_loop(self, worker: str) -> None:
        _lower_priority()
        while not self._stopping.is_set():
            try:
                image = self.claim_next(worker)
            except XpressoError as exc:
                log.warning("build queue: %s", exc.detail)
                image = None
            except Exception:
                log.exception("build queue: unexpected error while claiming")
                image = None
            if image is None:
                with self._wake:
                    if not self._stopping.is_set():
                        self._wake.wait(self.poll_s)
                continue
            try:
                self._run(image, worker)
            except Exception:  # the worker must survive anything a build does
                log.exception("build %s: unexpected error", image.id)

    def _run(self, image: Image, worker: str) -> None:
        timeout_s = self.builds.timeout_s
        run = RunningBuild(image_id=str(image.id), worker=worker, deadline=time.monotonic() + timeout_s)
        with self._lock:
            self.running[run.image_id] = run
        if self._stopping.is_set():
            run.stop("shutdown")
        started = self.clock()
        t0 = time.monotonic()
        ws = self.paths.workspace(image.id, image.attempts)
        try:
            with self.logs.writer(str(image.id), image.group) as blog:
                run.log = blog
                blog(f"attempt {image.attempts} of {self.max_attempts}: worker {worker} "
                     f"(host {self.identity['host']}, pid {self.identity['pid']})")
                outcome = self._build(image, run, blog, ws, t0)
                elapsed = time.monotonic() - t0
                outcome.meta.setdefault("timings", {})["total_s"] = round(elapsed, 3)
                outcome.meta.update({"started_at": format_time(started), "finished_at": format_time(self.clock()),
                                     "attempt": image.attempts})
                blog(self._summary(image, outcome))
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

    @staticmethod
    def _summary(image: Image, outcome: Outcome) -> str:
        if outcome.release:
            return "interrupted: the server is stopping; the build goes back to the queue"
        if outcome.status == ImageStatus.SUCCESSFUL:
            r = outcome.result
            text = f"successful: {image.name}:{image.tag} image_id {r.image_id}, tar {image.nfs_path} ({r.size} bytes)"
            if r.push_url:
                text += f", pushed {r.push_url}"
            if outcome.meta.get("dry_run"):
                text += "; dry-run: no image was built, the tar holds the build context"
            return text
        if outcome.status == ImageStatus.CANCELLED:
            return "cancelled: the build was stopped"
        return f"failed: {outcome.error}"

    def _build(self, image: Image, run: RunningBuild, blog: BuildLog, ws: Path, t0: float) -> Outcome:
        meta: dict[str, Any] = {"git_ref": image.git_ref, "base_ref": image.base_ref}
        timings: dict[str, float] = {}
        meta["timings"] = timings
        try:
            try:
                builder = self.builders.get()
            except XpressoError as exc:
                raise BuildFailed(f"no image builder: {exc.detail}") from None
            dry_run = builder.name == "dry-run"
            meta.update({"builder": builder.name, "dry_run": dry_run})
            blog(f"builder: {builder.name}")
            if dry_run:
                blog("dry-run builder: checkout, merge and discovery run for real; no image will be "
                     "built, the tar will hold the build context")
            repo = self.polaris.repo
            if not repo:
                raise BuildFailed("polaris.repo is not configured")
            blog(f"repository {redact(repo)}; git_ref {image.git_ref}"
                 + (f"; base_ref {image.base_ref} (3-way merge)" if image.base_ref else ""))
            started = functools.partial(self._started, run)
            # A builder that streams its context gets the git tree instead of a checkout when
            # nothing is merged (workspace.GitTree): no 50 MB written and read back.
            stream = self.polaris.dockerfile if getattr(builder, "streams_context", False) else None
            wsr = workspace.prepare(repo, image.git_ref, image.base_ref, ws, blog, run.cancel,
                                    self._remaining(run), on_start=started, stream_dockerfile=stream)
            meta.update(wsr.as_meta())
            timings["workspace_s"] = round(time.monotonic() - t0, 3)
            blog(f"commit {wsr.commit} ({image.git_ref})"
                 + (f"; base {wsr.base_commit} ({image.base_ref}); merge: {wsr.merge}"
                    + (f" -> {wsr.merged_commit}" if wsr.merged_commit else "") if image.base_ref else ""))
            dockerfile = self.polaris.dockerfile
            if wsr.tree is None:
                # The build context is the tree at the resolved commit, without the repository's
                # history: images do not carry .git, and the context is not sent twice its size.
                remove_tree(ws / ".git", self.paths.workspace_root)
                target = (ws / dockerfile)
                if not target.is_file() or not str(target.resolve()).startswith(str(ws.resolve()) + os.sep):
                    raise BuildFailed(f"{dockerfile} not found in the repository at {wsr.head[:12]}")
            out = Path(image.nfs_path)
            if not self.paths.in_nfs_root(out):
                raise BuildFailed("nfs_path lies outside images.nfs_root")
            out.parent.mkdir(parents=True, exist_ok=True)
            # Known before building: a namespace this group cannot use fails the build at once.
            try:
                target = self.push.target(image.group, image.name, image.tag) if self.push else None
            except PushError as exc:
                raise BuildFailed(str(exc)) from None
            blog(f"building {image.name}:{image.tag} from {dockerfile} with {builder.name}"
                 + (f"; then pushing to {target.ref}" if target else ""))
            b0 = time.monotonic()
            result = builder.build(BuildRequest(context_dir=ws, dockerfile=dockerfile,
                                                image_ref=f"{image.name}:{image.tag}", output_tar=out,
                                                log=blog, cancel=run.cancel, timeout_s=self._remaining(run),
                                                started=started, push=target, git_tree=wsr.tree))
            timings["build_s"] = round(time.monotonic() - b0, 3)
            if result.push_url:  # the record's push_url (api/serialize.py reads it from meta)
                meta["push_url"] = result.push_url
            if run.cancel.is_set():
                # Cancelled right as the builder finished: what it published is not wanted.
                raise BuildCancelled("cancelled")
            lister = wsr.tree.discover if wsr.tree is not None else functools.partial(workspace.discover, ws)
            jobs, manifests = lister(self.images.jobs_glob, self.images.manifests_glob)
            blog(f"found {len(jobs)} job file(s) ({self.images.jobs_glob}) and "
                 f"{len(manifests)} manifest(s) ({self.images.manifests_glob})")
            meta.update({k: v for k, v in (result.meta or {}).items() if k not in meta})
            if result.meta and result.meta.get("dry_run"):
                meta["dry_run"] = True
            return Outcome(ImageStatus.SUCCESSFUL, result=result, jobs=jobs, manifests=manifests, meta=meta)
        except BuildCancelled:
            if run.reason == "timeout":
                return Outcome(ImageStatus.FAILED, self._timeout_error(), meta=meta)
            if run.reason == "shutdown":
                return Outcome(ImageStatus.BUILDING, meta=meta, release=True)
            return Outcome(ImageStatus.CANCELLED, "cancelled", meta=meta)
        except BuildTimedOut:
            return Outcome(ImageStatus.FAILED, self._timeout_error(), meta=meta)
        except BuildFailed as exc:
            return Outcome(ImageStatus.FAILED, one_line(str(exc)), meta=meta)
        except XpressoError as exc:
            return Outcome(ImageStatus.FAILED, one_line(exc.detail), meta=meta)
        except OSError as exc:
            return Outcome(ImageStatus.FAILED, one_line(f"{exc.strerror or exc}: {exc.filename or ''}"), meta=meta)
        except Exception as exc:  # a plugin bug fails the build; it never kills the worker
            log.exception("build %s: unexpected error", image.id)
            return Outcome(ImageStatus.FAILED, one_line(f"internal error: {type(exc).__name__}: {exc}"), meta=meta)

    def _timeout_error(self) -> str:
        return f"timed out after {self.builds.timeout_s:g} s"

    @staticmethod
    def _remaining(run: RunningBuild) -> float:
        left = run.deadline - time.monotonic()
        if left <= 0:
            raise BuildTimedOut("timed out")
        return left

    def _finish(self, image: Image, run: RunningBuild, outcome: Outcome) -> None:
        published = outcome.status == ImageStatus.SUCCESSFUL
        final: Optional[Image] = None
        with self.storage.write() as tx:
            doc = tx.get(Image.KIND, str(image.id), lock=True)
            current = from_doc(doc) if doc is not None else None
            if current is None or current.status != ImageStatus.BUILDING or current.is_deleted:
                # Cancelled or deleted meanwhile (here or in another process): that record stays
                # as it is, and a tar this build published is not wanted.
                if published and current is not None and current.status != ImageStatus.SUCCESSFUL:
                    remove_tar(self.paths, image.nfs_path)
                return
            if current.claimed_by != run.worker:
                log.warning("build %s: the claim passed to %s; result dropped", image.id, current.claimed_by)
                return
            now = self.clock()
            meta = {**(current.meta or {}), **outcome.meta}
            if outcome.release:
                final_release = replace(current, claimed_by=None, lease_until=None, date_updated=now)
                tx.update(to_doc(final_release))
                return
            if outcome.status == ImageStatus.SUCCESSFUL:
                r = outcome.result
                meta.pop("error", None)
                final = replace(current, status=ImageStatus.SUCCESSFUL, size=int(r.size),
                                virtual_size=int(r.virtual_size), image_id=str(r.image_id), jobs=outcome.jobs,
                                manifests=outcome.manifests, meta=meta, built_at=now, date_updated=now,
                                claimed_by=None, lease_until=None)
            else:
                meta["error"] = outcome.error or outcome.status.value
                final = replace(current, status=outcome.status, meta=meta, date_updated=now,
                                claimed_by=None, lease_until=None)
            tx.update(to_doc(final))
            self.journal.image(tx, "finished", final)
        if final is not None:
            announce_finished(self.events, final)

    # -- heartbeat ------------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        lease_s = self.builds.lease_s
        tick = max(0.2, min(2.0, lease_s / 3))
        while not self._stopping.wait(tick):
            with self._lock:
                runs = list(self.running.values())
            for run in runs:
                try:
                    self._beat(run, lease_s)
                except XpressoError as exc:
                    log.warning("heartbeat of build %s: %s", run.image_id, exc.detail)
                except Exception:
                    log.exception("heartbeat of build %s", run.image_id)

    def _beat(self, run: RunningBuild, lease_s: float) -> None:
        if time.monotonic() > run.deadline + TIMEOUT_GRACE_S:
            run.stop("timeout")
        with self.storage.read() as tx:
            doc = tx.get(Image.KIND, run.image_id)
        image = from_doc(doc) if doc is not None else None
        if self._check(run, image):
            return
        now = self.lease_clock()
        # Renew once a third of the lease is used, so two missed beats still leave time.
        if image.lease_until is not None and (image.lease_until - now).total_seconds() > lease_s * 2 / 3:
            return
        with self.storage.write() as tx:
            doc = tx.get(Image.KIND, run.image_id, lock=True)
            image = from_doc(doc) if doc is not None else None
            if self._check(run, image):
                return
            tx.update(to_doc(replace(image, lease_until=self.lease_clock() + self.lease)))

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
