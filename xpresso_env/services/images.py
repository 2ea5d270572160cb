"""Polaris image builds (CONTRACT section 4): submit, list, retrieve, pin, cancel, delete, logs,
retention. The queue and the workers are in ``build_queue.py``; the sweep in ``retention.py``.

Visibility: an image is visible in its owning group and in every group of its ``groups``; it
may be listed, retrieved and its log read from any of those groups. It is changed, cancelled or
deleted only through its owning group: from a group it is merely shared with, those requests
get 403 (its existence is no secret there); from a group it is not visible in, 404.
"""
from __future__ import annotations

import logging
import re
import threading
import uuid
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping, Optional

from ..builders import Builder
from ..codec import from_doc, to_doc
from ..errors import Conflict, NotFound, PermissionDenied, ServiceUnavailable, ValidationError
from ..models import Group, Image, ImageStatus
from ..storage import Tx, filter_docs
from ..timeutil import Clock, format_time, utcnow
from . import build_log, retention
from .auth import NAME_RE, AuthService, Caller
from .build_queue import DEFAULT_MAX_ATTEMPTS, BuildQueue
from .builder_slot import BuilderSlot
from .image_files import ImagePaths, remove_tar
from .validation import (FieldError, ListQuery, boolean, page, parse_list_query, parse_uuid, validate_body)
from .workspace import validate_ref

log = logging.getLogger("xpresso_env.images")

# Docker's reference grammar (distribution/reference): path components of lower-case letters and
# digits joined by '.', '_', '__' or dashes, separated by '/'. No registry host: the image is
# built locally. Neither '..' nor a leading '/' can match, so no path can leave nfs_root.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME_RE_DOCKER = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
NAME_MAX = 255
MAX_GROUPS = 100

FILTERS = {"name": None, "tag": None, "status": ImageStatus, "git_ref": None}
ADD, DELETE = "add_docker_image", "delete_docker_image"
# Every key of the wire record a client might try to set (CONTRACT section 7: a 400 field error).
WIRE_KEYS = frozenset({
    "credentials", "uuid", "name", "tag", "data", "status", "group", "git_ref", "date_created", "date_updated",
    "container_details", "yaml_content", "worker_meta", "size", "virtual_size", "image_id", "jobs", "manifests",
    "push_url", "pin_version", "is_nfs_storage", "nfs_path", "is_deleted", "is_polaris_image", "base_ref", "meta",
    "type", "custom"})
SUBMIT_FIELDS = frozenset({"name", "tag", "git_ref", "base_ref", "groups"})
PATCH_FIELDS = frozenset({"pin_version"})


# --------------------------------------------------------------------------- field validators

