"""X-Request-Id (CONTRACT section 10) on every kind of answer: the client's own id when it is
safe (1-128 characters of the wire.REQUEST_ID grammar), else a new one (never a 400); the same
id in the access log line."""
from __future__ import annotations

import json
import logging
import re

import falcon
import pytest
from falcon.testing import TestClient

from tests.conftest import World
from tests.metrics.conftest import Scrape
from xpresso_env.app import create_wsgi_app
from xpresso_env.hookspecs import hookimpl
from xpresso_env.http.access_log import AccessLog
from xpresso_env.http.edge import Edge
from xpresso_env.plugin import make_plugin_manager
from xpresso_env.runtime.prometheus import PrometheusMetrics

NEW_ID = re.compile(r"[0-9a-f]{32}")
GOOD_IDS = ["req-1", "a" * 128, "Az09._~:/+=@-", "00000000-0000-4000-8000-000000000000"]
BAD_IDS = ["a" * 129, "two words", 'quo"te', "comma,joined", "tab\tchar", "caf\u00e9", "", "semi;colon", "<b>"]


class Boom:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("a bug")


class BoomPlugin:
    @hookimpl
    def xpresso_add_routes(self, app, ctx):
        app.add_route("/boom", Boom())


@pytest.fixture
def w(make_world) -> World:
    pm = make_plugin_manager()
    pm.register(BoomPlugin(), name="boom")
    world = make_world(pm=pm)
    return World(ctx=world.ctx, client=TestClient(create_wsgi_app(world.ctx)), tokens=world.tokens)


def _answers(w: World, rid_headers: dict) -> dict[str, falcon.testing.Result]:
    """One answer of every kind, each sent with ``rid_headers``."""
    auth = w.headers("admin", **rid_headers)
    hid = w.client.simulate_post("/api/v2/harnesses", json={"name": "h", "path": "/p"}, headers=auth)
    assert hid.status_code == 201
    out = {"201": hid}
    path = f"/api/v2/harnesses/{hid.json['id']}"
    out["200"] = w.client.simulate_get(path, headers=auth)
    out["200 cache hit"] = w.client.simulate_get(path, headers=auth)
    out["400"] = w.client.simulate_get("/api/v2/harnesses", query_string="color=red", headers=auth)
    out["401"] = w.client.simulate_get("/api/v2/harnesses", headers=rid_headers)
    out["403"] = w.client.simulate_get("/api/v2/harnesses", headers=w.headers("mem", "g2", **rid_headers))
    out["404 record"] = w.client.simulate_get("/api/v2/harnesses/00000000-0000-4000-8000-000000000000", headers=auth)
    out["404 no route"] = w.client.simulate_get("/nowhere", headers=rid_headers)
    out["405"] = w.client.simulate_put("/api/v2/harnesses", json={}, headers=auth)
    out["413"] = w.client.simulate_post("/api/v2/harnesses", body=b"x" * (w.ctx.settings.server.max_body_bytes + 1),
                                        headers={**auth, "Content-Type": "application/json"})
    out["415"] = w.client.simulate_post("/api/v2/harnesses", body=b"x", headers={**auth, "Content-Type": "text/plain"})
    out["500"] = w.client.simulate_get("/boom", headers=rid_headers)
    out["204"] = w.client.simulate_delete(path, headers=auth)
    out["metrics"] = w.client.simulate_get("/metrics", headers=rid_headers)
    out["openapi"] = w.client.simulate_get("/api/v2/openapi.json", headers=rid_headers)
    for kind, r in out.items():
        assert kind.split()[0] in (str(r.status_code), "metrics", "openapi"), (kind, r.status_code, r.text)
    return out


def test_a_safe_id_is_echoed_on_every_kind_of_answer(w):
    assert w.ctx.cached.enabled  # so the second read below is a real cache hit
    for rid in GOOD_IDS:
        for kind, r in _answers(w, {"X-Request-Id": rid}).items():
            assert r.headers.get("x-request-id") == rid, (kind, rid)
    hits = Scrape(w.client.simulate_get("/metrics").text).value("xpresso_response_cache_requests_total", result="hit")
    assert hits == len(GOOD_IDS)  # the cached answers were really cache hits


