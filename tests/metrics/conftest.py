"""Fixtures of the metrics, logs and request-id tests: apps served through ``create_wsgi_app``
(the edge, the response cache's frontend and falcon, as `serve` runs them), and the exposition
parsed with prometheus_client's own parser."""
from __future__ import annotations

from typing import Optional

import pytest
from falcon.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import World
from xpresso_env.app import create_wsgi_app


class Scrape:
    """One parsed /metrics answer: sample values by name and labels."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> Optional[float]:
        """The value of the one sample ``name`` with exactly ``labels`` (None: no such sample)."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None

    def labels(self, name: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == name]


def scrape(world: World) -> Scrape:
    r = world.client.simulate_get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return Scrape(r.text)


@pytest.fixture
def make_edge_world(make_world):
    """make_world, but the client speaks to the whole WSGI app `serve` runs."""

    def make(**kwargs) -> World:
        w = make_world(**kwargs)
        return World(ctx=w.ctx, client=TestClient(create_wsgi_app(w.ctx)), tokens=w.tokens)

    return make


@pytest.fixture
def edge_world(make_edge_world) -> World:
    return make_edge_world()
