"""The configured image builder, chosen lazily and re-probed while none is available."""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

from ..builders import Builder, select_builder
from ..errors import ConfigError, ServiceUnavailable, XpressoError


class BuilderSlot:
    """The configured builder, chosen once (lazily: a CLI command that never builds never
    probes a daemon). When ``auto`` finds no builder, the choice is retried now and then, so a
    Docker daemon that comes up later is picked up without a restart."""

    RETRY_S = 10.0
    AVAILABLE_TTL_S = 2.0  # submit asks `available()`; a short cache keeps that cheap

    def __init__(self, pm: Any, settings: Any, builder: Optional[Builder] = None):
        self._pm = pm
        self._settings = settings
        self._builder = builder
        self._error: Optional[XpressoError] = None
        self._tried_at = 0.0
        self._available: tuple[float, Optional[str]] = (0.0, None)
        self._lock = threading.Lock()

    def get(self) -> Builder:
        """:raises ServiceUnavailable: no builder can build; :raises ConfigError: a bad name."""
        with self._lock:
            if self._builder is not None:
                return self._builder
            if self._error is not None and (isinstance(self._error, ConfigError)
                                            or time.monotonic() - self._tried_at < self.RETRY_S):
                raise self._error
            self._tried_at = time.monotonic()
            try:
                self._builder = select_builder(self._pm, self._settings)
            except (ServiceUnavailable, ConfigError) as exc:
                self._error = exc
                raise
            self._error = None
            return self._builder

    def problem(self) -> Optional[str]:
        """None when a build can start now, else why not (one line)."""
        try:
            builder = self.get()
        except XpressoError as exc:
            return exc.detail
        checked_at, reason = self._available
        if time.monotonic() - checked_at < self.AVAILABLE_TTL_S:
            return reason
        try:
            reason = builder.available()
        except Exception as exc:  # a plugin bug reads as "unavailable", never as a 500
            reason = f"{builder.name}: {type(exc).__name__}: {exc}"
        self._available = (time.monotonic(), reason)
        return reason

    def status(self) -> tuple[Optional[str], Optional[str]]:
        try:
            name: Optional[str] = self.get().name
        except XpressoError as exc:
            return None, exc.detail
        return name, self.problem()