def test_no_id_gets_a_new_one_each_time(w):
    seen: set[str] = set()
    for kind, r in _answers(w, {}).items():
        rid = r.headers.get("x-request-id")
        assert rid is not None and NEW_ID.fullmatch(rid), (kind, rid)
        seen.add(rid)
    assert len(seen) == 15  # one per answer


def test_an_unsafe_id_is_replaced_never_refused(w):
    for rid in BAD_IDS:
        answers = _answers(w, {"X-Request-Id": rid})  # the statuses are the same as without an id
        for kind, r in answers.items():
            got = r.headers.get("x-request-id")
            assert got != rid and NEW_ID.fullmatch(got), (kind, rid, got)


def test_the_access_log_line_carries_the_id_cache_hits_included(make_world, settings):
    from dataclasses import replace

    s = replace(settings, server=replace(settings.server, access_log=True))
    world = make_world(settings_override=s)
    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append  # type: ignore[method-assign]
    logger = logging.getLogger("xpresso_env.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        client = TestClient(create_wsgi_app(world.ctx))
        for rid in ("first-read", "cached-read"):
            assert client.simulate_get("/api/v2/engines", headers=world.headers("mem", **{"X-Request-Id": rid})).status_code == 200
        r = client.simulate_get("/api/v2/engines", headers={"X-Request-Id": "x y"})
        world.ctx.access_log.flush()
        texts = [record.getMessage() for record in lines]
        assert texts[0].endswith(" user=mem group=g1 request_id=first-read")
        assert texts[1].endswith(" user=mem group=g1 request_id=cached-read")
        assert texts[2].endswith(f" user=- group=- request_id={r.headers['x-request-id']}")
        assert [record.fields["request_id"] for record in lines] == ["first-read", "cached-read",
                                                                     r.headers["x-request-id"]]
        hits = Scrape(client.simulate_get("/metrics").text).value("xpresso_response_cache_requests_total",
                                                                  result="hit")
        assert hits == 1  # the second line was a cache hit's
    finally:
        logger.removeHandler(handler)


def test_the_edge_answers_a_500_with_its_id_when_the_app_raises():
    def broken(environ, start_response):
        raise RuntimeError("a bug below falcon")

    metrics = PrometheusMetrics()
    records: list[tuple] = []
    log = AccessLog(logging.getLogger("xpresso_env.test_edge"))
    log.record = lambda *args: records.append(args)  # type: ignore[method-assign]
    client = TestClient(Edge(broken, metrics, log, new_id=lambda: "fresh"))
    r = client.simulate_get("/x", headers={"X-Request-Id": "mine"})
    assert r.status_code == 500 and r.json == {"detail": "Internal server error."}
    assert r.headers["x-request-id"] == "mine"
    r = client.simulate_get("/x")
    assert r.headers["x-request-id"] == "fresh"
    assert [rec[2] for rec in records] == ["500", "500"] and [rec[-1] for rec in records] == ["mine", "fresh"]
    s = Scrape(metrics.exposition()[0].decode())
    assert s.value("xpresso_http_requests_total", method="GET", route="unmatched", status="500") == 2


def test_the_openapi_document_states_the_header(w):
    doc = w.client.simulate_get("/api/v2/openapi.json").json
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                for code, answer in op["responses"].items():
                    assert "X-Request-Id" in answer["headers"], (path, method, code)
    schema = doc["paths"]["/metrics"]["get"]["responses"]["200"]["headers"]["X-Request-Id"]["schema"]
    pattern = re.compile(schema["pattern"])
    assert all(pattern.fullmatch(rid) for rid in GOOD_IDS)
    assert not any(pattern.fullmatch(rid) and len(rid) <= schema["maxLength"] for rid in BAD_IDS)
    assert json.dumps(doc)  # still plain JSON


def test_new_ids_are_unique_within_a_process_and_across_generators() -> None:
    """A random prefix per generator and a counter: no two answers share an id, and two servers
    (two generators) never hand out the same one."""
    from xpresso_env.http.request_id import RequestIds

    one, two = RequestIds(), RequestIds()
    ids = [one() for _ in range(1000)] + [two() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(NEW_ID.fullmatch(i) for i in ids)
    assert one()[:16] != two()[:16]
