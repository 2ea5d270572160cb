"""Retention: a successful image's tar is removed ``retention_day`` days after it was built
(``built_at``, on the service's clock) unless ``pin_version`` is true; the record then shows
``is_deleted: true``. ``retention_day`` is the value recorded on the image when it was
submitted (it is in its ``data``), so changing the configuration affects later builds only.

Several builds of one ``name:tag`` in one group share ``nfs_path``: each successful build
replaces the tar. Only the newest live successful record owns it, so sweeping or deleting an
older record never removes the tar a newer build wrote.

The sweep also removes what killed processes leave behind: partial tars older than a build can
run, the workspaces of builds that are no longer running anywhere, and the folders of earlier
attempts at builds that still run.

And what storage would otherwise keep for good (``Tx.purge``, a hard delete):

* **Build logs of deleted images.** A log (``build_log`` chunks, see ``build_log.py``) is kept as
  long as its image is live, whatever its status: a failed build's log is what says why. Once the
  image is deleted (``DELETE``, or this sweep removing its tar) the log stays readable for the
  image's own retention (``retention_day`` days) counted from the deletion, so a deleted image's
  log can still be read for a while; then the sweep purges it (with the file of an earlier
  version under ``images.logs_root``, if any) and the record says so: ``meta.log_removed_at``.
  From then on ``GET .../logs`` of that image answers 200 with an empty body. Never sooner than
  ``2 x builds.lease_s`` after the deletion: a build cancelled by its deletion has stopped
  writing by then, so no late line recreates a purged log.
* **Idempotency-Key records** older than ``idempotency.KEEP`` (24 h): they no longer answer.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Optional

from ..config import BuildsSettings, ImagesSettings
from ..core.codec import from_doc, to_doc
from ..core.models import Image, ImageStatus
from ..core.timeutil import Clock, format_time, parse_time
from ..runtime.events import Events
from ..runtime.loop import Loop
from ..storage import StorageBackend, Tx
from . import idempotency
from .files import ImagePaths, remove_tar, remove_tree, stale_partials, workspace_folders
from .log import BuildLogStore
from .slot import BuilderSlot

log = logging.getLogger("xpresso_env.images")


@dataclass(frozen=True)
class SweepItem:
    image: Image
    reason: str  # why it is removed, or why it is kept (pinned)
    removed: bool  # True: removed (with dry_run: would be removed); False: kept
    # The builder's image (name:tag) removed with the tar (dry_run: would be); None: kept, as
    # another live image of that name:tag still uses it.
    builder_image: Optional[str] = None


@dataclass(frozen=True)
class Purged:
    """What one sweep removed from storage for good."""

    logs: list[str]  # ids of the deleted images whose logs were purged
    idempotency_keys: int


def deleted_at(image: Image) -> datetime:
    """When the image was deleted: the sweep's own stamp, else the record's last change (the
    DELETE; a later PATCH of a deleted record only keeps its log a little longer)."""
    stamp = ((image.meta or {}).get("retention") or {}).get("removed_at")
    if isinstance(stamp, str):
        try:
            return parse_time(stamp)
        except ValueError:
            pass
    return image.date_updated


def owns_tar(tx: Tx, image: Image) -> bool:
    """True when no newer live successful build of the same nfs_path replaced this one's tar."""
    for doc in tx.query(Image.KIND, include_deleted=False):
        b = doc.body
        if (doc.id != str(image.id) and b.get("nfs_path") == image.nfs_path
                and b.get("status") == ImageStatus.SUCCESSFUL.value and b.get("built_at")
                and image.built_at is not None and from_doc(doc).built_at > image.built_at):
            return False
    return True


def builder_image_unused(tx: Tx, image: Image) -> bool:
    """The builder tags images ``name:tag`` in one shared store: remove that tag only when no
    other live image of that name:tag (in any group) is built or building."""
    for doc in tx.query(Image.KIND, include_deleted=False):
        b = doc.body
        if (doc.id != str(image.id) and b.get("name") == image.name and b.get("tag") == image.tag
                and b.get("status") in (ImageStatus.SUCCESSFUL.value, ImageStatus.BUILDING.value)):
            return False
    return True


def _days(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:.1f}"


