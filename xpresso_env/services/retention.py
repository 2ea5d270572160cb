"""Retention: a successful image's tar is removed ``retention_day`` days after it was built
(``built_at``, on the service's clock) unless ``pin_version`` is true; the record then shows
``is_deleted: true``. ``retention_day`` is the value recorded on the image when it was
submitted (it is in its ``data``), so changing the configuration affects later builds only.

Several builds of one ``name:tag`` in one group share ``nfs_path``: each successful build
replaces the tar. Only the newest live successful record owns it, so sweeping or deleting an
older record never removes the tar a newer build wrote.

The sweep also removes what killed processes leave behind: partial tars older than a build can
run, and workspaces of builds that are no longer running anywhere.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from ..codec import from_doc, to_doc
from ..models import Image, ImageStatus
from ..storage import Tx
from ..timeutil import format_time
from .image_files import orphan_workspaces, remove_tar, remove_tree, stale_partials

log = logging.getLogger("xpresso_env.images")


@dataclass(frozen=True)
class SweepItem:
    image: Image
    reason: str  # why it is removed, or why it is kept (pinned)
    removed: bool  # True: removed (with dry_run: would be removed); False: kept


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


def sweep(service: Any, dry_run: bool = False) -> list[SweepItem]:
    """Remove the tars past retention (or, with ``dry_run``, only say which). Returns every
    image past retention, pinned ones included (kept), with the reason."""
    now = service.clock()
    items: list[SweepItem] = []
    with service.storage.read() as tx:
        docs = [d for d in tx.query(Image.KIND, include_deleted=False)
                if d.body.get("status") == ImageStatus.SUCCESSFUL.value]
    for doc in docs:
        image: Image = from_doc(doc)
        if image.built_at is None:
            continue
        age = now - image.built_at
        limit = timedelta(days=image.retention_day)
        if age < limit:
            continue
        why = f"built {format_time(image.built_at)}, {_days(age)} days ago; retention {image.retention_day} days"
        if image.pin_version:
            items.append(SweepItem(image, f"pinned (pin_version): kept; {why}", removed=False))
            continue
        if dry_run:
            items.append(SweepItem(image, why, removed=True))
            continue
        item = _remove(service, image, why)
        if item is not None:
            items.append(item)
    if not dry_run:
        _clean_leftovers(service)
    return items


def _remove(service: Any, image: Image, why: str) -> SweepItem | None:
    remove_ref = False
    with service.storage.write() as tx:
        doc = tx.get(Image.KIND, str(image.id), lock=True)
        current: Image = from_doc(doc)
        # Re-checked under the lock: a PATCH pin_version or a delete may have come in meanwhile.
        if current.is_deleted or current.status != ImageStatus.SUCCESSFUL or current.pin_version:
            return None
        if owns_tar(tx, current):
            removed = remove_tar(service.paths, current.nfs_path)
            detail = "tar removed" if removed else "tar already gone"
        else:
            detail = "the tar now belongs to a newer build of this name:tag and is kept"
        remove_ref = builder_image_unused(tx, current)
        now = service.clock()
        meta = {**(current.meta or {}), "retention": {"removed_at": format_time(now), "reason": why}}
        current = replace(current, is_deleted=True, meta=meta, date_updated=now)
        tx.update(to_doc(current))
    if remove_ref:
        service._remove_builder_image(current)
    service._notify("deleted", current)
    return SweepItem(current, f"{why}; {detail}", removed=True)


def _clean_leftovers(service: Any) -> None:
    settings = service.settings
    # A live build writes its partial tar for at most timeout_s; a dead one's is older still.
    for path in stale_partials(service.paths, settings.builds.timeout_s + 2 * settings.builds.lease_s):
        try:
            path.unlink()
            log.info("retention: removed the partial tar %s left by an interrupted build", path)
        except OSError:
            pass
    # The folders first, the running builds second: a build that starts in between is not listed.
    found = orphan_workspaces(service.paths, ())
    with service.storage.read() as tx:
        building = {d.id for d in tx.query(Image.KIND) if d.body.get("status") == ImageStatus.BUILDING.value}
    for path in (p for p in found if p.name not in building):
        try:
            uuid.UUID(path.name)
        except ValueError:
            continue  # not one of ours
        remove_tree(path, service.paths.workspace_root)
        log.info("retention: removed the workspace %s of a build that no longer runs", path)
