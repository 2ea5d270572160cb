"""The webhook routes' query parameters and ids (CONTRACT §1 and §9): unknown parameters, bad
paging, a bad ``status`` filter and malformed ids are clear 4xx answers in the contract's error
shapes, never a 500, and change nothing. Every storage backend (the ``world`` fixture)."""
from __future__ import annotations

import pytest

from xpresso_env.journal.journal import DELIVERY_KIND, WEBHOOK_KIND

SECRET = "a-secret-of-24-characters"


@pytest.fixture
def hook_id(world) -> str:
    res = world.post("/api/v2/webhooks", {"url": "http://127.0.0.1:9/x", "events": ["*"], "secret": SECRET},
                     user="ga")
    assert res.status_code == 201
    world.post("/api/v2/harnesses", {"name": "h1", "path": "/opt/pyats"})
    world.ctx.deliveries.fan_out()  # what the delivery loop does first: one pending delivery
    return res.json["id"]


def _stored(world):
    with world.ctx.storage.read() as tx:
        return [d.body for d in tx.query(WEBHOOK_KIND)], [d.body for d in tx.query(DELIVERY_KIND)]


@pytest.mark.parametrize("path, params, key", [
    ("/api/v2/webhooks", {"bogus": "1"}, "detail"),
    ("/api/v2/webhooks", {"limit": "0"}, None),
    ("/api/v2/webhooks", {"offset": "-1"}, None),
    ("/api/v2/webhooks", {"limit": "many"}, None),
    ("/api/v2/webhooks/{id}", {"bogus": "1"}, "detail"),
    ("/api/v2/webhooks/{id}/deliveries", {"bogus": "1"}, "detail"),
    ("/api/v2/webhooks/{id}/deliveries", {"status": "lost"}, "status"),
    ("/api/v2/webhooks/{id}/deliveries", {"limit": "1001"}, None),
])
def test_bad_query_parameters_are_400(world, hook_id, path, params, key):
    before = _stored(world)
    res = world.get(path.format(id=hook_id), user="ga", params=params)
    assert res.status_code == 400, res.text
    assert isinstance(res.json, dict) and res.json
    if key is not None:
        assert key in res.json
    assert _stored(world) == before


def test_delivery_list_paging_and_filter(world, hook_id):
    world.post("/api/v2/harnesses", {"name": "h2", "path": "/opt/pyats"})
    world.ctx.deliveries.fan_out()
    res = world.get(f"/api/v2/webhooks/{hook_id}/deliveries", user="ga", params={"limit": "1"})
    assert res.status_code == 200 and res.headers["X-Total-Count"] == "2"
    (newest,) = res.json
    assert newest["event"] == "harness.created"
    everything = world.get(f"/api/v2/webhooks/{hook_id}/deliveries", user="ga").json
    assert everything[0] == newest and everything[0]["date_created"] >= everything[1]["date_created"]
    assert world.get(f"/api/v2/webhooks/{hook_id}/deliveries", user="ga", params={"status": "pending"}).json \
        == everything
    assert world.get(f"/api/v2/webhooks/{hook_id}/deliveries", user="ga", params={"status": "delivered"}).json == []


@pytest.mark.parametrize("path", ["/api/v2/webhooks/not-a-uuid", "/api/v2/webhooks/not-a-uuid/deliveries",
                                  "/api/v2/webhooks/0d8b6e3c-1d2e-4f5a-8b9c-0123456789ab/deliveries"])
def test_unknown_or_malformed_webhook_ids_are_404(world, hook_id, path):
    res = world.get(path, user="ga")
    assert res.status_code == 404 and res.json == {"detail": "Not Found"}


def test_redeliver_of_a_malformed_delivery_id_is_404_and_changes_nothing(world, hook_id):
    before = _stored(world)
    res = world.post(f"/api/v2/webhooks/{hook_id}/deliveries/not-a-uuid/redeliver", user="ga")
    assert res.status_code == 404 and res.json == {"detail": "Not Found"}
    assert _stored(world) == before
