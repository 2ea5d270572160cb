"""GET /metrics (Prometheus exposition, no token; ``server.metrics: false`` leaves it unmounted,
so it answers 404) and the falcon middleware that names each request's route for the metrics."""
from __future__ import annotations

from typing import Any

import falcon

from ...runtime.prometheus import PrometheusMetrics
from ..request import ROUTE_KEY

PATH = "/metrics"


class MetricsResource:
    def __init__(self, metrics: PrometheusMetrics):
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        body, content_type = self.metrics.exposition(req.get_header("Accept"))
        resp.content_type = content_type
        resp.data = body


class RouteTemplate:
    """Leaves the matched route's template (``/api/v2/harnesses/{record_id}``) in the environ,
    before the responder runs: the edge labels the request's metrics with it, and the response
    cache stores it with an entry so that a hit answered before falcon is labelled the same."""

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        if req.uri_template:
            req.env[ROUTE_KEY] = req.uri_template
