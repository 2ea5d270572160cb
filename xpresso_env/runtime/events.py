"""Events fired after a change is committed: the plugin hooks behind one log-and-continue policy.

Services receive an ``Events`` object by name and call it after their transaction commits, never
inside one. A plugin that raises is logged; it never turns a committed write into an error.
"""
from __future__ import annotations

import logging
from typing import Any

import pluggy

from ..core.metrics import NULL_METRICS, MetricsSink

log = logging.getLogger("xpresso_env.events")


def build_seconds(image: Any) -> float:
    """How long a finished build ran: the build's own timing when it ran (``meta.timings.total_s``),
    else (cancelled or failed before any attempt ran) from submission to its end."""
    total = ((image.meta or {}).get("timings") or {}).get("total_s")
    if isinstance(total, (int, float)):
        return float(total)
    return max(0.0, (image.date_updated - image.date_created).total_seconds())


class Events:
    def __init__(self, hook: pluggy.HookRelay, metrics: MetricsSink = NULL_METRICS):
        self._hook = hook
        self._metrics = metrics  # build_finished: every place a build ends already announces it here

    def record_saved(self, kind: str, record: Any, created: bool) -> None:
        self._fire(self._hook.xpresso_record_saved, kind=kind, record=record, created=created)

    def record_deleted(self, kind: str, record: Any) -> None:
        self._fire(self._hook.xpresso_record_deleted, kind=kind, record=record)

    def build_finished(self, image: Any) -> None:
        try:
            self._metrics.build_finished(str(image.status), build_seconds(image))
        except Exception:  # metrics must not break the build that reported them
            log.exception("build metrics failed")
        self._fire(self._hook.xpresso_build_finished, image=image)

    @staticmethod
    def _fire(hook: pluggy.HookCaller, **kwargs: Any) -> None:
        try:
            hook(**kwargs)
        except Exception:  # a plugin's bug must not break the request or the build that fired it
            log.exception("plugin hook %s failed", hook.name)
