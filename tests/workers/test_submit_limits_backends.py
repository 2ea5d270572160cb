"""Idempotency-Key and the per-group queue limit on every selected storage backend, with two
services on one store (as two processes would be) and requests racing each other. The services
are not started: submitted builds stay queued. (tests/images/test_quota_idempotency.py covers the
API answers in detail, on SQLite.)"""
from __future__ import annotations

import threading
from dataclasses import replace

from falcon.testing import TestClient

from tests.conftest import World
from xpresso_env.app import build_context, create_app

BUILD = "/api/v2/images/polaris_build"


def two_services(make_world, settings, polaris, limit: int = 20):
    s = replace(settings, polaris=replace(settings.polaris, repo=str(polaris.path)),
                builder=replace(settings.builder, backend="dry-run"),
                builds=replace(settings.builds, max_queued_per_group=limit))
    w1 = make_world(images=True, settings_override=s)
    ctx2 = build_context(s, check_schema=False, images=True)
    return w1, World(ctx=ctx2, client=TestClient(create_app(ctx2)), tokens=w1.tokens)


def race(worlds, bodies, key=None):
    answers = []
    barrier = threading.Barrier(len(bodies))

    def send(world, body):
        barrier.wait()
        headers = world.headers("mem", "g1", **({"Idempotency-Key": key} if key else {}))
        answers.append(world.client.simulate_post(BUILD, json=body, headers=headers))

    threads = [threading.Thread(target=send, args=(worlds[i % 2], b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_one_key_racing_through_two_services_makes_one_build(make_world, settings, polaris):
    w1, w2 = two_services(make_world, settings, polaris)
    try:
        body = {"name": "polaris", "tag": "v1", "git_ref": "main"}
        answers = race([w1, w2], [body] * 6, key="once")
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        assert len({a.json["uuid"] for a in answers}) == 1
        other = w2.client.simulate_post(BUILD, json={**body, "tag": "v2"},
                                        headers=w2.headers("mem", "g1", **{"Idempotency-Key": "once"}))
        assert other.status_code == 422
        assert len(w1.get("/api/v2/images").json) == 1
    finally:
        w2.ctx.close()


def test_queue_limit_holds_under_racing_submits(make_world, settings, polaris):
    w1, w2 = two_services(make_world, settings, polaris, limit=3)
    try:
        answers = race([w1, w2], [{"name": "polaris", "tag": f"t{i}", "git_ref": "main"} for i in range(8)])
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * 3 + [429] * 5, [a.text for a in answers]
        assert len(w1.get("/api/v2/images").json) == 3
    finally:
        w2.ctx.close()
