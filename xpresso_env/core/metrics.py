"""What the services report to metrics: the ``MetricsSink`` protocol and a sink that drops it all.

Services that do observable work (probes, webhook deliveries, builds, the response cache) take a
``MetricsSink`` by name in their constructor; ``build_context`` hands them the Prometheus one, tests
may hand them ``NULL_METRICS``. Gauges that describe shared state (builds by status, queue depth,
records by operational state) are not reported here: they are read from storage at scrape time.
"""
from __future__ import annotations

from typing import Protocol


class MetricsSink(Protocol):
    def probe_finished(self, kind: str, seconds: float, ok: bool) -> None:
        """One probe of a record of ``kind`` (``harness`` | ``engine``) took ``seconds``."""

    def delivery_finished(self, result: str) -> None:
        """One webhook delivery attempt ended: ``delivered`` | ``retry`` | ``failed``."""

    def build_finished(self, status: str, seconds: float) -> None:
        """A build ended with ``status`` (successful | failed | cancelled) after ``seconds``."""

    def cache_request(self, result: str) -> None:
        """The response cache answered (``hit``) or not (``miss``, ``bypass``)."""


class NullMetrics:
    """A sink that keeps nothing (tests, and services built without metrics)."""

    def probe_finished(self, kind: str, seconds: float, ok: bool) -> None:
        pass

    def delivery_finished(self, result: str) -> None:
        pass

    def build_finished(self, status: str, seconds: float) -> None:
        pass

    def cache_request(self, result: str) -> None:
        pass


NULL_METRICS = NullMetrics()
