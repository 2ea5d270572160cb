"""Operational state bookkeeping: the ``probe_state`` document, the hysteresis rule, the reset rule.

Pure functions and a dataclass, no threads and no I/O of their own (``read_state`` reads through
the caller's transaction): the probe service (``scheduler.py``, ``claims.py``) and the ``/state``
route use them, and tests hold the rules to the contract without a clock or a network.

One ``probe_state`` document per probed record (id = the record's id, group = its group): the
hysteresis counters, the last probe, the claim (who probes it now, until when) and when it is due
next. The record itself keeps only what the wire shows (``operational_state``, harnesses'
``support_liveview``); it is written only when those change, so a probe that changes nothing
never invalidates a cached list of records.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterable, Mapping, Optional

from ..core.errors import NotFound
from ..core.models import ConfigurationState, OperationalState
from ..core.render import probe_state
from ..core.timeutil import format_time
from ..core.validation import parse_uuid
from ..runtime import lease
from ..storage import Doc, Tx

STATE_KIND = "probe_state"
RECORD_KINDS = ("harness", "engine")

ONLINE = OperationalState.ONLINE.value
OFFLINE = OperationalState.OFFLINE.value
UNKNOWN = OperationalState.UNKNOWN.value
DISABLED = ConfigurationState.DISABLED.value

# What a probe looks at: an edit of any of these restarts the record from UNKNOWN (CONTRACT §8).
TARGET_FIELDS: dict[str, tuple[str, ...]] = {
    "harness": ("harness", "path"),
    "engine": ("type", "base_url", "username", "api_token"),
}
DISABLED_REASON = "DISABLED: not probed"


def record_type(kind: str, body: Mapping[str, Any]) -> str:
    """The type a prober is chosen by: the harness kind or the engine type."""
    return str(body.get("harness") if kind == "harness" else body.get("type"))


def fingerprint(kind: str, body: Mapping[str, Any]) -> str:
    """A digest of the probe's target (credentials included, so the document never holds them)."""
    values = tuple(body.get(f) for f in TARGET_FIELDS[kind])
    try:
        return _digest(values)
    except TypeError:  # an unhashable value (not a valid record, but never a reason to fail)
        return _digest.__wrapped__(values)


@lru_cache(maxsize=1 << 16)
def _digest(values: tuple[Any, ...]) -> str:
    # Cached: every claim, result and re-read of the schedule fingerprints its records (a tenth of
    # the steady state's CPU at 10,000 records); the same targets come back every interval.
    return hashlib.sha256(json.dumps(list(values), sort_keys=True).encode()).hexdigest()[:32]


def retargeted(kind: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    return any(before.get(f) != after.get(f) for f in TARGET_FIELDS.get(kind, ()))


def reset_changes(kind: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The reset rule, for an update of a record from ``before`` to ``after`` (stored bodies):
    the fields to set in the same update. A new target, or a record that becomes DISABLED, shows
    UNKNOWN (and a harness no live view) until it is probed again."""
    if kind not in TARGET_FIELDS:
        return {}
    if retargeted(kind, before, after) or (after.get("configuration_state") == DISABLED
                                           and before.get("configuration_state") != DISABLED):
        out: dict[str, Any] = {"operational_state": OperationalState.UNKNOWN}
        if kind == "harness":
            out["support_liveview"] = False
        return out
    return {}


@dataclass
class ProbeState:
    """The body of a ``probe_state`` document."""

    record_id: str
    record_kind: str
    group: str
    target: str  # fingerprint() of the record when this state was started
    created: str
    operational_state: str = UNKNOWN  # the state this bookkeeping last set on the record
    since: Optional[str] = None  # when it set it
    reason: Optional[str] = None
    last_probe: Optional[dict[str, Any]] = None  # {at, ok, latency_ms, detail, version}
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    restart: bool = True  # the next result sets the state at once (new record, new target, re-enabled)
    disabled: bool = False  # the record was DISABLED when last looked at
    next_at: Optional[str] = None  # due from then on (None: due now)
    claimed_by: Optional[str] = None  # the process probing it now ...
    # ... until then (runtime/lease.py's stored time; ISO text in documents of earlier versions),
    # unless it renews (it does not: probes are short)
    lease_until: Optional[int] = None

    @classmethod
    def fresh(cls, record: Doc, kind: str, now: datetime) -> "ProbeState":
        return cls(record_id=record.id, record_kind=kind, group=str(record.group), target=fingerprint(kind, record.body),
                   created=format_time(now),
                   operational_state=str(record.body.get("operational_state") or UNKNOWN))

    @classmethod
    def from_doc(cls, doc: Doc) -> "ProbeState":
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in doc.body.items() if k in known})

    def to_doc(self) -> Doc:
        # Built field by field: dataclasses.asdict deep-copies recursively and was a visible share
        # of a probe round's CPU. last_probe is the only nested value; it is copied one level
        # (its values are scalars), so the document never shares a dict with this object.
        body = {name: getattr(self, name) for name in _FIELDS}
        if self.last_probe is not None:
            body["last_probe"] = dict(self.last_probe)
        return Doc(kind=STATE_KIND, id=self.record_id, group=self.group, name=None, deleted=False,
                   created=self.created, body=body)

    def restarted(self, record: Doc, now: datetime) -> "ProbeState":
        """The same document started over for the record's (new) target."""
        return replace(self, target=fingerprint(self.record_kind, record.body), restart=True, disabled=False,
                       last_probe=None, consecutive_failures=0, consecutive_successes=0, reason=None, next_at=None,
                       operational_state=UNKNOWN, since=format_time(now))

    def but(self, **changes: Any) -> "ProbeState":
        """A copy with ``changes``: ``dataclasses.replace`` without its per-call field checks (it
        was a tenth of a probe's CPU); the names are this class's fields, so they are checked once."""
        unknown = changes.keys() - self.__dataclass_fields__.keys()
        if unknown:
            raise TypeError(f"not ProbeState fields: {sorted(unknown)}")
        new = object.__new__(ProbeState)
        new.__dict__ = {**self.__dict__, **changes}
        return new

    def claim(self) -> Optional[lease.Claim]:
        """Who probes the record now, until when (None: nobody)."""
        return lease.read(self.claimed_by, self.lease_until)


_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ProbeState))


