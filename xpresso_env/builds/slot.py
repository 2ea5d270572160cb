"""The configured image builder, chosen lazily and re-probed while none is available."""
from __future__ import annotations

import logging
import threading
import time
from typing import Mapping, Optional

from ..config import Settings
from ..core.errors import ConfigError, ServiceUnavailable, XpressoError
from .sdk.builder import Builder, BuilderInfo, select_builder

log = logging.getLogger("xpresso_env.images")


class BuilderSlot:
    """The configured builder, chosen once (lazily: a CLI command that never builds never
    probes a daemon). When ``auto`` finds no builder, the choice is retried now and then, so a
    Docker daemon that comes up later is picked up without a restart.

    :param infos: the installed builders by name (``xpresso_env.plugin.builders(pm)``).
    :param settings: what the builders' factories are given (``builder.backend`` picks one).
    :param builder: a builder to use instead of choosing one (tests).
    """

    RETRY_S = 10.0
    AVAILABLE_TTL_S = 2.0  # submit asks `available()`; a short cache keeps that cheap

    def __init__(self, infos: Mapping[str, BuilderInfo], settings: Settings, builder: Optional[Builder] = None):
        self._infos = dict(infos)
        self._settings = settings
        self._builder = builder
        self._skipped: dict[str, str] = {}
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
                choice = select_builder(self._infos, self._settings)
            except ConfigError as exc:
                self._error = exc
                raise
            if choice.skipped != self._skipped:  # said once, not at every retry
                for name, reason in choice.skipped.items():
                    log.warning("builder.backend auto: skipped %s: %s", name, reason)
                self._skipped = dict(choice.skipped)
            if choice.builder is None:
                reasons = "; ".join(f"{n}: {r}" for n, r in choice.skipped.items()) or "none installed"
                self._error = ServiceUnavailable(f"no image builder available: {reasons}")
                raise self._error
            if self._settings.builder.backend == "auto":
                log.info("builder.backend auto: building with %s", choice.builder.name)
            self._error = None
            self._builder = choice.builder
            return self._builder

    def skipped(self) -> dict[str, str]:
        """The builders ``auto`` passed over at its last choice, with the reason for each."""
        with self._lock:
            return dict(self._skipped)

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
        """(the builder's name or None, why builds cannot start now or None)."""
        try:
            name: Optional[str] = self.get().name
        except XpressoError as exc:
            return None, exc.detail
        return name, self.problem()

    def remove_stale(self, older_than_s: float) -> list[str]:
        """The builder's temporary tags left by builds killed with their server, removed (see
        ``Builder.remove_stale``); none available: nothing."""
        try:
            return list(self.get().remove_stale(older_than_s))
        except Exception as exc:
            log.warning("could not look for temporary images left by killed builds: %s", exc)
            return []

    def remove_image(self, name: str, tag: str) -> None:
        """Remove the builder's ``name:tag`` after its record is deleted; a failure leaves a
        leftover in the builder's store, which is logged, never an error of the request."""
        try:
            self.get().remove_image(f"{name}:{tag}")
        except Exception as exc:
            log.warning("could not remove the builder's image %s:%s: %s", name, tag, exc)
