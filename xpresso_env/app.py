"""The app factory and the one composition root: everything is built from the settings here,
and only here; nothing is global.

``build_context(settings, role=...)`` makes the collaborators (plugin manager, storage, services)
and the ordered list of the background loops the role runs; ``create_app(ctx)`` mounts the
resources on a new ``falcon.App``. Tests build as many independent apps as they like.
"""
from __future__ import annotations

import enum
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import falcon
import pluggy
from falcon.routing import CompiledRouter

from .access.audit import Audit
from .access.auth import AuthService, load_secret
from .access.cache import ResponseCache
from .access.passwords import Passwords
from .access.profile import ProfileService
from .access.providers import ProviderTools
from .access.reads import Reads
from .access.signin import LoginPolicy, SignInService
from .builds.attempt import BuildRunner
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
from .http.cache_frontend import CachedAnswers, CacheFrontend
from .http.common import JsonBody
from .http.conditional import ConditionalGet
from .http.edge import Edge
from .http.request_id import RequestIds
from .http.resources import audit as api_audit
from .http.resources import auth as api_auth
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
from .journal.history import HistoryReads, HistoryService
from .journal.journal import Journal
from .journal.retention import DeliveryRetention
from .journal.webhooks import WebhookService
from .plugin import builders, make_plugin_manager, pick_identity_providers, pick_storage
from .probes.protocol import choose_probers, prober_infos
from .probes.scheduler import ProbeService
from .probes.state_reads import StateReads
from .registry.service import RegistryService
from .runtime.events import Events
from .runtime.lease import Identity, worker_id
from .runtime.loop import Startable, Step
from .runtime.notices import KeyedWaits, Wakeups
from .runtime.processes import ONE_PROCESS, ServingStatus
from .runtime.prometheus import PrometheusMetrics
from .storage import (
    BUILD_LOG,
    BUILDS,
    OUTBOX,
    PROBE_TARGETS,
    StorageBackend,
    change_counters,
    change_notices,
    check_ready,
)


class Role(str, enum.Enum):
    """What a process built by :func:`build_context` runs in the background (``AppContext.loops``)."""

    SERVE = "serve"  # `serve`: HTTP, and every loop the settings turn on
    WORKER = "worker"  # `xpresso-env worker`: builds (whatever builds.enabled says) and the sweeps, no HTTP
    ADMIN = "admin"  # a CLI command: no background work


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
    cached: CachedAnswers  # the response cache, as the read path uses it
    body: JsonBody
    registry: RegistryService
    metrics: PrometheusMetrics  # this context's own CollectorRegistry (GET /metrics)
    journal: Optional[Journal] = None  # writes history rows and webhook outbox entries
    history: Optional[HistoryService] = None  # the history's retention sweep
    history_reads: Optional[HistoryReads] = None  # GET .../history
    webhooks: Optional[WebhookService] = None  # webhook subscriptions and deliveries list
    deliveries: Optional[DeliveryService] = None  # the webhook deliveries (its dispatcher loop is in ``loops``)
    delivery_retention: Optional[DeliveryRetention] = None  # the finished deliveries' sweep
    images: Optional[ImageService] = None  # None when built without image builds
    access_log: Optional[AccessLog] = None  # None when server.access_log is off
    probes: Optional[ProbeService] = None  # operational state probes (runs when probes.enabled)
    signin: Optional[SignInService] = None  # POST /api/v2/auth/login and logout (CONTRACT section 13)
    profile: Optional[ProfileService] = None  # a user's own tokens, password, preferences
    audit: Optional[Audit] = None  # the audit rows: written by the two above, listed, swept
    wakeups: Optional[Wakeups] = None  # other processes' change notices (a storage with them, a role with loops)
    # The background work this process runs (see ``background``): started in this order, stopped in reverse.
    loops: list[Startable] = field(default_factory=list)
    role: Role = Role.SERVE
    serving: ServingStatus = ONE_PROCESS  # the processes that serve the port
    started: bool = field(default=False)

    def start(self) -> None:
        """Start the loops, in order, then call the startup hooks. A loop that fails to start
        stops the ones started before it."""
        if self.started:
            return
        for n, loop in enumerate(self.loops):
            try:
                loop.start()
            except BaseException:
                for done in reversed(self.loops[:n]):
                    done.stop()
                raise
        self.started = True
        self.pm.hook.xpresso_startup(ctx=self)

    def stop(self) -> None:
        """Stop the loops, the last started first (running builds go back to the queue), then
        call the shutdown hooks. The storage stays open: requests are still answered."""
        for loop in reversed(self.loops):
            loop.stop()  # stopping a loop that is not running does nothing
        if self.started:
            self.started = False
            self.pm.hook.xpresso_shutdown(ctx=self)

    def hold(self) -> None:
        """This process is about to stop: take no new work (signal-safe: flags only). The
        loops stop later, in ``stop``."""
        if self.images is not None:
            self.images.queue.hold()

    def close(self) -> None:
        self.stop()
        self.storage.close()


