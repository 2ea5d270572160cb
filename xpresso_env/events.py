"""Events fired after a change is committed: the plugin hooks behind one log-and-continue policy.

Services receive an ``Events`` object by name and call it after their transaction commits, never
inside one. A plugin that raises is logged; it never turns a committed write into an error.
"""
from __future__ import annotations

import logging
from typing import Any

import pluggy

log = logging.getLogger("xpresso_env.events")


class Events:
    def __init__(self, hook: pluggy.HookRelay):
        self._hook = hook

    def record_saved(self, kind: str, record: Any, created: bool) -> None:
        self._fire(self._hook.xpresso_record_saved, kind=kind, record=record, created=created)

    def record_deleted(self, kind: str, record: Any) -> None:
        self._fire(self._hook.xpresso_record_deleted, kind=kind, record=record)

    def build_finished(self, image: Any) -> None:
        self._fire(self._hook.xpresso_build_finished, image=image)

    @staticmethod
    def _fire(hook: pluggy.HookCaller, **kwargs: Any) -> None:
        try:
            hook(**kwargs)
        except Exception:  # a plugin's bug must not break the request or the build that fired it
            log.exception("plugin hook %s failed", hook.name)
