"""The app factory: everything is built from the settings; nothing is global.

``build_context(settings)`` makes the collaborators (plugin manager, storage, services);
``create_app(ctx)`` mounts the resources on a new ``falcon.App``. Tests build as many
independent apps as they like.
"""
from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import falcon
import pluggy

from .access.auth import AuthService, load_secret
from .access.cache import CachedReads, CacheFrontend, ResponseCache
from .access.reads import Reads
from .builds.files import ImagePaths
from .builds.log import BuildLogStore
from .builds.push import PushTargets
from .builds.queue import DEFAULT_MAX_ATTEMPTS, BuildQueue
from .builds.retention import Retention
from .builds.sdk.builder import Builder
from .builds.service import ImageService
from .builds.slot import BuilderSlot
from .config import Settings, load_settings
from .core.timeutil import Clock, utcnow
from .http import errors as api_errors
from .http.access_log import ACCESS_LOGGER, AccessLog
from .http.common import JsonBody
from .http.edge import Edge
from .http.resources import history as api_history
from .http.resources import images as api_images
from .http.resources import me as api_me
from .http.resources import meta as api_meta
from .http.resources import metrics as api_metrics
from .http.resources import probe_state as api_probe_state
from .http.resources import registry as api_registry
from .http.resources import ui as api_ui
from .http.resources import webhooks as api_webhooks
from .journal.delivery import DeliveryService
from .journal.history import HistoryService
from .journal.journal import Journal
from .journal.webhooks import WebhookService
from .plugin import builders, make_plugin_manager, pick_storage
from .probes.protocol import choose_probers, prober_infos
from .probes.service import ProbeService
from .registry.service import RegistryService
from .runtime.events import Events
from .runtime.prometheus import PrometheusMetrics
from .storage import StorageBackend, change_counters, check_ready


@dataclass
class AppContext:
    """The assembled service: what `serve`, the CLI and plugins are handed. Services never see it;
    each receives its own collaborators by name in ``build_context``."""

    settings: Settings
    pm: pluggy.PluginManager
    storage: StorageBackend
    clock: Clock
    events: Events
    auth: AuthService
    reads: Reads
    cached: CachedReads
    body: JsonBody
    registry: RegistryService
    metrics: PrometheusMetrics  # this context's own CollectorRegistry (GET /metrics)
    journal: Optional[Journal] = None  # writes history rows and webhook outbox entries
    history: Optional[HistoryService] = None  # history reads and its retention sweep
    webhooks: Optional[WebhookService] = None  # webhook subscriptions and deliveries list
    deliveries: Optional[DeliveryService] = None  # the webhook delivery loop (started by start())
    images: Optional[ImageService] = None  # None when built without image builds
    access_log: Optional[AccessLog] = None  # None when server.access_log is off
    probes: Optional[ProbeService] = None  # operational state probes (runs when probes.enabled)
    started: bool = field(default=False)

    def start(self) -> None:
        """Start background work (build workers, retention sweeper) and call startup hooks."""
        if self.started:
            return
        self.started = True
        if self.access_log is not None:
            self.access_log.start()
        if self.images is not None:
            self.images.start()
        if self.probes is not None and self.settings.probes.enabled:
            # hears of edits made through this process (listed by /api/v2/plugins under this name)
            name = "xpresso_env.probes"
            self.pm.register(self.probes.hooks, name=name if self.pm.get_plugin(name) is None
                             else f"{name}:{self.probes.owner}")
            self.probes.start()
        if self.deliveries is not None:
            self.deliveries.start()
        if self.history is not None:
            self.history.start()
        self.pm.hook.xpresso_startup(ctx=self)

    def close(self) -> None:
        if self.probes is not None:
            self.probes.stop()
            if self.pm.is_registered(self.probes.hooks):
                self.pm.unregister(self.probes.hooks)
        if self.images is not None:
            self.images.stop()
        if self.deliveries is not None:
            self.deliveries.stop()
        if self.history is not None:
            self.history.stop()
        if self.started:
            self.pm.hook.xpresso_shutdown(ctx=self)
        if self.access_log is not None:
            self.access_log.stop()
        self.storage.close()


def build_context(settings: Settings, pm: Optional[pluggy.PluginManager] = None, clock: Clock = utcnow,
                  new_id: Callable[[], uuid.UUID] = uuid.uuid4, check_schema: bool = True,
                  images: bool = True, lease_clock: Clock = utcnow, **image_options: Any) -> AppContext:
    """Assemble the service bottom-up: plugins, storage, events, then each service with what it uses.

    :param lease_clock: wall time for build leases (the build queue's, and the metrics' queue depth).
    :param image_options: passed to :func:`build_image_service` (tests inject a builder, clocks,
        poll intervals).
    """
    pm = pm or make_plugin_manager()
    storage = pick_storage(pm, settings.storage.backend).factory(settings)
    if check_schema:
        check_ready(storage)
    counters = change_counters(storage)
    # Shared-state gauges are read from storage at scrape time; lease times on the build queue's clock.
    metrics = PrometheusMetrics(storage, lease_clock=lease_clock)
    events = Events(pm.hook, metrics)
    auth = AuthService(storage, load_secret(settings), clock, settings.auth.token_days)
    reads = Reads(storage, auth, counters, clock)
    cached = CachedReads(reads, ResponseCache(settings.server.response_cache_bytes), counters, clock, metrics)
    deliveries = DeliveryService(storage, settings.events, clock, metrics)
    # history and webhook outbox, in each change's transaction
    journal = Journal(clock, new_id, wake=deliveries.wake)
    webhooks = WebhookService(storage, clock, settings.events, new_id, wake=deliveries.wake)
    history = HistoryService(storage, clock, settings.history.retention_days, settings.history.sweep_interval_s)
    registry = RegistryService(storage, clock, events=events, new_id=new_id, journal=journal)
    probes = ProbeService(storage, settings.probes, choose_probers(prober_infos(pm), settings), journal, events,
                          metrics, clock=clock)
    image_service = (build_image_service(settings, pm, storage, events, clock, new_id, journal=journal,
                                         lease_clock=lease_clock, **image_options)
                     if images else None)
    access_log = AccessLog(logging.getLogger(ACCESS_LOGGER)) if settings.server.access_log else None
    return AppContext(settings=settings, pm=pm, storage=storage, clock=clock, events=events, auth=auth,
                      reads=reads, cached=cached, body=JsonBody(settings.server.max_body_bytes),
                      registry=registry, metrics=metrics, images=image_service, access_log=access_log, journal=journal,
                      history=history, webhooks=webhooks, deliveries=deliveries, probes=probes)