def build_context(settings: Settings, pm: Optional[pluggy.PluginManager] = None, clock: Clock = utcnow,
                  new_id: Callable[[], uuid.UUID] = uuid.uuid4, check_schema: bool = True,
                  images: bool = True, lease_clock: Clock = utcnow, role: Role = Role.SERVE,
                  build_threads: Optional[int] = None, serving: ServingStatus = ONE_PROCESS,
                  **image_options: Any) -> AppContext:
    """Assemble the service bottom-up: plugins, storage, events, then each service with what it
    uses, then the list of loops ``role`` runs (:func:`background`).

    :param lease_clock: wall time for build leases (the build queue's, and the metrics' queue depth).
    :param role: what the process runs in the background; the settings are the same for every role.
    :param build_threads: builds run at once in this process (`worker --concurrency`; default:
        ``builds.max_concurrent``).
    :param serving: how many processes serve the port (`serve --processes`; health and metrics say it).
    :param image_options: passed to :func:`build_image_service` (tests inject a builder, clocks,
        poll intervals).
    """
    role = Role(role)
    pm = pm or make_plugin_manager()
    storage = pick_storage(pm, settings.storage.backend).factory(settings)
    if check_schema:
        check_ready(storage)
    counters = change_counters(storage)
    # Shared-state gauges are read from storage at scrape time; lease times on the build queue's clock.
    metrics = PrometheusMetrics(storage, lease_clock=lease_clock, serving=serving)
    events = Events(pm.hook, metrics)
    auth = AuthService(storage, load_secret(settings), clock, settings.auth.token_days)
    reads = Reads(storage, auth, counters, clock)
    a = settings.auth
    passwords = Passwords(time_cost=a.password_time_cost, memory_kib=a.password_memory_kib)
    providers = pick_identity_providers(pm, a.providers, ProviderTools(settings, passwords,
                                                                       logging.getLogger("xpresso_env.auth")))
    audit = Audit(storage, reads, clock, settings.history.retention_days, a.login_window_s,
                  settings.history.sweep_interval_s)
    signin = SignInService(storage, auth, audit, providers,
                           LoginPolicy(a.session_hours, a.login_max_failures, a.login_window_s), clock)
    profile = ProfileService(storage, reads, auth, audit, passwords, clock, a.token_days_max, a.token_days)
    cached = CachedAnswers(ResponseCache(settings.server.response_cache_bytes, counters, clock), metrics)
    worker = worker_id()  # this context's claims: webhook deliveries, probes and builds (runtime/lease.py)
    deliveries = DeliveryService(storage, settings.events, clock, metrics, worker_id=worker, new_id=new_id)
    # history and webhook events, in each change's transaction
    journal = Journal(clock, wake=deliveries.wake)
    webhooks = WebhookService(storage, reads, clock, settings.events, new_id, wake=deliveries.wake)
    history = HistoryService(storage, clock, settings.history.retention_days, settings.history.sweep_interval_s)
    delivery_retention = DeliveryRetention(storage, clock, settings.events.deliveries_retention_days,
                                           settings.events.sweep_interval_s)
    registry = RegistryService(storage, reads, clock, events=events, new_id=new_id, journal=journal)
    probes = ProbeService(storage, settings.probes, choose_probers(prober_infos(pm), settings), journal, events,
                          metrics, clock=clock, owner=worker)
    log_waits = KeyedWaits()  # the build log followers of this process
    image_service = (build_image_service(settings, pm, storage, reads, events, clock, new_id, journal=journal,
                                         worker_id=worker, lease_clock=lease_clock, build_threads=build_threads,
                                         process="worker" if role is Role.WORKER else "server",
                                         log_waits=log_waits, **image_options)
                     if images else None)
    wakeups = wakeups_for(storage, role, deliveries, probes, image_service, log_waits)
    # No HTTP, no access log: a worker or a CLI command answers no request.
    access_log = (AccessLog(logging.getLogger(ACCESS_LOGGER))
                  if settings.server.access_log and role is Role.SERVE else None)
    ctx = AppContext(settings=settings, pm=pm, storage=storage, clock=clock, events=events, auth=auth,
                     reads=reads, cached=cached, body=JsonBody(settings.server.max_body_bytes),
                     registry=registry, metrics=metrics, images=image_service, access_log=access_log, journal=journal,
                     history=history, history_reads=HistoryReads(reads), webhooks=webhooks,
                     deliveries=deliveries, delivery_retention=delivery_retention, probes=probes, wakeups=wakeups,
                     role=role, serving=serving, signin=signin, profile=profile, audit=audit)
    ctx.loops = background(ctx)
    return ctx


