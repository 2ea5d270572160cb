"""Polaris image builds (CONTRACT section 4): submit, list, retrieve, pin, cancel, delete, logs,
retention. The queue and the workers are in ``queue.py`` (its claim rules in ``claims.py``, one attempt
in ``attempt.py``); the sweep in ``retention.py``.

Visibility: an image is visible in its owning group and in every group of its ``groups``; it
may be listed, retrieved and its log read from any of those groups. It is changed, cancelled or
deleted only through its owning group: from a group it is merely shared with, those requests
get 403 (its existence is no secret there); from a group it is not visible in, 404.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Optional

from ..access.auth import AuthService, Caller
from ..access.reads import Credentials, Reads, Snapshot
from ..config import BuildsSettings, ImagesSettings, PolarisSettings
from ..core import wire
from ..core.codec import from_doc, to_doc
from ..core.errors import Conflict, NotFound, PermissionDenied, QueueFull, ServiceUnavailable, ValidationError
from ..core.models import Group, Image, ImageStatus
from ..core.timeutil import Clock, format_time
from ..core.validation import (
    Boolean,
    FieldError,
    ListQuery,
    Nullable,
    Rule,
    Text,
    page,
    parse_list_query,
    parse_uuid,
    git_ref,
    reject_unknown_params,
    validate_body,
)
from ..journal.journal import Journal
from ..runtime.events import Events
from ..storage import BUILDS, StorageBackend, Tx, announce, filter_docs
from . import idempotency
from .files import ImagePaths, remove_tar
from .log import BuildLogStore
from .queue import BuildQueue, announce_finished
from .retention import Retention, SweepItem, builder_image_unused, owns_tar
from .slot import BuilderSlot

log = logging.getLogger("xpresso_env.images")

FILTERS = {"name": None, "tag": None, "status": ImageStatus, "git_ref": None}
ADD, DELETE = "add_docker_image", "delete_docker_image"
# Every key of the wire record a client might try to set (CONTRACT section 7: a 400 field error).
WIRE_KEYS = frozenset(wire.IMAGE.keys)


# --------------------------------------------------------------------------- field rules

@dataclass(frozen=True)
class GroupList:
    """Further groups to share an image with: null or a list of group names (duplicates dropped)."""

    def __call__(self, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise FieldError("Expected a list of group names.")
        if len(value) > wire.MAX_GROUPS:
            raise FieldError(f"Ensure this field has no more than {wire.MAX_GROUPS} elements.")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or not wire.ACCOUNT_NAME.matches(item):
                raise FieldError(f"Not a valid group name: {str(item)[:100]!r}.")
            if item not in out:
                out.append(item)
        return out

    def schema(self) -> wire.Schema:
        return {"type": ["array", "null"], "maxItems": wire.MAX_GROUPS,
                "items": wire.ACCOUNT_NAME.schema(),
                "description": "further groups the image is visible in; each must exist and the caller "
                               "must be a member"}


SUBMIT_VALIDATORS: dict[str, Rule] = {"name": Text(wire.IMAGE_NAME), "tag": Text(wire.IMAGE_TAG),
                                      "git_ref": git_ref, "base_ref": Nullable(git_ref),
                                      "groups": GroupList()}
SUBMIT_REQUIRED = frozenset({"name", "tag", "git_ref"})
SUBMIT_FIELDS = frozenset(SUBMIT_VALIDATORS)
PATCH_VALIDATORS: dict[str, Rule] = {"pin_version": Boolean()}
PATCH_FIELDS = frozenset(PATCH_VALIDATORS)


# --------------------------------------------------------------------------- the service

@dataclass(frozen=True)
class BuilderStatus:
    """What the health endpoint says about image builds."""

    name: Optional[str]  # the builder in use, None when there is none
    problem: Optional[str]  # why builds cannot start now, None when they can
    skipped: dict[str, str]  # builders ``auto`` passed over, with the reason for each


class ImageService:
    """Submit, list, read, change, cancel and delete images; read and follow their logs.

    :param queue: runs the builds (its loops are started by the app, in a process that builds).
    :param retention: the sweep (its loop likewise; :meth:`sweep` runs it on demand).
    :param journal: webhook outbox entries, in each change's transaction (shared with the queue).
    :param logs: where build logs live (storage), shared with the queue: every process reads them.
    :param cancel_wait_s: how long a cancel waits for a build running here to stop.
    :param follow_poll_s: how often a followed log looks for new bytes.
    """

    def __init__(self, storage: StorageBackend, reads: Reads, images: ImagesSettings, polaris: PolarisSettings,
                 paths: ImagePaths, builders: BuilderSlot, queue: BuildQueue, retention: Retention,
                 events: Events, clock: Clock, new_id: Callable[[], uuid.UUID], builds: BuildsSettings,
                 logs: BuildLogStore, journal: Journal, cancel_wait_s: float = 30.0, follow_poll_s: float = 0.2):
        self.storage = storage
        self._reads = reads  # the read scope of the API's reads
        self.journal = journal
        self.builds = builds
        self.logs = logs
        self.images = images
        self.polaris = polaris
        self.paths = paths
        self.builders = builders
        self.queue = queue
        self.retention = retention
        self.events = events
        self.clock = clock
        self._new_id = new_id
        self._cancel_wait_s = cancel_wait_s
        self._follow_poll_s = follow_poll_s

    # -- life cycle ---------------------------------------------------------------------
    def check_builder(self) -> None:
        """Run by the app before a process starts building: a builder named in the configuration
        that cannot be set up is a start-up error; ``auto`` finding none is a warning (submits
        get 503), and so is a missing ``polaris.repo``."""
        try:
            builder = self.builders.get()
        except ServiceUnavailable as exc:
            log.warning("image builds are refused until a builder is available: %s", exc.detail)
        else:
            log.info("this %s builds images with the %s builder, %d build thread(s)", self.queue.process,
                     builder.name, self.queue.workers.size)
        if not self.polaris.repo:
            log.warning("polaris.repo is not configured: image builds are refused until it is set")

    def builder_status(self) -> BuilderStatus:
        if not self.builds.enabled:
            return BuilderStatus(None, None, {})  # this process does not build: workers do
        name, problem = self.builders.status()
        if problem is None and not self.polaris.repo:
            problem = "polaris.repo is not configured"
        return BuilderStatus(name, problem, self.builders.skipped())

    # -- reads ----------------------------------------------------------------------------
    @staticmethod
    def parse_query(params: Mapping[str, Any]) -> ListQuery:
        return parse_list_query(params, FILTERS)

    # The API's reads, each in the caller's read scope (the query checked after the caller):
    # snapshots of Image records.
    def list(self, credentials: Credentials, params: Mapping[str, Any]) -> Snapshot:
        with self._reads.scope(credentials, Image.KIND) as scope:
            query = self.parse_query(params)
            docs = scope.tx.query(Image.KIND, scope.caller.group, include_deleted=query.include_deleted)
        docs = filter_docs(docs, query.filters) if query.filters else docs
        chosen, total = page(docs, query)
        return scope.snapshot([from_doc(d) for d in chosen], total)

    def get(self, credentials: Credentials, image_id: str, params: Mapping[str, Any]) -> Snapshot:
        with self._reads.scope(credentials, Image.KIND) as scope:
            reject_unknown_params(params)
            image = self._visible(scope.tx, scope.caller, image_id)
        return scope.snapshot(image)

    @staticmethod
    def _visible(tx: Tx, caller: Caller, image_id: str, lock: bool = False) -> Image:
        doc = tx.get(Image.KIND, str(parse_uuid(image_id)), lock=lock)
        if doc is None or (doc.group != caller.group and caller.group not in doc.visible):
            raise NotFound()
        return from_doc(doc)

    def _owned(self, tx: Tx, caller: Caller, image_id: str) -> Image:
        image = self._visible(tx, caller, image_id, lock=True)
        if image.group != caller.group:
            raise PermissionDenied()  # shared here, owned elsewhere: change it through its owner
        return image

    # -- submit ---------------------------------------------------------------------------
    def submit(self, caller: Caller, body: Callable[[], Any], idempotency_key: Optional[str] = None) -> Image:
        """``body`` reads the request's content, after the permission check. With
        ``idempotency_key`` (checked by ``idempotency.check_key``), a repeat of an earlier submit
        of the group answers that submit's image (see ``idempotency.py``)."""
        AuthService.require(caller, ADD)
        raw = body()
        values = validate_body(raw, SUBMIT_VALIDATORS, set(SUBMIT_REQUIRED),
                               set(WIRE_KEYS - SUBMIT_FIELDS) | {"id"}, partial=False)
        # A server that does not build (builds.enabled false) needs no builder of its own: the
        # workers have theirs, and a build without one fails there, saying why.
        # Raised after the Idempotency-Key look-up: the retry of an accepted submit gets its image.
        problem = self.builders.problem() if self.builds.enabled else None
        unavailable = None
        if problem is not None:
            unavailable = f"Image builds are unavailable: {problem}."
        elif not self.polaris.repo and self.builds.enabled:
            unavailable = ("Image builds are unavailable: polaris.repo is not configured "
                           "(set it to the Polaris git repository, a local path or a git URL).")
        if unavailable is not None and idempotency_key is None:
            raise ServiceUnavailable(unavailable)
        name, tag = values["name"], values["tag"]
        nfs_path = self.paths.nfs_path(caller.group, name, tag)
        now = self.clock()
        image = Image(id=self._new_id(), group=caller.group, name=name, tag=tag, git_ref=values["git_ref"],
                      base_ref=values.get("base_ref"), submitter=caller.user.name, nfs_path=str(nfs_path),
                      retention_day=self.images.retention_days, date_created=now, date_updated=now,
                      groups=tuple(g for g in values.get("groups", []) if g != caller.group))
        body_sha256 = idempotency.fingerprint(raw) if idempotency_key is not None else ""
        with self.storage.write() as tx:
            # The group row lock serialises submits per group (PostgreSQL), so two requests for the
            # same name:tag (or with the same Idempotency-Key) cannot both pass the checks below.
            tx.get(Group.KIND, caller.group, lock=True)
            if idempotency_key is not None:
                earlier = idempotency.recall(tx, caller.group, idempotency_key, body_sha256, now)
                if earlier is not None:
                    doc = tx.get(Image.KIND, earlier.image_id)
                    if doc is not None:
                        return from_doc(doc)  # the first request's image, as it is now
            if unavailable is not None:
                raise ServiceUnavailable(unavailable)
            self._check_groups(tx, caller, values.get("groups", []))
            building = 0
            for doc in tx.query(Image.KIND, caller.group, include_deleted=False):
                b = doc.body
                if doc.group != caller.group or b.get("status") != ImageStatus.BUILDING.value:
                    continue
                building += 1
                if b.get("name") == name and b.get("tag") == tag:
                    raise Conflict(f"{name}:{tag} is already building in group {caller.group} (image {doc.id}).")
            limit = self.builds.max_queued_per_group
            if building >= limit:
                raise QueueFull(f"Group {caller.group} already has {building} builds queued or running "
                                f"(builds.max_queued_per_group is {limit}): try again when some have ended.")
            tx.insert(to_doc(image))
            announce(tx, BUILDS)  # idle workers of other processes claim it when this commits
            self.journal.image(tx, "submitted", image)  # webhook outbox, same transaction
            if idempotency_key is not None:
                idempotency.remember(tx, caller.group, idempotency_key, body_sha256, str(image.id), now)
            # The log's first line commits with the image: no worker can write before it.
            self.logs.line_in(tx, str(image.id), image.group,
                              f"queued: {name}:{tag} submitted by {caller.user.name} in group {caller.group}; "
                              f"git_ref {image.git_ref}" + (f", base_ref {image.base_ref}" if image.base_ref else "")
                              + f"; tar {image.nfs_path}")
        self.events.record_saved(Image.KIND, image, created=True)
        self.queue.wake()
        return image

    @staticmethod
    def _check_groups(tx: Tx, caller: Caller, groups: list[str]) -> None:
        errors = []
        for g in groups:
            if tx.get(Group.KIND, g) is None:
                errors.append(f"Group {g!r} does not exist.")
            elif not caller.user.superuser and g not in caller.user.roles:
                errors.append(f"You are not a member of group {g!r}.")
        if errors:
            raise ValidationError({"groups": errors})

    # -- changes --------------------------------------------------------------------------
    def update(self, caller: Caller, image_id: str, body: Callable[[], Any]) -> Image:
        """PATCH: only ``pin_version`` may change. ``body`` as for :meth:`submit`."""
        AuthService.require(caller, ADD)
        key = str(parse_uuid(image_id))
        values = validate_body(body(), PATCH_VALIDATORS, set(PATCH_FIELDS),
                               set(WIRE_KEYS - PATCH_FIELDS) | {"id", "groups"}, partial=False)
        with self.storage.write() as tx:
            image = self._owned(tx, caller, key)
            if image.is_deleted:
                raise Conflict("This image has been deleted: it cannot be changed.")
            image = replace(image, pin_version=values["pin_version"], date_updated=self.clock())
            tx.update(to_doc(image))
        self.events.record_saved(Image.KIND, image, created=False)
        return image

    def cancel(self, caller: Caller, image_id: str, check_query: Callable[[], None] = lambda: None) -> Image:
        """Stop a build: the record says ``cancelled`` at once (so a worker in another process
        stops on its next heartbeat); a build running here is stopped before this returns.
        ``check_query`` refuses what the request carries besides the id, after the permission
        check (CONTRACT section 7 order, as a body is read after it)."""
        AuthService.require(caller, ADD)
        check_query()
        key = str(parse_uuid(image_id))
        with self.storage.write() as tx:
            image = self._owned(tx, caller, key)
            if image.status != ImageStatus.BUILDING:
                raise Conflict(f"This build has already ended ({image.status.value}).")
            image = self._cancelled(image, f"cancelled by {caller.user.name}")
            tx.update(to_doc(image))
            self.journal.image(tx, "finished", image)
        self._after_cancel(image, f"cancelled by {caller.user.name}")
        return image

    def _cancelled(self, image: Image, why: str) -> Image:
        now = self.clock()
        meta = {**(image.meta or {}), "error": why, "cancelled_at": format_time(now)}
        return replace(image, status=ImageStatus.CANCELLED, meta=meta, lease_until=None, date_updated=now)

    def _after_cancel(self, image: Image, why: str) -> None:
        self.logs.line(str(image.id), image.group, why)
        self.queue.stop_local(str(image.id), "cancel", self._cancel_wait_s)
        announce_finished(self.events, image)

    def delete(self, caller: Caller, image_id: str, check_query: Callable[[], None] = lambda: None) -> None:
        """Soft delete: a running build is cancelled first; the tar (when this image's build is
        the one that wrote it) and the builder's image are removed. ``check_query`` as for
        :meth:`cancel`."""
        AuthService.require(caller, DELETE)
        check_query()
        key = str(parse_uuid(image_id))
        was_building = False
        removable_ref = False
        with self.storage.write() as tx:
            image = self._owned(tx, caller, key)
            if image.is_deleted:
                return  # deleting twice changes nothing
            if image.status == ImageStatus.BUILDING:
                was_building = True
                image = self._cancelled(image, f"deleted by {caller.user.name} while building")
            elif image.status == ImageStatus.SUCCESSFUL:
                if owns_tar(tx, image):
                    remove_tar(self.paths, image.nfs_path)
                removable_ref = builder_image_unused(tx, image)
            image = replace(image, is_deleted=True, date_updated=self.clock())
            tx.update(to_doc(image))
            if was_building:  # the build ends here, cancelled
                self.journal.image(tx, "finished", image)
        if was_building:
            self._after_cancel(image, f"deleted by {caller.user.name} while building: cancelled")
        if removable_ref:
            self.builders.remove_image(image.name, image.tag)
        self.events.record_deleted(Image.KIND, image)

    # -- logs -----------------------------------------------------------------------------
    def read_log(self, caller: Caller, image_id: str, offset: int = 0) -> bytes:
        with self.storage.read() as tx:
            image = self._visible(tx, caller, image_id)
        return self.logs.read_from(str(image.id), offset)

    def follow_log(self, caller: Caller, image_id: str, offset: int = 0) -> Iterator[bytes]:
        """The log from ``offset``, then new bytes as they come, until the build ends. The
        visibility check happens now, not when the first chunk is pulled."""
        with self.storage.read() as tx:
            image = self._visible(tx, caller, image_id)
        key = str(image.id)

        def still_running() -> bool:
            if self.queue.is_running_here(key):
                return True
            with self.storage.read() as tx:
                doc = tx.get(Image.KIND, key)
            return doc is not None and doc.body.get("status") == ImageStatus.BUILDING.value

        return self.logs.follow(key, offset, still_running,
                                lambda: self.queue.stopping, poll_s=self._follow_poll_s)

    # -- retention ------------------------------------------------------------------------
    def sweep(self, dry_run: bool = False) -> list[SweepItem]:
        return self.retention.sweep(dry_run)
