"""One attempt of a claimed build, from the workspace to the outcome, without touching its record.

The queue (``queue.py``) claims a build, gives it a :class:`RunningBuild` (how it is stopped) and
a log, and asks :meth:`BuildRunner.build` for the :class:`Outcome`: the workspace is prepared
(checkout or git tree, the 3-way merge), the builder builds (and pushes), job files and manifests
are discovered. Every failure becomes an outcome with a one-line reason; nothing here raises to
the worker. The queue writes the outcome in the record, in its own transaction.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import BuildsSettings, ImagesSettings, PolarisSettings
from ..core.errors import XpressoError
from ..core.models import Image, ImageStatus
from ..runtime.redact import redact
from . import workspace
from .files import ImagePaths, remove_tree
from .log import BuildLog
from .push import PushError, PushTargets
from .sdk.builder import BuildCancelled, BuildFailed, BuildRequest, BuildResult, BuildTimedOut
from .slot import BuilderSlot

log = logging.getLogger("xpresso_env.images")

TIMEOUT_GRACE_S = 30.0  # a builder that ignores its own timeout is stopped this much later


def one_line(text: str, limit: int = 500) -> str:
    """The first non-blank line, shortened: what ``meta.error`` holds."""
    for line in str(text).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return "error"


def lower_priority(niceness: int = 10) -> None:
    """Give this worker thread (and the git/buildah processes it starts) a lower CPU priority than
    the request threads: a build must not slow the API down. Linux nices threads one by one."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


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

    def remaining(self) -> float:
        """Seconds left before the build's timeout; :raises BuildTimedOut: none."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BuildTimedOut("timed out")
        return left


@dataclass
class Outcome:
    status: ImageStatus
    error: Optional[str] = None
    result: Optional[BuildResult] = None
    jobs: Optional[list[str]] = None
    manifests: Optional[list[str]] = None
    meta: dict[str, Any] = field(default_factory=dict)
    release: bool = False  # give the build back to the queue (graceful stop)


def summary(image: Image, outcome: Outcome, process: str) -> str:
    """The last line of an attempt's log; ``process``: what the process that ran it is called
    ("server", "worker")."""
    if outcome.release:
        return f"interrupted: the {process} is stopping; the build goes back to the queue"
    if outcome.status == ImageStatus.SUCCESSFUL:
        r = outcome.result
        assert r is not None
        text = f"successful: {image.name}:{image.tag} image_id {r.image_id}, tar {image.nfs_path} ({r.size} bytes)"
        if r.push_url:
            text += f", pushed {r.push_url}"
        if outcome.meta.get("dry_run"):
            text += "; dry-run: no image was built, the tar holds the build context"
        return text
    if outcome.status == ImageStatus.CANCELLED:
        return "cancelled: the build was stopped"
    return f"failed: {outcome.error}"


class BuildRunner:
    """Runs one attempt of a build to its :class:`Outcome` (see the module docstring).

    :param push: where a successful build is pushed (``registry.*``; url null: nowhere).
    """

    def __init__(self, builds: BuildsSettings, polaris: PolarisSettings, images: ImagesSettings,
                 paths: ImagePaths, builders: BuilderSlot, push: PushTargets):
        self.builds = builds
        self.polaris = polaris
        self.images = images
        self.paths = paths
        self.builders = builders
        self.push = push

    def timeout_error(self) -> str:
        return f"timed out after {self.builds.timeout_s:g} s"

    def build(self, image: Image, run: RunningBuild, blog: BuildLog, ws: Path, t0: float,
              started: Callable[[int], None]) -> Outcome:
        """:param started: called with the pid of each process group a step starts (the queue
        records it in the claim, so a take-over after a crash can stop it)."""
        meta: dict[str, Any] = {"git_ref": image.git_ref, "base_ref": image.base_ref}
        try:
            return self._build(image, run, blog, ws, t0, started, meta)
        except BuildCancelled:
            if run.reason == "timeout":
                return Outcome(ImageStatus.FAILED, self.timeout_error(), meta=meta)
            if run.reason == "shutdown":
                return Outcome(ImageStatus.BUILDING, meta=meta, release=True)
            return Outcome(ImageStatus.CANCELLED, "cancelled", meta=meta)
        except BuildTimedOut:
            return Outcome(ImageStatus.FAILED, self.timeout_error(), meta=meta)
        except BuildFailed as exc:
            return Outcome(ImageStatus.FAILED, one_line(str(exc)), meta=meta)
        except XpressoError as exc:
            return Outcome(ImageStatus.FAILED, one_line(exc.detail), meta=meta)
        except OSError as exc:
            return Outcome(ImageStatus.FAILED, one_line(f"{exc.strerror or exc}: {exc.filename or ''}"), meta=meta)
        except Exception as exc:  # a plugin bug fails the build; it never kills the worker
            log.exception("build %s: unexpected error", image.id)
            return Outcome(ImageStatus.FAILED, one_line(f"internal error: {type(exc).__name__}: {exc}"), meta=meta)

    def _build(self, image: Image, run: RunningBuild, blog: BuildLog, ws: Path, t0: float,
               started: Callable[[int], None], meta: dict[str, Any]) -> Outcome:
        timings: dict[str, float] = {}
        meta["timings"] = timings
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
        # A builder that streams its context gets the git tree instead of a checkout when
        # nothing is merged (workspace.GitTree): no 50 MB written and read back.
        stream = self.polaris.dockerfile if builder.streams_context else None
        wsr = workspace.prepare(repo, image.git_ref, image.base_ref, ws, blog, run.cancel,
                                run.remaining(), on_start=started, stream_dockerfile=stream)
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
            push_to = self.push.target(image.group, image.name, image.tag)
        except PushError as exc:
            raise BuildFailed(str(exc)) from None
        blog(f"building {image.name}:{image.tag} from {dockerfile} with {builder.name}"
             + (f"; then pushing to {push_to.ref}" if push_to else ""))
        b0 = time.monotonic()
        result = builder.build(BuildRequest(context_dir=ws, dockerfile=dockerfile,
                                            image_ref=f"{image.name}:{image.tag}", output_tar=out,
                                            log=blog, cancel=run.cancel, timeout_s=run.remaining(),
                                            started=started, push=push_to, git_tree=wsr.tree))
        timings["build_s"] = round(time.monotonic() - b0, 3)
        if result.push_url:  # the record's push_url (core/render.py reads it from meta)
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
