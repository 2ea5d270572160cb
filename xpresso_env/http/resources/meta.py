"""Service-level resources: the OpenAPI document, loaded plugins, health. No token needed."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

import falcon
import pluggy

from ... import __version__
from ...plugin import plugin_list, storage_provider
from ...runtime.processes import ServingStatus
from ...storage import StorageBackend
from ...storage.health import storage_problem
from ..common import send_json
from ..openapi import build_openapi

if TYPE_CHECKING:
    from ...builds.service import ImageService
    from ...probes.scheduler import ProbeService


class OpenAPIDocument:
    def __init__(self, include_images: bool, include_metrics: bool = True):
        self.text = json.dumps(build_openapi(include_images=include_images, include_metrics=include_metrics))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.text = self.text


def storage_report(storage: StorageBackend, cache_enabled: bool, cache_bytes: int) -> dict[str, Any]:
    """The storage backend in use and whether the response cache runs on it (and why not)."""
    if cache_enabled:
        cache = "on"
    elif cache_bytes <= 0:
        cache = "off: server.response_cache_bytes is 0"
    else:
        cache = f"off: storage backend {storage.name!r} keeps no change counters"
    return {"backend": storage.name, "response_cache": cache}


class Plugins:
    def __init__(self, pm: pluggy.PluginManager, storage_info: dict[str, Any]):
        self.pm = pm
        provider = storage_provider(pm, storage_info["backend"])
        self.notes = {provider: {"storage": {**storage_info, "in_use": True}}} if provider else {}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send_json(resp, plugin_list(self.pm, self.notes))


class Health:
    def __init__(self, pm: pluggy.PluginManager, storage: StorageBackend, storage_info: dict[str, Any],
                 images: Optional["ImageService"], probes: Optional["ProbeService"] = None,
                 serving: Optional[ServingStatus] = None):
        self.pm = pm
        self.serving = serving
        self.storage = storage
        self.storage_info = storage_info
        self.images = images
        self.probes = probes

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = {"status": "ok", "version": __version__, "storage": self.storage.name,
                "response_cache": self.storage_info["response_cache"],
                "builder": None, "builder_problem": None, "builder_skipped": {}}
        if self.images is not None:
            builder = self.images.builder_status()
            body.update(builder=builder.name, builder_problem=builder.problem, builder_skipped=builder.skipped)
        if self.probes is not None:  # the probes part: {enabled, running, problem, records, in_flight}
            body["probes"] = self.probes.status()
            body["probes_problem"] = body["probes"]["problem"]
        if self.serving is not None:  # CONTRACT §15: {configured, serving, generation, pid, supervisor}
            body["processes"] = self.serving.status()
        status = falcon.HTTP_200
        problem = storage_problem(self.storage)
        if problem is not None:
            body["status"] = f"storage unavailable: {problem}"
            status = falcon.HTTP_503
        # CONTRACT §10: which part is down and why, in one place ({} when all is well).
        down = {"storage": problem, "builder": body["builder_problem"], "probes": body.get("probes_problem")}
        body["down"] = {part: why for part, why in down.items() if why}
        body["plugins"] = plugin_list(self.pm)
        send_json(resp, body, status)
