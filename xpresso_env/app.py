"""The app factory: everything is built from the settings; nothing is global.

``build_context(settings)`` makes the collaborators (plugin manager, storage, services);
``create_app(ctx)`` mounts the resources on a new ``falcon.App``. Tests build as many
independent apps as they like.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import falcon
import pluggy

from .api import errors as api_errors
from .api import meta as api_meta
from .api import registry as api_registry
from .api.cache import CacheFrontend, ResponseCache
from .config import Settings, load_settings
from .plugin import make_plugin_manager, pick_storage
from .services.auth import AuthService, load_secret
from .services.registry import RegistryService
from .storage import StorageBackend, check_ready
from .timeutil import Clock, utcnow

log = logging.getLogger("xpresso_env")
access_log = logging.getLogger("xpresso_env.access")


@dataclass
class AppContext:
    settings: Settings
    pm: pluggy.PluginManager
    storage: StorageBackend
    clock: Clock
    auth: AuthService
    registry: RegistryService
    response_cache: ResponseCache = field(default_factory=lambda: ResponseCache(0))
    images: Any = None  # xpresso_env.services.images.ImageService, when builds are enabled
    started: bool = field(default=False)

    def notify(self, event: str, kind: str, record: Any, **kwargs: Any) -> None:
        """Fire a record hook after commit; a failing plugin is logged, never breaks the request."""
        hook = {"saved": self.pm.hook.xpresso_record_saved, "deleted": self.pm.hook.xpresso_record_deleted}[event]
        try:
            hook(ctx=self, kind=kind, record=record, **kwargs)
        except Exception:  # a plugin's bug must not turn a committed write into an error
            log.exception("plugin hook xpresso_record_%s failed", event)

    def start(self) -> None:
        """Start background work (build workers, retention sweeper) and call startup hooks."""
        if self.started:
            return
        self.started = True
        if self.images is not None:
            self.images.start()
        self.pm.hook.xpresso_startup(ctx=self)

    def close(self) -> None:
        if self.images is not None:
            self.images.stop()
        if self.started:
            self.pm.hook.xpresso_shutdown(ctx=self)
        self.storage.close()


def build_context(settings: Settings, pm: Optional[pluggy.PluginManager] = None, clock: Clock = utcnow,
                  new_id: Callable[[], uuid.UUID] = uuid.uuid4, check_schema: bool = True,
                  images: bool = True, **collaborators: Any) -> AppContext:
    pm = pm or make_plugin_manager()
    storage = pick_storage(pm, settings.storage.backend).factory(settings)
    if check_schema:
        check_ready(storage)
    auth = AuthService(storage, load_secret(settings), clock, settings.auth.token_days)
    ctx = AppContext(settings=settings, pm=pm, storage=storage, clock=clock, auth=auth,
                     registry=RegistryService(storage, clock, new_id=new_id),
                     response_cache=ResponseCache(settings.server.response_cache_bytes))
    ctx.registry._notify = ctx.notify
    if images:
        from .services.images import make_image_service

        ctx.images = make_image_service(ctx, new_id=new_id, **collaborators)
    return ctx


def log_access(method: str, path: str, status: str, started: float, user: str, group: str) -> None:
    """One access-log line: method, path, status, milliseconds, user, group."""
    access_log.info("%s %s %s %.1fms user=%s group=%s", method, path, status,
                    (time.perf_counter() - started) * 1000, user, group)


class AccessLog:
    """One line per request: method, path, status, milliseconds, user, group."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        req.context.user = "-"
        req.context.group = "-"

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        log_access(req.method, req.path, resp.status[:3], getattr(req.context, "started", time.perf_counter()),
                   getattr(req.context, "user", "-"), getattr(req.context, "group", "-"))


def create_app(ctx: AppContext) -> falcon.App:
    middleware = [AccessLog()] if ctx.settings.server.access_log else []
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    app.req_options.keep_blank_qs_values = True
    api_errors.install(app)
    api_registry.add_routes(app, ctx)
    api_meta.add_routes(app, ctx)
    if ctx.images is not None:
        from .api import images as api_images

        api_images.add_routes(app, ctx)
    ctx.pm.hook.xpresso_add_routes(app=app, ctx=ctx)
    return app


def create_wsgi_app(ctx: AppContext) -> Callable:
    """What a server runs: the falcon app behind the response cache's frontend."""
    app = create_app(ctx)
    if not ctx.response_cache.enabled:
        return app
    if ctx.settings.server.access_log:
        def on_hit(environ: dict, entry: Any, started: float) -> None:
            log_access("GET", environ.get("PATH_INFO", ""), "200", started, entry.user, entry.group)
    else:
        def on_hit(environ: dict, entry: Any, started: float) -> None:
            pass
    return CacheFrontend(app, ctx, on_hit)


def make_app() -> Callable:
    """A WSGI app from $XPRESSO_ENV_CONFIG, for other WSGI servers (gunicorn xpresso_env.app:make_app())."""
    ctx = build_context(load_settings(os.environ.get("XPRESSO_ENV_CONFIG")))
    ctx.start()
    return create_wsgi_app(ctx)