def _docker_name(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("Not a valid string.")
    if len(value) > NAME_MAX or not NAME_RE_DOCKER.fullmatch(value):
        raise FieldError("Enter a valid Docker repository name: lower-case letters and digits, separated by "
                         "'.', '_', '__', '-' or '/' (at most 255 characters).")
    return value


def _docker_tag(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("Not a valid string.")
    if not TAG_RE.fullmatch(value):
        raise FieldError("Enter a valid Docker tag: up to 128 letters, digits, '_', '.' and '-', "
                         "not starting with '.' or '-'.")
    return value


def _ref(field: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        try:
            return validate_ref(field, value)
        except ValidationError as exc:
            raise FieldError(" ".join(exc.fields.get(field) or [exc.detail])) from None
    return check


def _optional_ref(field: str) -> Callable[[Any], Optional[str]]:
    inner = _ref(field)
    return lambda value: None if value is None else inner(value)


def _group_list(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldError("Expected a list of group names.")
    if len(value) > MAX_GROUPS:
        raise FieldError(f"Ensure this field has no more than {MAX_GROUPS} elements.")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not NAME_RE.fullmatch(item):
            raise FieldError(f"Not a valid group name: {str(item)[:100]!r}.")
        if item not in out:
            out.append(item)
    return out


SUBMIT_VALIDATORS = {"name": _docker_name, "tag": _docker_tag, "git_ref": _ref("git_ref"),
                     "base_ref": _optional_ref("base_ref"), "groups": _group_list}
PATCH_VALIDATORS = {"pin_version": boolean}


def image_data(image: Image) -> str:
    """The ``data`` string: a Python literal dict, as XPRESSO writes it (``ast.literal_eval``
    reads it back). No secret is in it."""
    data: dict[str, Any] = {"name": image.name, "tag": image.tag, "group": image.group, "git_ref": image.git_ref}
    if image.base_ref is not None:
        data["base_ref"] = image.base_ref
    data.update({"retention_day": image.retention_day, "submitter": image.submitter,
                 "is_nfs_storage": image.is_nfs_storage, "nfs_path": image.nfs_path, "is_polaris_image": True})
    return repr(data)


# --------------------------------------------------------------------------- the service

class ImageService:
    def __init__(self, ctx: Any, new_id: Callable[[], uuid.UUID], builders: BuilderSlot, clock: Clock,
                 lease_clock: Clock, poll_s: float = 1.0, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 cancel_wait_s: float = 30.0, follow_poll_s: float = 0.2):
        self.ctx = ctx
        self.settings = ctx.settings
        self.storage = ctx.storage
        self.clock = clock
        self.paths = ImagePaths.from_settings(ctx.settings)
        self.builders = builders
        self._new_id = new_id
        self._cancel_wait_s = cancel_wait_s
        self._follow_poll_s = follow_poll_s
        self.queue = BuildQueue(ctx, self.paths, builders, clock, lease_clock, self._finished,
                                poll_s=poll_s, max_attempts=max_attempts)
        self._sweeper: Optional[threading.Thread] = None
        self._stop_sweeper = threading.Event()
        self._started = False

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers and the retention sweeper. A builder named in the configuration that
        cannot be set up is a start-up error; ``auto`` finding none is a warning (submits get 503)."""
        if self._started:
            return
        try:
            self.builders.get()
        except ServiceUnavailable as exc:
            log.warning("image builds are refused until a builder is available: %s", exc.detail)
        if not self.settings.polaris.repo:
            log.warning("polaris.repo is not configured: image builds are refused until it is set")
        self._started = True
        self.queue.start()
        self._stop_sweeper.clear()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="xpresso-retention", daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self._stop_sweeper.set()
        self.queue.stop()
        if self._sweeper is not None:
            self._sweeper.join(10)
            self._sweeper = None

    def builder_status(self) -> tuple[Optional[str], Optional[str]]:
        """(builder name or None, why builds cannot start now or None) for the health endpoint."""
        name, problem = self.builders.status()
        if problem is None and not self.settings.polaris.repo:
            problem = "polaris.repo is not configured"
        return name, problem

    # -- hooks ----------------------------------------------------------------------------
    def _finished(self, image: Image) -> None:
        """After a build's final state is committed: the build_finished and record hooks."""
        try:
            self.ctx.pm.hook.xpresso_build_finished(ctx=self.ctx, image=image)
        except Exception:
            log.exception("plugin hook xpresso_build_finished failed")
        self._notify("saved", image, created=False)

    def _notify(self, event: str, image: Image, **kwargs: Any) -> None:
        notify = getattr(self.ctx, "notify", None)
        if notify is not None:
            notify(event, Image.KIND, image, **kwargs)

    # -- reads ----------------------------------------------------------------------------
    @staticmethod
    def parse_query(params: Mapping[str, Any]) -> ListQuery:
        return parse_list_query(params, FILTERS)

    def list(self, tx: Tx, caller: Caller, query: ListQuery) -> tuple[list[Image], int]:
        docs = tx.query(Image.KIND, caller.group, include_deleted=query.include_deleted)
        docs = filter_docs(docs, query.filters) if query.filters else docs
        chosen, total = page(docs, query)
        return [from_doc(d) for d in chosen], total

    def get(self, tx: Tx, caller: Caller, image_id: str) -> Image:
        return self._visible(tx, caller, image_id)

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
    def submit(self, caller: Caller, body: Any) -> Image:
        AuthService.require(caller, ADD)
        values = validate_body(body, SUBMIT_VALIDATORS, {"name", "tag", "git_ref"},
                               set(WIRE_KEYS - SUBMIT_FIELDS) | {"id"}, partial=False)
        problem = self.builders.problem()
        if problem is not None:
            raise ServiceUnavailable(f"Image builds are unavailable: {problem}.")
        if not self.settings.polaris.repo:
            raise ServiceUnavailable("Image builds are unavailable: polaris.repo is not configured "
                                     "(set it to the Polaris git repository, a local path or a git URL).")
        name, tag = values["name"], values["tag"]
        nfs_path = self.paths.nfs_path(caller.group, name, tag)
        now = self.clock()
        image = Image(id=self._new_id(), group=caller.group, name=name, tag=tag, git_ref=values["git_ref"],
                      base_ref=values.get("base_ref"), submitter=caller.user.name, nfs_path=str(nfs_path),
                      retention_day=self.settings.images.retention_days, date_created=now, date_updated=now,
                      groups=tuple(g for g in values.get("groups", []) if g != caller.group))
        image = replace(image, log_path=str(self.paths.log_path(image.id)))
        with self.storage.write() as tx:
            # The group row lock serialises submits per group (PostgreSQL), so two requests for the
            # same name:tag cannot both pass the "already building" check.
            tx.get(Group.KIND, caller.group, lock=True)
            self._check_groups(tx, caller, values.get("groups", []))
            for doc in tx.query(Image.KIND, caller.group, include_deleted=False):
                b = doc.body
                if (doc.group == caller.group and b.get("name") == name and b.get("tag") == tag
                        and b.get("status") == ImageStatus.BUILDING.value):
                    raise Conflict(f"{name}:{tag} is already building in group {caller.group} (image {doc.id}).")
            tx.insert(to_doc(image))
        build_log.append_line(self.paths.log_path(image.id), self.clock,
                              f"queued: {name}:{tag} submitted by {caller.user.name} in group {caller.group}; "
                              f"git_ref {image.git_ref}" + (f", base_ref {image.base_ref}" if image.base_ref else "")
                              + f"; tar {image.nfs_path}")
        self._notify("saved", image, created=True)
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
    def update(self, caller: Caller, image_id: str, body: Any) -> Image:
        """PATCH: only ``pin_version`` may change."""
        AuthService.require(caller, ADD)
        key = str(parse_uuid(image_id))
        values = validate_body(body, PATCH_VALIDATORS, set(PATCH_FIELDS),
                               set(WIRE_KEYS - PATCH_FIELDS) | {"id", "groups"}, partial=False)
        with self.storage.write() as tx:
            image = self._owned(tx, caller, key)
            image = replace(image, pin_version=values["pin_version"], date_updated=self.clock())
            tx.update(to_doc(image))
        self._notify("saved", image, created=False)
        return image

    def cancel(self, caller: Caller, image_id: str) -> Image:
        """Stop a build: the record says ``cancelled`` at once (so a worker in another process
        stops on its next heartbeat); a build running here is stopped before this returns."""
        AuthService.require(caller, ADD)
        key = str(parse_uuid(image_id))
        with self.storage.write() as tx:
            image = self._owned(tx, caller, key)
            if image.status != ImageStatus.BUILDING:
                raise Conflict(f"This build has already ended ({image.status.value}).")
            image = self._cancelled(image, f"cancelled by {caller.user.name}")
            tx.update(to_doc(image))
        self._after_cancel(image, f"cancelled by {caller.user.name}")
        return image

    def _cancelled(self, image: Image, why: str) -> Image:
        now = self.clock()
        meta = {**(image.meta or {}), "error": why, "cancelled_at": format_time(now)}
        return replace(image, status=ImageStatus.CANCELLED, meta=meta, lease_until=None, date_updated=now)

    def _after_cancel(self, image: Image, why: str) -> None:
        build_log.append_line(self.paths.log_path(image.id), self.clock, why)
        self.queue.stop_local(str(image.id), "cancel", self._cancel_wait_s)
        self._finished(image)

    def delete(self, caller: Caller, image_id: str) -> None:
        """Soft delete: a running build is cancelled first; the tar (when this image's build is
        the one that wrote it) and the builder's image are removed."""
        AuthService.require(caller, DELETE)
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
                if retention.owns_tar(tx, image):
                    remove_tar(self.paths, image.nfs_path)
                removable_ref = retention.builder_image_unused(tx, image)
            image = replace(image, is_deleted=True, date_updated=self.clock())
            tx.update(to_doc(image))
        if was_building:
            self._after_cancel(image, f"deleted by {caller.user.name} while building: cancelled")
        if removable_ref:
            self._remove_builder_image(image)
        self._notify("deleted", image)

    def _remove_builder_image(self, image: Image) -> None:
        try:
            builder: Builder = self.builders.get()
            builder.remove_image(f"{image.name}:{image.tag}")
        except Exception as exc:  # the record is deleted either way; the leftover is logged
            log.warning("could not remove the builder's image %s:%s: %s", image.name, image.tag, exc)

    # -- logs -----------------------------------------------------------------------------
    def read_log(self, caller: Caller, image_id: str, offset: int = 0) -> bytes:
        with self.storage.read() as tx:
            image = self._visible(tx, caller, image_id)
        return build_log.read_from(self.paths.log_path(image.id), offset)

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

        return build_log.follow(self.paths.log_path(image.id), offset, still_running,
                                lambda: self.queue.stopping, poll_s=self._follow_poll_s)

    # -- retention ------------------------------------------------------------------------
    def sweep(self, dry_run: bool = False) -> list[retention.SweepItem]:
        return retention.sweep(self, dry_run)

    def _sweep_loop(self) -> None:
        interval = self.settings.images.sweep_interval_s
        while not self._stop_sweeper.is_set():
            try:
                for item in self.sweep(dry_run=False):
                    if item.removed:
                        log.info("retention: removed %s/%s:%s (%s): %s", item.image.group, item.image.name,
                                 item.image.tag, item.image.id, item.reason)
            except Exception:
                log.exception("retention sweep failed")
            if self._stop_sweeper.wait(interval):
                return


def make_image_service(ctx: Any, new_id: Callable[[], uuid.UUID] = uuid.uuid4, builder: Optional[Builder] = None,
                       clock: Optional[Clock] = None, lease_clock: Optional[Clock] = None, poll_s: float = 1.0,
                       max_attempts: int = DEFAULT_MAX_ATTEMPTS, cancel_wait_s: float = 30.0,
                       follow_poll_s: float = 0.2) -> ImageService:
    """The image service of an app context.

    :param builder: a Builder to use instead of the configured one (``builder.backend``).
    :param clock: record times and retention ages (default: the context's clock).
    :param lease_clock: wall time for build leases, shared by every process (default: UTC now).
    :param poll_s: how often idle workers look for builds submitted through other processes.
    """
    return ImageService(ctx, new_id, BuilderSlot(ctx.pm, ctx.settings, builder), clock or ctx.clock,
                        lease_clock or utcnow, poll_s=poll_s, max_attempts=max_attempts,
                        cancel_wait_s=cancel_wait_s, follow_poll_s=follow_poll_s)