def background(ctx: AppContext) -> list[Startable]:
    """The loops ``ctx.role`` runs, in the order they start (they stop in reverse): the consumers
    first (deliveries send what the others journal), the producers last, so at stop the builds
    and probes end first and what they journaled can still be delivered.

    - serve: the access log writer; the history and deliveries sweeps and webhook deliveries (unless
      ``events.deliver`` is false); the builds (workers,
      heartbeat, retention sweep) unless ``builds.enabled`` is false; the probes when
      ``probes.enabled``.
    - worker: the same without HTTP (no access log) and without probes (CONTRACT §8: a build host
      may not see the harnesses' paths); it builds whatever ``builds.enabled`` says.
    - admin: nothing.
    """
    if ctx.role is Role.ADMIN:
        return []
    loops: list[Startable] = []
    if ctx.wakeups is not None:  # first started, last stopped: the others hear of work while they run
        loops.append(ctx.wakeups.loop)
    if ctx.access_log is not None:
        loops.append(ctx.access_log.writer)
    if ctx.history is not None:
        loops.append(ctx.history.sweeper)
    if ctx.delivery_retention is not None:
        loops.append(ctx.delivery_retention.sweeper)
    if ctx.audit is not None:
        loops.append(ctx.audit.sweeper)
    if ctx.deliveries is not None and (ctx.role is Role.WORKER or ctx.settings.events.deliver):
        loops.append(ctx.deliveries.dispatcher)
    images = ctx.images
    if images is not None and (ctx.role is Role.WORKER or ctx.settings.builds.enabled):
        # The heartbeat before the workers: it renews the claims of their builds until the
        # workers' stop has given them back.
        loops += [Step("builder check", images.check_builder), images.queue.heartbeat, images.queue.workers,
                  images.retention.sweeper]
    if ctx.probes is not None and ctx.role is Role.SERVE and ctx.settings.probes.enabled:
        loops += [probe_hooks(ctx.pm, ctx.probes), ctx.probes.scheduler]
    return loops


def wakeups_for(storage: StorageBackend, role: Role, deliveries: DeliveryService, probes: ProbeService,
                images: Optional[ImageService], log_waits: KeyedWaits) -> Optional[Wakeups]:
    """What another process's change notices wake here (``runtime/notices.py``): idle build
    workers, the delivery loop, the probe scheduler and build log followers. None on a storage
    without notices (the loops poll) and for a CLI command (no loops)."""
    notices = change_notices(storage)
    if notices is None or role is Role.ADMIN:
        return None
    handlers = {OUTBOX: lambda key: deliveries.wake(), PROBE_TARGETS: probes.changed_elsewhere,
                BUILD_LOG: log_waits.wake}
    if images is not None:
        handlers[BUILDS] = lambda key: images.queue.wake()
    return Wakeups(notices.notice_listener, handlers)


def probe_hooks(pm: pluggy.PluginManager, probes: ProbeService) -> Step:
    """While probes run, they hear of edits made through this process (listed by /api/v2/plugins
    under this name)."""
    name = "xpresso_env.probes"

    def register() -> None:
        pm.register(probes.hooks, name=name if pm.get_plugin(name) is None else f"{name}:{probes.owner}")

    def unregister() -> None:
        if pm.is_registered(probes.hooks):
            pm.unregister(probes.hooks)

    return Step("probe hooks", register, unregister)