@dataclass(frozen=True)
class Verdict:
    state: str  # the record's operational_state after this result
    changed: bool
    reason: Optional[str]
    failures: int
    successes: int


def judge(current: str, restart: bool, ok: bool, detail: str, failures: int, successes: int,
          fail_after: int, ok_after: int, reason: Optional[str]) -> Verdict:
    """The hysteresis rule: from UNKNOWN (or a restart) the first result sets the state at once;
    after that ONLINE turns OFFLINE only after ``fail_after`` consecutive failures and OFFLINE
    turns ONLINE only after ``ok_after`` consecutive successes. ``reason`` follows the latest
    result that agrees with the state (an ONLINE record's reason is what the last good probe
    found; an OFFLINE one's, the last failure)."""
    failures, successes = (0, successes + 1) if ok else (failures + 1, 0)
    start = UNKNOWN if restart else current
    if start == UNKNOWN:
        new = ONLINE if ok else OFFLINE
    elif ok and start == OFFLINE:
        new = ONLINE if successes >= ok_after else OFFLINE
    elif not ok and start == ONLINE:
        new = OFFLINE if failures >= fail_after else ONLINE
    else:
        new = start
    agrees = (new == ONLINE) == ok
    return Verdict(state=new, changed=new != current, reason=detail if agrees else reason,
                   failures=failures, successes=successes)


def next_due(record_id: str, now: datetime, interval_s: float) -> datetime:
    """When a record just probed is due again: at its own phase of the interval (a digest of its
    id), between half an interval and one and a half from now. So the records' probes spread
    evenly over the interval, whatever burst they started in, and each is probed once per
    interval."""
    phase = int(hashlib.sha1(record_id.encode()).hexdigest()[:8], 16) / 2 ** 32 * interval_s
    t = now.timestamp()
    nxt = (math.floor((t - phase) / interval_s) + 1) * interval_s + phase
    if nxt - t < interval_s / 2:
        nxt += interval_s
    return datetime.fromtimestamp(nxt, timezone.utc)


def describe(kind: str, record: Mapping[str, Any], state: Optional[ProbeState],
             probed: bool) -> dict[str, Any]:
    """The ``/state`` answer for a record (stored body) and its probe state document, if any.

    :param probed: whether an installed prober handles the record's type.
    """
    current = str(record.get("operational_state") or UNKNOWN)
    current_target = state is not None and state.target == fingerprint(kind, record)
    ours = current_target and state is not None and state.operational_state == current
    if record.get("configuration_state") == DISABLED:
        reason: Optional[str] = DISABLED_REASON
    elif not probed:
        reason = f"no prober for {kind}s of type {record_type(kind, record)}"
    elif ours:
        reason = state.reason  # type: ignore[union-attr]
    elif current == UNKNOWN:
        reason = "not probed yet"
    else:
        reason = None  # a state set by fixtures or an import, not by a probe
    since = state.since if ours and state is not None and state.since else record.get("date_modified")
    last = state.last_probe if current_target and state is not None else None
    return probe_state({"operational_state": current, "since": since, "reason": reason, "last_probe": last,
                        "consecutive_failures": state.consecutive_failures if current_target and state else 0,
                        "consecutive_successes": state.consecutive_successes if current_target and state else 0})


def read_state(tx: Tx, group: str, kind: str, record_id: str, probed_types: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The ``/state`` answer for the record ``record_id`` of ``kind`` in ``group`` (404 for a
    record of another group: no leak), read through ``tx``."""
    doc = tx.get(kind, str(parse_uuid(record_id)))
    if doc is None or doc.group != group:
        raise NotFound()
    state_doc = tx.get(STATE_KIND, doc.id)
    state = ProbeState.from_doc(state_doc) if state_doc is not None else None
    return describe(kind, doc.body, state, (kind, record_type(kind, doc.body)) in set(probed_types))
