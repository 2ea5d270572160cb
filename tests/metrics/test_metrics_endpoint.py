"""GET /metrics (CONTRACT section 10), parsed with prometheus_client's own parser: route
templates as labels (never raw ids, cache hits included), counts that move, shared-state gauges
read from storage so that two app contexts on one store report the same numbers, a real build
in the build histogram, and ``server.metrics: false``."""
from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import make_settings
from tests.git_repo import hello_polaris
from tests.metrics.conftest import Scrape, scrape
from xpresso_env.core.codec import from_doc, to_doc
from xpresso_env.core.models import Image, ImageStatus
from xpresso_env.runtime.lease import micros
from xpresso_env.runtime.prometheus import PrometheusMetrics

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
FAMILIES = {
    "xpresso_http_requests": "counter",
    "xpresso_http_request_duration_seconds": "histogram",
    "xpresso_builds": "gauge",
    "xpresso_build_queue_depth": "gauge",
    "xpresso_build_duration_seconds": "histogram",
    "xpresso_operational_state": "gauge",
    "xpresso_probe_duration_seconds": "histogram",
    "xpresso_webhook_deliveries": "counter",
    "xpresso_response_cache_requests": "counter",
}


def test_every_family_is_exposed_without_a_token_and_parses(edge_world):
    edge_world.client.simulate_get("/api/v2/health")
    s = scrape(edge_world)  # no Authorization header
    for name, kind in FAMILIES.items():
        assert s.families[name].type == kind, name
    assert s.value("xpresso_metrics_storage_up") == 1
    for result in ("delivered", "retry", "failed"):  # known results start at 0
        assert s.value("xpresso_webhook_deliveries_total", result=result) == 0
    for result in ("hit", "miss", "bypass"):
        assert s.value("xpresso_response_cache_requests_total", result=result) == 0
    assert s.value("xpresso_http_requests_total", method="GET", route="/api/v2/health", status="200") == 1


def test_openmetrics_when_asked_for(edge_world):
    r = edge_world.client.simulate_get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")  # wsgiref's validator, on purpose