class Retention:
    """The retention sweep, run by :attr:`sweeper` (at start, then every ``images.sweep_interval_s``,
    in a process that builds; the app starts it) and on demand by :meth:`sweep` (``xpresso-env
    images sweep``)."""

    def __init__(self, storage: StorageBackend, paths: ImagePaths, images: ImagesSettings, builds: BuildsSettings,
                 builders: BuilderSlot, events: Events, clock: Clock, logs: BuildLogStore):
        self._storage = storage
        self._paths = paths
        # A live build writes its partial tar for at most timeout_s; a dead one's is older still.
        self._partial_age_s = builds.timeout_s + 2 * builds.lease_s
        # A build cancelled by its image's deletion stops writing its log well within this.
        self._log_grace = timedelta(seconds=2 * builds.lease_s)
        self._logs = logs
        self._builders = builders
        self._events = events
        self._clock = clock
        self.sweeper = Loop("xpresso-retention", self._sweep_round, images.sweep_interval_s, logger=log, join_s=10)

    def _sweep_round(self) -> None:
        for item in self.sweep(dry_run=False):
            if item.removed:
                log.info("retention: removed %s/%s:%s (%s): %s", item.image.group, item.image.name,
                         item.image.tag, item.image.id, item.reason)

    def sweep(self, dry_run: bool = False) -> list[SweepItem]:
        """Remove the tars past retention (or, with ``dry_run``, only say which). Returns every
        image past retention, pinned ones included (kept), with the reason."""
        now = self._clock()
        items: list[SweepItem] = []
        with self._storage.read() as tx:
            docs = [d for d in tx.query(Image.KIND, include_deleted=False)
                    if d.body.get("status") == ImageStatus.SUCCESSFUL.value]
        for doc in docs:
            image: Image = from_doc(doc)
            if image.built_at is None:
                continue
            age = now - image.built_at
            if age < timedelta(days=image.retention_day):
                continue
            why = f"built {format_time(image.built_at)}, {_days(age)} days ago; retention {image.retention_day} days"
            if image.pin_version:
                items.append(SweepItem(image, f"pinned (pin_version): kept; {why}", removed=False))
                continue
            if dry_run:
                with self._storage.read() as tx:
                    unused = builder_image_unused(tx, image)
                items.append(SweepItem(image, why, removed=True,
                                       builder_image=f"{image.name}:{image.tag}" if unused else None))
                continue
            item = self._remove(image, why)
            if item is not None:
                items.append(item)
        if not dry_run:
            self._clean_leftovers()
            purged = self.purge(now)
            if purged.logs or purged.idempotency_keys:
                log.info("retention: purged the logs of %d deleted image(s) and %d expired Idempotency-Key "
                         "record(s)", len(purged.logs), purged.idempotency_keys)
        return items

    def purge(self, now: datetime) -> Purged:
        """Remove for good the logs of images deleted more than their retention ago, and the
        Idempotency-Key records older than 24 h (see the module docstring)."""
        with self._storage.read() as tx:
            due = [str(d.id) for d in tx.query(Image.KIND) if d.deleted and self._log_due(from_doc(d), now)]
        logs = [image_id for image_id in due if self._purge_log(image_id, now)]
        keys = 0
        with self._storage.write() as tx:
            for d in tx.query(idempotency.KIND):
                if not idempotency.expired(d, now):
                    continue
                # Re-read under the lock: a submit may have just reused the expired key (its
                # record replaced by a fresh one), which must stay.
                current = tx.get(idempotency.KIND, d.id, lock=True)
                if current is not None and idempotency.expired(current, now):
                    keys += tx.purge(idempotency.KIND, d.id)
        return Purged(logs, keys)

    def _log_due(self, image: Image, now: datetime) -> bool:
        if not image.is_deleted or "log_removed_at" in (image.meta or {}):
            return False
        return now - deleted_at(image) >= max(timedelta(days=image.retention_day), self._log_grace)

    def _purge_log(self, image_id: str, now: datetime) -> bool:
        with self._storage.write() as tx:
            doc = tx.get(Image.KIND, image_id, lock=True)  # re-checked under the lock
            if doc is None or not self._log_due(from_doc(doc), now):
                return False
            image: Image = from_doc(doc)
            chunks = self._logs.purge(tx, image_id)
            meta = {**(image.meta or {}), "log_removed_at": format_time(now)}
            tx.update(to_doc(replace(image, meta=meta)))
        legacy = self._logs.legacy_path(image_id)
        if legacy is not None:
            try:
                legacy.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("retention: cannot remove the old log file %s: %s", legacy, exc)
        log.info("retention: purged the log of deleted image %s (%d chunk(s))", image_id, chunks)
        return True

    def _remove(self, image: Image, why: str) -> Optional[SweepItem]:
        remove_ref = False
        with self._storage.write() as tx:
            doc = tx.get(Image.KIND, str(image.id), lock=True)
            current: Image = from_doc(doc)
            # Re-checked under the lock: a PATCH pin_version or a delete may have come in meanwhile.
            if current.is_deleted or current.status != ImageStatus.SUCCESSFUL or current.pin_version:
                return None
            if owns_tar(tx, current):
                removed = remove_tar(self._paths, current.nfs_path)
                detail = "tar removed" if removed else "tar already gone"
            else:
                detail = "the tar now belongs to a newer build of this name:tag and is kept"
            remove_ref = builder_image_unused(tx, current)
            now = self._clock()
            meta = {**(current.meta or {}), "retention": {"removed_at": format_time(now), "reason": why}}
            current = replace(current, is_deleted=True, meta=meta, date_updated=now)
            tx.update(to_doc(current))
        if remove_ref:
            self._builders.remove_image(current.name, current.tag)
        self._events.record_deleted(Image.KIND, current)
        return SweepItem(current, f"{why}; {detail}", removed=True,
                         builder_image=f"{current.name}:{current.tag}" if remove_ref else None)

    def _clean_leftovers(self) -> None:
        for path in stale_partials(self._paths, self._partial_age_s):
            try:
                path.unlink()
                log.info("retention: removed the partial tar %s left by an interrupted build", path)
            except OSError:
                pass
        # Temporary tags (name:xpresso-build-<time>-<hex>) of builds killed with their server.
        for ref in self._builders.remove_stale(self._partial_age_s):
            log.info("retention: removed the builder's temporary image %s left by an interrupted build", ref)
        # The folders first, the records second: a build claimed in between is seen as running.
        # Attempt numbers only grow, so a folder below the record's attempt is an earlier one's.
        found = workspace_folders(self._paths)
        with self._storage.read() as tx:
            building = {d.id: from_doc(d).attempts for d in tx.query(Image.KIND)
                        if d.body.get("status") == ImageStatus.BUILDING.value}
        root = self._paths.workspace_root
        for image_id, attempts in found.items():
            if image_id not in building:
                remove_tree(root / image_id, root)
                log.info("retention: removed the workspace %s of a build that no longer runs", root / image_id)
                continue
            for attempt, path in attempts:
                if attempt < building[image_id]:
                    remove_tree(path, root)
                    log.info("retention: removed the workspace %s of an interrupted attempt", path)
