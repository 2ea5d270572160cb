"""The Prometheus side of metrics (CONTRACT section 10): one ``CollectorRegistry`` per app context.

Two kinds of numbers, kept apart on purpose:

* What THIS process did (requests answered, builds it ran, probes, deliveries, cache answers):
  counters and histograms in ``PrometheusMetrics``, fed by the services through the
  ``MetricsSink`` protocol (``metrics.py``) and by the WSGI edge (``api/edge.py``). Prometheus
  sums them over the processes it scrapes.
* What the SHARED STATE is (builds by status, queue depth, records by operational state): read
  from storage by ``StorageGauges`` when /metrics is scraped, never kept in memory, so every
  process that shares a store reports the same truth and none can drift after a restart or a
  write made through another process (or the CLI).

Nothing here touches prometheus_client's global default registry: tests build many apps in one
process, and each must report only its own numbers.
"""
from __future__ import annotations

import threading
from typing import Iterator, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from ..core.errors import XpressoError
from ..core.models import Engine, Harness, Image, ImageStatus, OperationalState
from ..core.timeutil import Clock, utcnow
from ..storage import StorageBackend
from . import lease
from .processes import ServingStatus

UNMATCHED = "unmatched"  # the route label of a request no route matched: never the raw path
# Methods a client may invent any of: anything else is counted as "other", so a client cannot
# create label values (and series) at will.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DELIVERY_RESULTS = ("delivered", "retry", "failed")
CACHE_RESULTS = ("hit", "miss", "bypass")
FINISHED_STATUSES = (ImageStatus.SUCCESSFUL.value, ImageStatus.FAILED.value, ImageStatus.CANCELLED.value)
RECORD_KINDS = (Harness.KIND, Engine.KIND)