def build_image_service(settings: Settings, pm: pluggy.PluginManager, storage: StorageBackend, events: Events,
                        clock: Clock, new_id: Callable[[], uuid.UUID], builder: Optional[Builder] = None,
                        lease_clock: Clock = utcnow, poll_s: float = 1.0, max_attempts: Optional[int] = None,
                        cancel_wait_s: float = 30.0, follow_poll_s: float = 0.2,
                        journal: Optional[Journal] = None) -> ImageService:
    """The image builds' part of the graph, bottom-up: paths, builder slot, queue, retention, service.

    :param builder: a Builder to use instead of the one ``builder.backend`` chooses (tests).
    :param lease_clock: wall time for build leases, shared by every process (default: UTC now).
    :param poll_s: how often idle workers look for builds submitted through other processes.
    :param max_attempts: claims after which an unfinished build fails (default 3).
    """
    paths = ImagePaths.from_settings(settings)
    slot = BuilderSlot(builders(pm), settings, builder)
    # Build logs live in storage, readable by every process; logs_root only holds older logs.
    logs = BuildLogStore(storage, paths.logs_root, clock)
    journal = journal or Journal(clock, new_id)  # one for the queue and the service
    queue = BuildQueue(storage, settings.builds, settings.polaris, settings.images, paths, slot, events, clock,
                       lease_clock, poll_s=poll_s, max_attempts=max_attempts or DEFAULT_MAX_ATTEMPTS, logs=logs,
                       push=PushTargets(settings.registry, settings.resolve(settings.registry.password_file)),
                       journal=journal)
    retention = Retention(storage, paths, settings.images, settings.builds, slot, events, clock, logs=logs)
    # builds.enabled false: the service answers the API but starts neither workers nor the sweep.
    return ImageService(storage, settings.images, settings.polaris, paths, slot, queue, retention, events, clock,
                        new_id, cancel_wait_s=cancel_wait_s, follow_poll_s=follow_poll_s, builds=settings.builds,
                        logs=logs, journal=journal)


def create_app(ctx: AppContext) -> falcon.App:
    """The falcon app: every resource receives its collaborators by name."""
    app = falcon.App(middleware=[api_metrics.RouteTemplate()])  # names the route for the metrics
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    app.req_options.keep_blank_qs_values = True
    api_errors.install(app)
    api_registry.add_routes(app, ctx.cached, ctx.reads, ctx.body, ctx.registry)
    if ctx.history is not None:
        api_history.add_routes(app, ctx.reads, ctx.history)
    if ctx.probes is not None:
        api_probe_state.add_routes(app, ctx.reads, ctx.probes.probers)
    if ctx.webhooks is not None:
        api_webhooks.add_routes(app, ctx.reads, ctx.body, ctx.webhooks)
    api_me.add_routes(app, ctx.auth)
    storage_info = api_meta.storage_report(ctx.storage, ctx.cached.enabled, ctx.settings.server.response_cache_bytes)
    app.add_route("/api/v2/openapi.json", api_meta.OpenAPIDocument(include_images=ctx.images is not None,
                                                                   include_metrics=ctx.settings.server.metrics))
    if ctx.settings.server.metrics:
        app.add_route(api_metrics.PATH, api_metrics.MetricsResource(ctx.metrics))
    app.add_route("/api/v2/plugins", api_meta.Plugins(ctx.pm, storage_info))
    app.add_route("/api/v2/health", api_meta.Health(ctx.pm, ctx.storage, storage_info, ctx.images, ctx.probes))
    if ctx.images is not None:
        api_images.add_routes(app, ctx.reads, ctx.body, ctx.images, ctx.settings.server.threads)
    if ctx.settings.server.ui:
        api_ui.add_routes(app)  # the web page: / and /ui/<shipped file>, not API routes
    ctx.pm.hook.xpresso_add_routes(app=app, ctx=ctx)
    return app


def create_wsgi_app(ctx: AppContext) -> Callable:
    """What a server runs: the edge (request id, HTTP metrics, access log) around the response
    cache's frontend around falcon."""
    app: Callable = create_app(ctx)
    if ctx.cached.enabled:
        app = CacheFrontend(app, ctx.cached)
    return Edge(app, ctx.metrics, ctx.access_log)


def make_app() -> Callable:
    """A WSGI app from $XPRESSO_ENV_CONFIG, for other WSGI servers (gunicorn xpresso_env.app:make_app())."""
    ctx = build_context(load_settings(os.environ.get("XPRESSO_ENV_CONFIG")))
    ctx.start()
    return create_wsgi_app(ctx)
