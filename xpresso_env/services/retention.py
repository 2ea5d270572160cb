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
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Optional

from ..codec import from_doc, to_doc
from ..config import BuildsSettings, ImagesSettings
from ..events import Events
from ..models import Image, ImageStatus
from ..storage import StorageBackend, Tx
from ..timeutil import Clock, format_time
from .builder_slot import BuilderSlot
from .image_files import ImagePaths, remove_tar, remove_tree, stale_partials, workspace_folders

log = logging.getLogger("xpresso_env.images")


@dataclass(frozen=True)
class SweepItem:
    image: Image
    reason: str  # why it is removed, or why it is kept (pinned)
    removed: bool  # True: removed (with dry_run: would be removed); False: kept
    # The builder's image (name:tag) removed with the tar (dry_run: would be); None: kept, as
    # another live image of that name:tag still uses it.
    builder_image: Optional[str] = None


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
    """The retention sweep, run every ``images.sweep_interval_s`` by :meth:`start` and on demand
    by :meth:`sweep` (``xpresso-env images sweep``)."""

    def __init__(self, storage: StorageBackend, paths: ImagePaths, images: ImagesSettings, builds: BuildsSettings,
                 builders: BuilderSlot, events: Events, clock: Clock):
        self._storage = storage
        self._paths = paths
        self._interval_s = images.sweep_interval_s
        # A live build writes its partial tar for at most timeout_s; a dead one's is older still.
        self._partial_age_s = builds.timeout_s + 2 * builds.lease_s
        self._builders = builders
        self._events = events
        self._clock = clock
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="xpresso-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for item in self.sweep(dry_run=False):
                    if item.removed:
                        log.info("retention: removed %s/%s:%s (%s): %s", item.image.group, item.image.name,
                                 item.image.tag, item.image.id, item.reason)
            except Exception:
                log.exception("retention sweep failed")
            if self._stop.wait(self._interval_s):
                return

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
        return items

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
