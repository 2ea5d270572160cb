"""The claim rules of a build: when a queued build may be taken, what taking, renewing, releasing
and giving it up write on the Image record, and what an earlier attempt left behind.

The claim itself (expiry, renewal, dead owner, the stored time) is ``runtime/lease.py``'s; a build
keeps it in three fields of its record: ``claimed_by``, ``lease_until`` and ``worker_meta`` (the
owner's worker id and process identity, plus the process groups its steps started). Pure record
changes here; the queue (``queue.py``) writes them in its own transactions.
"""
from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime
from typing import Callable, Optional

from ..core.models import Image, ImageStatus
from ..core.timeutil import format_time
from ..runtime import lease
from ..runtime.lease import Identity, Micros
from .files import ImagePaths, attempt_folders, remove_tree
from .sdk import procrun


def claim_of(image: Image) -> Optional[lease.Claim]:
    """The claim a record holds (None: nobody's), whatever encoding stored its expiry."""
    return lease.read(image.claimed_by, image.lease_until, Identity.from_meta(image.worker_meta))


def claimable(image: Image, now: Micros, here: Identity) -> bool:
    """A live build nobody holds, or held by an expired claim or a dead process of this machine."""
    if image.status != ImageStatus.BUILDING or image.is_deleted:
        return False
    return lease.takeable(claim_of(image), now, here=here)


def claimed(image: Image, worker: str, now: Micros, lease_s: float, here: Identity, updated: datetime) -> Image:
    """The record claimed by ``worker`` for one more attempt: its ``worker_meta`` says who runs it."""
    held = lease.claim(worker, now, lease_s, here)
    worker_meta = {"worker_id": worker, **here.as_meta(), "claimed_at": format_time(lease.from_micros(now))}
    return replace(image, **held.fields(), attempts=image.attempts + 1, worker_meta=worker_meta,
                   date_updated=updated)


def renewed(image: Image, now: Micros, lease_s: float) -> Image:
    held = claim_of(image)
    assert held is not None, "only a held claim is renewed"
    return replace(image, lease_until=lease.renew(held, now, lease_s).until)


def released(image: Image, **changes) -> Image:
    """The record with no claim (a graceful stop gives the build back; a final state ends it)."""
    return replace(image, **lease.release(), **changes)


def given_up(image: Image, updated: datetime) -> Image:
    """After ``max_attempts`` claims that did not finish: the build fails instead of being tried for ever."""
    error = f"interrupted by restart ({image.attempts} attempts did not finish)"
    return released(image, status=ImageStatus.FAILED, meta={**(image.meta or {}), "error": error},
                    date_updated=updated)


def expiry_text(image: Image) -> str:
    """The stored expiry for a log line ("-" when none)."""
    until = lease.read_until(image.lease_until)
    return "-" if until is None else format_time(lease.from_micros(until))


def end_previous(image: Image, previous: Image, here: Identity, paths: ImagePaths,
                 say: Callable[[str], None]) -> None:
    """Before a new attempt (or the final failure): kill the process groups an earlier attempt of
    this machine left running (a killed server's git and buildah go on in sessions of their own)
    and remove the earlier attempts' folders. An attempt of another machine is stopped by its own
    heartbeat, or died with its machine; it works in a folder of its own, which the retention
    sweep removes. ``say`` writes a line in the build's log."""
    owner = previous.worker_meta or {}
    if not here.same_machine(Identity.from_meta(owner)):
        return
    for group in owner.get("groups") or ():
        pgid = group.get("pgid") if isinstance(group, dict) else None
        # Never our own group, init's or "every process" (0, -1): only a recorded build step's.
        if type(pgid) is not int or pgid <= 1 or pgid == os.getpgrp():
            continue
        if procrun.end_group(pgid, group.get("start")):
            say(f"killed process group {pgid}, left running by attempt {previous.attempts}")
    for attempt, folder in attempt_folders(paths.workspace(image.id)):
        if attempt < image.attempts:
            remove_tree(folder, paths.workspace_root)