# Builds take seconds (dry-run) to an hour (builds.timeout_s); probes are bounded by probes.timeout_s.
BUILD_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PrometheusMetrics:
    """The ``MetricsSink`` of a running service, plus the HTTP numbers and the exposition.

    :param storage: read at scrape time for the shared-state gauges (None: no such gauges).
    :param lease_clock: wall time that build leases are compared with (the build queue's).
    """

    def __init__(self, storage: Optional[StorageBackend] = None, lease_clock: Clock = utcnow,
                 serving: Optional[ServingStatus] = None):
        self.registry = CollectorRegistry()  # this object's own: two contexts never share a metric
        r = self.registry
        self.http_requests = Counter("xpresso_http_requests", "HTTP requests answered, by route template",
                                     ["method", "route", "status"], registry=r)
        self.http_duration = Histogram("xpresso_http_request_duration_seconds",
                                       "Time to answer an HTTP request, by route template", ["route"], registry=r)
        self.build_duration = Histogram("xpresso_build_duration_seconds", "Duration of builds this process ended",
                                        ["status"], buckets=BUILD_BUCKETS, registry=r)
        self.probe_duration = Histogram("xpresso_probe_duration_seconds", "Duration of probes this process ran",
                                        ["kind", "result"], buckets=PROBE_BUCKETS, registry=r)
        self.webhook_deliveries = Counter("xpresso_webhook_deliveries", "Webhook delivery attempts, by result",
                                          ["result"], registry=r)
        self.cache_requests = Counter("xpresso_response_cache_requests",
                                      "Read-path answers: from the response cache (hit), read afresh (miss), "
                                      "or read with the cache off (bypass)", ["result"], registry=r)
        # Known label values start at 0, so a rate() has a first sample and a dashboard a series.
        for result in DELIVERY_RESULTS:
            self.webhook_deliveries.labels(result)
        for result in CACHE_RESULTS:
            self.cache_requests.labels(result)
        # The hot path's children, looked up once per label set (labels() takes a lock and
        # builds a key every call). The label sets are bounded: routes, known methods, statuses.
        self._http_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._cache_children: dict[str, Counter] = {}
        if storage is not None:
            r.register(StorageGauges(storage, lease_clock))
        if serving is not None:
            r.register(ProcessGauges(serving))

    # -- MetricsSink ----------------------------------------------------------------------------
    def probe_finished(self, kind: str, seconds: float, ok: bool) -> None:
        self.probe_duration.labels(kind, "ok" if ok else "failed").observe(seconds)

    def delivery_finished(self, result: str) -> None:
        self.webhook_deliveries.labels(result).inc()

    def build_finished(self, status: str, seconds: float) -> None:
        self.build_duration.labels(str(status)).observe(max(0.0, seconds))

    def cache_request(self, result: str) -> None:
        child = self._cache_children.get(result)
        if child is None:  # labels() takes a lock and builds a key: once per result, not per request
            child = self._cache_children[result] = self.cache_requests.labels(result)
        child.inc()

    # -- HTTP -----------------------------------------------------------------------------------
    def request_finished(self, method: str, route: Optional[str], status: str, seconds: float) -> None:
        """One answer of the WSGI edge. ``route`` is the matched route's template (None: no route)."""
        key = (method if method in KNOWN_METHODS else "other", route or UNMATCHED, status)
        children = self._http_children.get(key)
        if children is None:
            children = (self.http_requests.labels(*key), self.http_duration.labels(key[1]))
            self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self, accept: Optional[str] = None) -> tuple[bytes, str]:
        """The scrape's body and content type, in the format the ``Accept`` header asks for
        (Prometheus text 0.0.4 unless OpenMetrics or text 1.0.0 is asked for)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


STORAGE_WAIT_S = 1.0  # the longest a scrape waits for the shared-state gauges


class StorageGauges:
    """The shared-state gauges, read from storage on each scrape: one read transaction, three
    queries. A store that cannot be read gives ``xpresso_metrics_storage_up 0`` instead of the
    gauges (an absent series, not a wrong zero) and the scrape still answers."""

    def __init__(self, storage: StorageBackend, lease_clock: Clock = utcnow):
        self._storage = storage
        self._lease_clock = lease_clock
        # CONTRACT §16, /metrics keeps answering while the database hangs: the read runs in a
        # thread of its own and a scrape waits for it at most STORAGE_WAIT_S; one read at a time,
        # so a hung database holds one such thread however often it is scraped.
        self._reading = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration (and no storage read before `init`)

    def _read(self) -> Optional[tuple[list[dict], dict[str, list[dict]]]]:
        """(images, records), or None: storage did not answer, or not within STORAGE_WAIT_S."""
        if not self._reading.acquire(blocking=False):
            return None  # a read that has not finished yet
        result: list = []
        done = threading.Event()

        def read() -> None:
            try:
                with self._storage.read() as tx:
                    images = [d.body for d in tx.query(Image.KIND, include_deleted=False)]
                    result.append((images, {kind: [d.body for d in tx.query(kind, include_deleted=False)]
                                            for kind in RECORD_KINDS}))
            except XpressoError:
                pass
            finally:
                self._reading.release()
                done.set()

        threading.Thread(target=read, name="xpresso-metrics-read", daemon=True).start()
        done.wait(STORAGE_WAIT_S)
        return result[0] if result else None

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("xpresso_metrics_storage_up",
                               "1 when this scrape could read the shared-state gauges from storage")
        read = self._read()
        if read is None:
            up.add_metric([], 0)
            yield up
            return
        images, records = read
        up.add_metric([], 1)
        yield up
        yield from self._builds(images)
        yield self._states(records)

    def _builds(self, images: list[dict]) -> Iterator[Metric]:
        by_status = {s.value: 0 for s in ImageStatus}
        queued = 0
        now = lease.micros(self._lease_clock())
        for body in images:
            status = body.get("status")
            by_status[status] = by_status.get(status, 0) + 1
            if status == ImageStatus.BUILDING.value and not _held(body, now):
                queued += 1
        builds = GaugeMetricFamily("xpresso_builds", "Live (not deleted) images in storage, by build status",
                                   labels=["status"])
        for status, count in by_status.items():
            builds.add_metric([str(status)], count)
        yield builds
        yield GaugeMetricFamily("xpresso_build_queue_depth",
                                "Builds waiting for a worker: building, and not held by a live claim",
                                value=queued)

    @staticmethod
    def _states(records: dict[str, list[dict]]) -> Metric:
        family = GaugeMetricFamily("xpresso_operational_state",
                                   "Live harnesses and engines in storage, by operational state",
                                   labels=["kind", "state"])
        for kind, bodies in records.items():
            counts = {s.value: 0 for s in OperationalState}
            for body in bodies:
                state = body.get("operational_state") or OperationalState.UNKNOWN.value
                counts[state] = counts.get(state, 0) + 1
            for state, count in counts.items():
                family.add_metric([kind, str(state)], count)
        return family


class ProcessGauges:
    """How many processes serve the port (CONTRACT section 15), read when scraped: the same
    figures from whichever process answers."""

    def __init__(self, serving: ServingStatus):
        self._serving = serving

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        status = self._serving.status()
        if status.get("serving") is None:  # the supervisor is gone: no figure rather than a wrong one
            return
        yield GaugeMetricFamily("xpresso_server_processes", "Processes serving the port now", value=status["serving"])
        yield GaugeMetricFamily("xpresso_server_processes_configured", "Processes that server.processes asks for",
                                value=status["configured"])


def _held(body: dict, now: lease.Micros) -> bool:
    """Whether a building image is held by a live claim: the lease's rule, as the build queue
    applies it, without the same-machine dead-owner check (it would make the number depend on the
    machine that answers the scrape)."""
    return not lease.takeable(lease.read_fields(body), now)