def test_routes_are_templates_never_raw_ids_cache_hits_included(edge_world):
    w = edge_world
    hid = w.post("/api/v2/harnesses", {"name": "h", "path": "/p"}, user="priv").json["id"]
    assert w.get(f"/api/v2/harnesses/{hid}").status_code == 200  # read afresh: a miss
    assert w.get(f"/api/v2/harnesses/{hid}").status_code == 200  # answered by the cache's frontend
    missing = str(uuid.uuid4())
    assert w.get(f"/api/v1/engines/{missing}").status_code == 404  # a route matched: its template
    stray = str(uuid.uuid4())
    assert w.client.simulate_get(f"/no/such/{stray}").status_code == 404  # no route matched
    assert w.get("/api/v2/resources/harnesses/h").status_code == 200  # a name in the path
    w.client.simulate_request("BREW", "/api/v2/harnesses")  # a method a client made up
    s = scrape(w)
    for raw in (hid, missing, stray, "/no/such"):
        assert raw not in s.text
    routes = {labels["route"] for labels in s.labels("xpresso_http_requests_total")}
    assert routes == {"/api/v2/harnesses", "/api/v2/harnesses/{record_id}", "/api/v1/engines/{record_id}",
                      "/api/v2/resources/{category}/{name}", "unmatched"}
    assert s.value("xpresso_http_requests_total", method="GET", route="/api/v2/harnesses/{record_id}",
                   status="200") == 2
    assert s.value("xpresso_http_requests_total", method="POST", route="/api/v2/harnesses", status="201") == 1
    assert s.value("xpresso_http_requests_total", method="GET", route="/api/v1/engines/{record_id}",
                   status="404") == 1
    assert s.value("xpresso_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert s.value("xpresso_http_requests_total", method="other", route="/api/v2/harnesses", status="400") == 1
    assert s.value("xpresso_http_request_duration_seconds_count", route="/api/v2/harnesses/{record_id}") == 2
    assert {labels["route"] for labels in s.labels("xpresso_http_request_duration_seconds_count")} == routes


def test_counts_move_by_exactly_the_requests_made(edge_world):
    w = edge_world
    before = scrape(w)
    for _ in range(3):
        w.get("/api/v2/engines")
    w.get("/api/v2/engines", user="mem", group="g3")  # 403
    after = scrape(w)
    series = dict(method="GET", route="/api/v2/engines")

    def moved(status: str) -> float:
        return (after.value("xpresso_http_requests_total", **series, status=status) or 0) - (
            before.value("xpresso_http_requests_total", **series, status=status) or 0)

    assert moved("200") == 3 and moved("403") == 1
    # /metrics counts itself: the first scrape is in the second one
    assert after.value("xpresso_http_requests_total", method="GET", route="/metrics", status="200") == 1


def test_response_cache_hits_misses_and_bypass(make_edge_world, settings):
    w = make_edge_world()
    assert w.ctx.cached.enabled  # sqlite, yaml and postgres all keep change counters
    w.get("/api/v2/harnesses")
    w.get("/api/v2/harnesses")
    w.get("/api/v2/harnesses")
    w.post("/api/v2/harnesses", {"name": "h", "path": "/p"})  # a write: the next read is afresh
    w.get("/api/v2/harnesses")
    s = scrape(w)
    assert s.value("xpresso_response_cache_requests_total", result="miss") == 2
    assert s.value("xpresso_response_cache_requests_total", result="hit") == 2
    assert s.value("xpresso_response_cache_requests_total", result="bypass") == 0
    off = make_edge_world(settings_override=make_settings_like(settings, {"server": {"response_cache_bytes": 0}}))
    off.client.simulate_get("/api/v2/harnesses", headers=w.headers("admin"))
    assert scrape(off).value("xpresso_response_cache_requests_total", result="bypass") == 1


def make_settings_like(settings, extra):
    import dataclasses

    server = dataclasses.replace(settings.server, **extra["server"])
    return dataclasses.replace(settings, server=server)


def _image(name: str, status: ImageStatus, created_s: int, **kw) -> Image:
    at = T0 + timedelta(seconds=created_s)
    return Image(id=uuid.uuid4(), group="g1", name=name, tag="v1", git_ref="main", submitter="admin",
                 nfs_path=f"/nfs/{name}.tar", retention_day=6, date_created=at, date_updated=at, status=status, **kw)


def _storage_truth(ctx) -> tuple[dict[str, int], int]:
    """Builds by status and the queue's depth, counted straight from storage."""
    now = datetime.now(timezone.utc)
    with ctx.storage.read() as tx:
        images = [from_doc(d) for d in tx.query(Image.KIND) if not d.deleted]
    by_status = {s.value: sum(1 for i in images if i.status == s) for s in ImageStatus}
    queued = sum(1 for i in images if i.status == ImageStatus.BUILDING
                 and (i.claimed_by is None or i.lease_until is None or i.lease_until <= micros(now)))
    return by_status, queued


def _builds(s: Scrape) -> tuple[dict[str, float], float]:
    return ({labels["status"]: s.value("xpresso_builds", **labels) for labels in s.labels("xpresso_builds")},
            s.value("xpresso_build_queue_depth"))


def test_build_gauges_are_the_shared_truth_of_two_contexts_on_one_store(make_edge_world):
    a = make_edge_world()
    b = make_edge_world()  # another app context (another process, as far as metrics go) on the same store
    now = datetime.now(timezone.utc)
    images = [
        _image("queued-1", ImageStatus.BUILDING, 1),
        _image("queued-2", ImageStatus.BUILDING, 2),
        _image("running", ImageStatus.BUILDING, 3, claimed_by="w-1", lease_until=micros(now + timedelta(hours=1))),
        _image("abandoned", ImageStatus.BUILDING, 4, claimed_by="w-2", lease_until=micros(now - timedelta(minutes=5))),
        _image("ok-1", ImageStatus.SUCCESSFUL, 5),
        _image("ok-2", ImageStatus.SUCCESSFUL, 6),
        _image("bad", ImageStatus.FAILED, 7),
        _image("stopped", ImageStatus.CANCELLED, 8),
        _image("gone", ImageStatus.SUCCESSFUL, 9, is_deleted=True),
    ]
    with a.ctx.storage.write() as tx:  # written through context a only
        for image in images:
            tx.insert(to_doc(image))
    truth = _storage_truth(a.ctx)
    assert truth == ({"building": 4, "successful": 2, "failed": 1, "cancelled": 1}, 3)
    a_builds, b_builds = _builds(scrape(a)), _builds(scrape(b))
    assert a_builds == b_builds == truth

    # a change made through b is what a reports next, and the other way round
    with b.ctx.storage.write() as tx:
        doc = tx.get(Image.KIND, str(images[0].id))
        tx.update(to_doc(replace(from_doc(doc), status=ImageStatus.CANCELLED)))
    truth = _storage_truth(b.ctx)
    assert truth == ({"building": 3, "successful": 2, "failed": 1, "cancelled": 2}, 2)
    assert _builds(scrape(a)) == _builds(scrape(b)) == truth


def test_operational_state_counts_are_read_from_storage(make_edge_world):
    a = make_edge_world()
    b = make_edge_world()
    ids = [a.post("/api/v2/harnesses", {"name": f"h{i}", "path": "/p"}).json["id"] for i in range(3)]
    eid = a.post("/api/v2/engines", {"name": "e", "base_url": "https://j.example.com"}).json["id"]
    doomed = a.post("/api/v2/engines", {"name": "gone", "base_url": "https://j.example.com"}).json["id"]
    assert a.delete(f"/api/v2/engines/{doomed}").status_code == 204  # deleted: not counted
    with b.ctx.storage.write() as tx:  # as a probe of another process would record it
        for kind, record_id, state in (("harness", ids[0], "ONLINE"), ("harness", ids[1], "OFFLINE"),
                                       ("engine", eid, "ONLINE")):
            doc = tx.get(kind, record_id)
            tx.update(replace(doc, body={**doc.body, "operational_state": state}))
    for world in (a, b):
        s = scrape(world)
        got = {(l["kind"], l["state"]): s.value("xpresso_operational_state", **l)
               for l in s.labels("xpresso_operational_state")}
        assert got == {("harness", "ONLINE"): 1, ("harness", "OFFLINE"): 1, ("harness", "UNKNOWN"): 1,
                       ("engine", "ONLINE"): 1, ("engine", "OFFLINE"): 0, ("engine", "UNKNOWN"): 0}


def test_a_real_build_is_in_the_build_histogram_and_gauges(make_edge_world, tmp_path):
    repo = hello_polaris(tmp_path / "polaris")
    s = make_settings(tmp_path, "sqlite", extra={"polaris": {"repo": str(repo.path)},
                                                 "builder": {"backend": "dry-run"}})
    w = make_edge_world(images=True, settings_override=s, poll_s=0.05)
    w.ctx.start()
    r = w.post("/api/v2/images/polaris_build", {"name": "hello", "tag": "v1", "git_ref": "main"})
    assert r.status_code == 200, r.text
    image = r.json
    deadline = time.monotonic() + 60
    while w.get(f"/api/v2/images/{image['uuid']}").json["status"] == "building":
        assert time.monotonic() < deadline, "the build did not end"
        time.sleep(0.05)
    after = scrape(w)
    assert w.get(f"/api/v2/images/{image['uuid']}").json["status"] == "successful"
    assert after.value("xpresso_build_duration_seconds_count", status="successful") == 1
    assert after.value("xpresso_build_duration_seconds_sum", status="successful") >= 0
    assert after.value("xpresso_builds", status="successful") == 1
    assert after.value("xpresso_builds", status="building") == 0
    assert after.value("xpresso_build_queue_depth") == 0
    assert image["uuid"] not in after.text


def test_the_sink_methods_land_in_their_families():
    m = PrometheusMetrics()  # no storage: only this process's numbers
    m.probe_finished("engine", 0.2, ok=True)
    m.probe_finished("engine", 3.0, ok=False)
    m.probe_finished("harness", 0.001, ok=True)
    m.delivery_finished("delivered")
    m.delivery_finished("retry")
    m.delivery_finished("retry")
    m.build_finished("failed", 12.0)
    m.cache_request("hit")
    body, content_type = m.exposition()
    s = Scrape(body.decode())
    assert content_type.startswith("text/plain")
    assert s.value("xpresso_probe_duration_seconds_count", kind="engine", result="ok") == 1
    assert s.value("xpresso_probe_duration_seconds_count", kind="engine", result="failed") == 1
    assert s.value("xpresso_probe_duration_seconds_bucket", kind="engine", result="failed", le="2.5") == 0
    assert s.value("xpresso_probe_duration_seconds_bucket", kind="engine", result="failed", le="5.0") == 1
    assert s.value("xpresso_probe_duration_seconds_count", kind="harness", result="ok") == 1
    assert s.value("xpresso_webhook_deliveries_total", result="retry") == 2
    assert s.value("xpresso_webhook_deliveries_total", result="failed") == 0
    assert s.value("xpresso_build_duration_seconds_sum", status="failed") == 12.0
    assert s.value("xpresso_response_cache_requests_total", result="hit") == 1
    assert "xpresso_builds" not in s.families
    # Another context's registry is its own: nothing leaks between apps in one process.
    assert Scrape(PrometheusMetrics().exposition()[0].decode()).value("xpresso_webhook_deliveries_total",
                                                                      result="retry") == 0


def test_an_unreachable_store_gives_storage_up_0_and_the_scrape_still_answers(tmp_path):
    from xpresso_env.app import build_context
    from xpresso_env.testing.server import free_port

    # A PostgreSQL address where nothing listens (a port just found free on loopback).
    dsn = f"postgresql://xpresso@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    settings = make_settings(tmp_path, "postgres", dsn, extra={"storage": {"busy_timeout_s": 0.5}})
    ctx = build_context(settings, check_schema=False, images=False)
    try:
        s = Scrape(ctx.metrics.exposition()[0].decode())
        assert s.value("xpresso_metrics_storage_up") == 0
        assert "xpresso_builds" not in s.families and "xpresso_operational_state" not in s.families
        assert "xpresso_http_requests" in s.families
    finally:
        ctx.close()


def test_metrics_off_is_a_404_and_undocumented(make_edge_world, settings):
    w = make_edge_world(settings_override=make_settings_like(settings, {"server": {"metrics": False}}))
    r = w.client.simulate_get("/metrics")
    assert r.status_code == 404 and r.json == {"detail": "Not Found"}
    assert len(r.headers["x-request-id"]) == 32  # still an answer with its id
    doc = w.client.simulate_get("/api/v2/openapi.json").json
    assert "/metrics" not in doc["paths"]
