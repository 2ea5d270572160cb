"""A claim with an expiry: the one rule builds, probes, webhook deliveries and the queue-depth gauge share.

Work that several processes share through storage (a queued build, a due probe, a webhook's next
delivery) is taken by CLAIMING it: the taker writes its worker id and an expiry on the work's own
document, in the same write transaction that re-read the document locked. The owner renews the
claim while it works and releases it when done; a claim whose expiry has passed belongs to a
process that died, and anyone may take it over. On the same machine a claim whose owner process
is gone (a kill -9, a crash) is a dead owner's claim, taken over without waiting for the expiry.

Pure rules with the time passed in (``now``): no clock, no storage. Callers keep the stored fields
(``claimed_by``, ``lease_until``) in their own documents and write them in their own transactions.

**The stored time** is an integer count of microseconds since the Unix epoch (UTC). It is exact (a
``datetime`` holds microseconds, and integers round-trip through JSON, JSONB and YAML unchanged,
where a float's seconds lose the last digit) and the cheapest to use: a comparison of two integers,
with no text to parse on each look at a claim. Documents written before it hold ISO-8601 text
(builds, probe states) or float seconds (the webhook outbox); :func:`read_until` reads every one.
"""
from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Optional

from ..core.timeutil import parse_time

Micros = int  # microseconds since 1970-01-01T00:00:00Z: the stored form of a claim's expiry

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECOND = 1_000_000
# The stored fields of no claim: what `release` writes.
RELEASED: Mapping[str, Any] = {"claimed_by": None, "lease_until": None}


# --------------------------------------------------------------------------- the time encoding


def micros(at: datetime) -> Micros:
    """The stored form of ``at`` (a naive time is taken as UTC), in integer arithmetic: exact."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    delta = at - EPOCH
    return (delta.days * 86400 + delta.seconds) * _SECOND + delta.microseconds


def from_micros(value: Micros) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def epoch_micros(seconds: float) -> Micros:
    """The stored form of a wall time in float seconds (``time.time()``)."""
    return round(seconds * _SECOND)


def span(seconds: float) -> Micros:
    return round(seconds * _SECOND)


def read_until(value: Any) -> Optional[Micros]:
    """A stored expiry, in any form a version of this service wrote: an integer (this encoding), a
    float (epoch seconds: the webhook outbox before), ISO-8601 text (builds and probe states
    before), or a ``datetime`` (a record made in memory). None: no expiry stored.

    A value none of these reads gives 0, an expiry long past: no version wrote such a value, so
    only a hand edit or a damaged import holds one, and its claim could never be renewed either
    (the owner would fail to read it too); taking it over is the only way its work gets done."""
    if value is None:
        return None
    if isinstance(value, bool):  # a bool is an int to Python; never an expiry
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return epoch_micros(value)
    if isinstance(value, datetime):
        return micros(value)
    if isinstance(value, str):
        try:
            return micros(parse_time(value))
        except ValueError:
            return 0
    return 0


# --------------------------------------------------------------------------- who owns a claim


def worker_id() -> str:
    """A new worker id: the host and pid say where it runs (in logs and ``worker_meta``), the random
    part tells apart the services of one process (tests run several)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Identity:
    """Enough to tell whether a claim belongs to a dead process on this very machine: the host, the
    boot (a pid is reused after a reboot) and the pid namespace (one per container) it ran in."""

    host: str
    boot: str
    pidns: str
    pid: Optional[int]

    @classmethod
    def here(cls) -> "Identity":
        return cls(host=socket.gethostname(), boot=_read("/proc/sys/kernel/random/boot_id"),
                   pidns=_pid_namespace(), pid=os.getpid())

    @classmethod
    def from_meta(cls, meta: Optional[Mapping[str, Any]]) -> "Identity":
        """From the keys :meth:`as_meta` wrote (a build's ``worker_meta``); missing keys read empty."""
        meta = meta or {}
        pid = meta.get("pid")
        return cls(host=str(meta.get("host") or ""), boot=str(meta.get("boot") or ""),
                   pidns=str(meta.get("pidns") or ""), pid=pid if type(pid) is int else None)

    def as_meta(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "boot": self.boot, "pidns": self.pidns}

    def same_machine(self, other: "Identity") -> bool:
        """True when ``other`` ran on this machine since its boot, in this pid namespace: its pids
        (and process groups) are ours to look at. Unknown boots never match."""
        return bool(other.boot) and (other.host, other.boot, other.pidns) == (self.host, self.boot, self.pidns)


# --------------------------------------------------------------------------- the claim


@dataclass(frozen=True)
class Claim:
    owner: str  # the worker id holding the work
    until: Micros  # the claim expires then unless renewed
    identity: Optional[Identity] = None  # the owner's process, for callers that check for a dead owner

    def expired(self, now: Micros) -> bool:
        return self.until <= now

    def dead_owner(self, here: Identity, alive: Callable[[int], bool] = pid_alive) -> bool:
        """True when the owner is a process of this machine (``here``) that no longer exists."""
        owner = self.identity
        if owner is None or not here.same_machine(owner):
            return False
        return owner.pid is not None and owner.pid != here.pid and not alive(owner.pid)

    def due_for_renewal(self, now: Micros, lease_s: float) -> bool:
        """Renew once a third of the lease is used, so two missed renewals still leave time."""
        return self.until - now <= span(lease_s) * 2 / 3

    def fields(self) -> dict[str, Any]:
        """The stored fields (the identity is the caller's to store, if it checks for dead owners)."""
        return {"claimed_by": self.owner, "lease_until": self.until}


def claim(owner: str, now: Micros, lease_s: float, identity: Optional[Identity] = None) -> Claim:
    return Claim(owner=owner, until=now + span(lease_s), identity=identity)


def renew(held: Claim, now: Micros, lease_s: float) -> Claim:
    return replace(held, until=now + span(lease_s))


def release() -> dict[str, Any]:
    """The stored fields of a released claim."""
    return dict(RELEASED)


def read(claimed_by: Any, lease_until: Any, identity: Optional[Identity] = None) -> Optional[Claim]:
    """The claim the stored fields describe; None when nobody holds the work. A claim without an
    expiry (a cancelled build keeps its owner so that owner notices) is expired."""
    if claimed_by is None:
        return None
    until = read_until(lease_until)
    return Claim(owner=str(claimed_by), until=0 if until is None else until, identity=identity)


def read_fields(fields: Mapping[str, Any]) -> Optional[Claim]:
    """The claim a stored body holds in the fields :meth:`Claim.fields` and :func:`release` write
    (an outbox entry, a probe state, a build record's body): :func:`read` of those two fields."""
    return read(fields.get("claimed_by"), fields.get("lease_until"))


def takeable(held: Optional[Claim], now: Micros, by: Optional[str] = None, here: Optional[Identity] = None) -> bool:
    """Whether the work may be claimed now: nobody holds it, its claim expired, it is ``by``'s own
    claim already (a probe service looking again after a failed write), or, given ``here``, its
    owner is a dead process of this machine. Without ``here`` the rule is the same on every
    machine (the queue-depth gauge: every process must report the same number)."""
    if held is None or held.expired(now) or (by is not None and held.owner == by):
        return True
    return here is not None and held.dead_owner(here)