def build_image_service(settings: Settings, pm: pluggy.PluginManager, storage: StorageBackend, reads: Reads,
                        events: Events,
                        clock: Clock, new_id: Callable[[], uuid.UUID], journal: Journal, worker_id: str,
                        builder: Optional[Builder] = None, lease_clock: Clock = utcnow, poll_s: Optional[float] = None,
                        max_attempts: Optional[int] = None, cancel_wait_s: float = 30.0,
                        follow_poll_s: float = 0.2, build_threads: Optional[int] = None, process: str = "server",
                        log_waits: Optional[KeyedWaits] = None) -> ImageService:
    """The image builds' part of the graph, bottom-up: paths, builder slot, queue, retention, service.

    :param journal: the one journal (history and webhook outbox) of the context: the queue and the
        service write through it.
    :param worker_id: the context's worker id (``runtime/lease.py``): the queue's workers are ``<id>/w<n>``.
    :param builder: a Builder to use instead of the one ``builder.backend`` chooses (tests).
    :param lease_clock: wall time for build leases, shared by every process (default: UTC now).
    :param poll_s: how often idle workers look for builds submitted through other processes
        (default ``builds.poll_s``).
    :param max_attempts: claims after which an unfinished build fails (default 3).
    :param build_threads: the queue's worker threads (default: ``builds.max_concurrent``).
    :param process: what the process is called in the operators' log ("server", "worker").
    :param log_waits: the build log followers of this process, woken when a log grows.
    """
    paths = ImagePaths.from_settings(settings)
    slot = BuilderSlot(builders(pm), settings, builder)
    # Build logs live in storage, readable by every process; logs_root only holds older logs.
    logs = BuildLogStore(storage, paths.logs_root, clock, waits=log_waits)
    runner = BuildRunner(settings.builds, settings.polaris, settings.images, paths, slot,
                         PushTargets(settings.registry, settings.resolve(settings.registry.password_file)))
    threads = settings.builds.max_concurrent if build_threads is None else build_threads  # this process's own
    queue = BuildQueue(storage, settings.builds, paths, runner, events, clock, lease_clock, threads=threads,
                       worker_id=worker_id, identity=Identity.here(), logs=logs, journal=journal, process=process,
                       poll_s=settings.builds.poll_s if poll_s is None else poll_s,
                       max_attempts=max_attempts or DEFAULT_MAX_ATTEMPTS)
    retention = Retention(storage, paths, settings.images, settings.builds, slot, events, clock, logs=logs)
    # Whether this process builds (the queue's and the retention's loops) is the role's choice: background().
    return ImageService(storage, reads, settings.images, settings.polaris, paths, slot, queue, retention, events, clock,
                        new_id, builds=settings.builds, logs=logs, journal=journal, cancel_wait_s=cancel_wait_s,
                        follow_poll_s=follow_poll_s)


def create_app(ctx: AppContext, router: Optional[CompiledRouter] = None) -> falcon.App:
    """The falcon app: every resource receives its collaborators by name. ``router``: falcon's
    router to route with (the response cache's frontend routes with the same one)."""
    # RouteTemplate names the route for the metrics; ConditionalGet tags GET answers (ETag, 304)
    app = falcon.App(middleware=[api_metrics.RouteTemplate(), ConditionalGet()], router=router)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    app.req_options.keep_blank_qs_values = True
    api_errors.install(app)
    api_registry.add_routes(app, ctx.cached, ctx.reads, ctx.body, ctx.registry)
    if ctx.history_reads is not None:
        api_history.add_routes(app, ctx.history_reads)
    if ctx.probes is not None:
        api_probe_state.add_routes(app, StateReads(ctx.reads, ctx.probes.probers))
    if ctx.webhooks is not None:
        api_webhooks.add_routes(app, ctx.reads, ctx.body, ctx.webhooks)
    if ctx.profile is not None and ctx.signin is not None and ctx.audit is not None:
        api_me.add_routes(app, ctx.reads, ctx.body, ctx.profile)
        api_auth.add_routes(app, ctx.reads, ctx.body, ctx.signin)
        api_audit.add_routes(app, ctx.audit)
    storage_info = api_meta.storage_report(ctx.storage, ctx.cached.enabled, ctx.settings.server.response_cache_bytes)
    app.add_route("/api/v2/openapi.json", api_meta.OpenAPIDocument(include_images=ctx.images is not None,
                                                                   include_metrics=ctx.settings.server.metrics))
    if ctx.settings.server.metrics:
        app.add_route(api_metrics.PATH, api_metrics.MetricsResource(ctx.metrics))
    app.add_route("/api/v2/plugins", api_meta.Plugins(ctx.pm, storage_info))
    app.add_route("/api/v2/health", api_meta.Health(ctx.pm, ctx.storage, storage_info, ctx.images, ctx.probes,
                                                          ctx.serving))
    if ctx.images is not None:
        api_images.add_routes(app, ctx.reads, ctx.body, ctx.images, ctx.settings.server.threads_per_process)
    if ctx.settings.server.ui:
        api_ui.add_routes(app, api_ui.Assets())  # the web page: / and /ui/<shipped file>, not API routes
    ctx.pm.hook.xpresso_add_routes(app=app, ctx=ctx)
    return app


def create_wsgi_app(ctx: AppContext) -> Callable:
    """What a server runs: the edge (request id, HTTP metrics, access log) around the response
    cache's frontend around falcon."""
    router = CompiledRouter()
    app: Callable = create_app(ctx, router)
    if ctx.cached.enabled:
        app = CacheFrontend(app, ctx.cached, router)
    return Edge(app, ctx.metrics, ctx.access_log, RequestIds())


def make_app() -> Callable:
    """A WSGI app from $XPRESSO_ENV_CONFIG, for other WSGI servers (gunicorn xpresso_env.app:make_app())."""
    ctx = build_context(load_settings(os.environ.get("XPRESSO_ENV_CONFIG")))
    ctx.start()
    return create_wsgi_app(ctx)
