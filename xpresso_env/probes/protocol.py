"""The prober protocol every probe plugin implements, and the choice of a prober per record.

A prober answers one question about one record: is the thing it names usable now? Probers are
plugins, discovered like storage backends and builders: the collect-all hook ``xpresso_probers``
returns :class:`ProberInfo` objects, each saying which record kind (``harness`` | ``engine``) and
which types of it (``pyATS``, ``jenkins``...) it probes. The probe service builds each prober once
and calls it directly, typed; a record whose type no prober claims is never probed (its state
stays UNKNOWN: engines of type ``cloud`` as shipped).

Rules a prober keeps (the service relies on them, it cannot enforce them all):

* it returns within ``target.timeout_s`` (a little more at worst), whatever the target does;
* it reads a bounded number of bytes, starts no process and imports nothing from the target;
* it never raises for a bad target: every failure is a :class:`ProbeResult` with ``ok=False``
  and a one-line ``detail`` saying what happened (the operational state's ``reason``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["ProbeTarget", "ProbeResult", "Prober", "ProberInfo", "parse_version", "version_text",
           "choose_probers"]


@dataclass(frozen=True)
class ProbeTarget:
    kind: str  # "harness" | "engine"
    type: str  # the harness kind ("pyATS", "Tcl-ATS") or the engine type ("jenkins", "cloud")
    record: Mapping[str, Any]  # the stored body (engines: with their write-only credentials)
    timeout_s: float


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # success: what was found ("pyATS 24.3"); failure: why not ("connection refused")
    version: Optional[str] = None  # the version found, when one was
    # Record fields a successful probe sets (pyATS: support_liveview); ignored on failure.
    fields: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Prober(Protocol):
    name: str

    def probe(self, target: ProbeTarget) -> ProbeResult:
        """Probe one record; never raises for anything the target does."""


@dataclass(frozen=True)
class ProberInfo:
    """What a probe plugin announces through ``xpresso_probers``."""

    name: str
    description: str
    kind: str  # "harness" | "engine"
    types: tuple[str, ...]  # the record types it probes
    factory: Callable[["Settings"], Prober]


def choose_probers(infos: Mapping[str, ProberInfo], settings: "Settings") -> dict[tuple[str, str], Prober]:
    """One prober per (record kind, type). Two plugins claiming the same pair: the one whose name
    sorts first wins (a third-party plugin can replace a shipped one only by being blocked or by
    sorting first; deterministic either way)."""
    chosen: dict[tuple[str, str], Prober] = {}
    for name in sorted(infos):
        info = infos[name]
        prober: Optional[Prober] = None
        for type_ in info.types:
            if (info.kind, type_) not in chosen:
                prober = prober or info.factory(settings)
                chosen[(info.kind, type_)] = prober
    return chosen


_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(text: str) -> Optional[tuple[int, ...]]:
    """The leading numeric components of a version ("2.452.1-lts" -> (2, 452, 1)), or None."""
    m = _VERSION.match(text.strip())
    if m is None:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in version)


def prober_infos(pm: Any) -> dict[str, ProberInfo]:
    """The installed probers by name (``pm``: the plugin manager)."""
    return {info.name: info for infos in pm.hook.xpresso_probers() for info in infos}
