"""Webhooks (CONTRACT section 9), against real HTTP receivers on loopback (tests/webhooks/receiver.py):
subscriptions and their bad input, signed deliveries, retries with backoff, per-webhook order,
deliveries list and redelivery, allow_private, a hanging receiver, claims shared by two
delivery loops. Every storage backend (the ``backend`` fixture)."""
from __future__ import annotations

import dataclasses
import threading

import pytest

from xpresso_env.core.metrics import NullMetrics
from xpresso_env.journal.delivery import DeliveryService
from xpresso_env.journal.journal import DELIVERY_KIND, OUTBOX_KIND, WEBHOOK_KIND
from xpresso_env.runtime.lease import worker_id as new_worker_id

from .receiver import Receiver

SECRET = "a-secret-of-24-characters"
HARNESS = {"name": "h1", "path": "/opt/pyats"}


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


class FakeWall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingMetrics(NullMetrics):
    def __init__(self) -> None:
        self.results: list[str] = []

    def delivery_finished(self, result: str) -> None:
        self.results.append(result)


def events_settings(world, **changes):
    return dataclasses.replace(world.ctx.settings.events, **changes)


def loop(world, wall=None, metrics=None, worker_id=None, **changes) -> DeliveryService:
    return DeliveryService(world.ctx.storage, events_settings(world, **changes), world.ctx.clock,
                           metrics or NullMetrics(), wall=wall or FakeWall(), worker_id=worker_id or new_worker_id())


def hook(world, url, events=("*",), secret=SECRET, user="ga", group="g1", **extra):
    res = world.post("/api/v2/webhooks", {"url": url, "events": list(events), "secret": secret, **extra}, user=user,
                     group=group)
    assert res.status_code == 201, res.text
    return res.json


def deliveries(world, hook_id, **params):
    res = world.get(f"/api/v2/webhooks/{hook_id}/deliveries", user="ga", params=params or None)
    assert res.status_code == 200, res.text
    return res.json


def stored(world, kind):
    with world.ctx.storage.read() as tx:
        return tx.query(kind)


# -- subscriptions ---------------------------------------------------------------------------------

def test_crud_and_the_secret_is_never_shown(world, receiver):
    created = hook(world, receiver.url, events=["harness.*", "image.finished"])
    assert set(created) == {"id", "url", "events", "active", "created_by", "date_created", "date_modified"}
    assert created["active"] is True and created["created_by"] == "ga"
    assert created["events"] == ["harness.*", "image.finished"]
    hid = created["id"]
    listed = world.get("/api/v2/webhooks", user="ga")
    assert listed.json == [created] and listed.headers["X-Total-Count"] == "1"
    assert world.get(f"/api/v2/webhooks/{hid}", user="ga").json == created
    res = world.patch(f"/api/v2/webhooks/{hid}", {"active": False, "events": ["*"]}, user="ga")
    assert res.status_code == 200 and res.json["active"] is False and res.json["events"] == ["*"]
    assert res.json["date_modified"] >= created["date_modified"]
    for r in (listed, res):
        assert SECRET not in r.text
    assert world.delete(f"/api/v2/webhooks/{hid}", user="ga").status_code == 204
    assert world.get(f"/api/v2/webhooks/{hid}", user="ga").status_code == 404
    assert world.get("/api/v2/webhooks", user="ga").json == []
    assert world.patch(f"/api/v2/webhooks/{hid}", {"active": True}, user="ga").status_code == 404


def test_manage_group_is_needed_and_other_groups_see_nothing(world, receiver):
    h = hook(world, receiver.url)
    for user in ("priv", "mem", "guest"):
        assert world.get("/api/v2/webhooks", user=user).status_code == 403
        assert world.post("/api/v2/webhooks", {"url": receiver.url, "events": ["*"], "secret": SECRET},
                          user=user).status_code == 403
        assert world.get(f"/api/v2/webhooks/{h['id']}/deliveries", user=user).status_code == 403
    assert world.get(f"/api/v2/webhooks/{h['id']}", user="other", group="g2").status_code == 404
    assert world.delete(f"/api/v2/webhooks/{h['id']}", user="other", group="g2").status_code == 404
    assert world.get("/api/v2/webhooks", user="other", group="g2").json == []
    assert world.client.simulate_get("/api/v2/webhooks").status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://127.0.0.1/x"}, "url"),
    ({"url": "file:///etc/passwd"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"secret": "short-secret"}, "secret"),  # 12 characters
    ({"secret": 12345678901234567}, "secret"),
    ({"events": ["harness.exploded"]}, "events"),
    ({"events": ["foo.*"]}, "events"),  # a pattern that matches nothing
    ({"events": ["harness*"]}, "events"),
    ({"events": []}, "events"),
    ({"events": "harness.created"}, "events"),
    ({"events": ["harness.created"] * 10000}, "events"),
    ({"events": [1]}, "events"),
    ({"active": "yes"}, "active"),
    ({"id": "0d8b6e3c-1d2e-4f5a-8b9c-0123456789ab"}, "id"),
    ({"colour": "red"}, "colour"),
])
def test_bad_input_is_a_clear_400_and_changes_nothing(world, receiver, body, field):
    good = {"url": receiver.url, "events": ["*"], "secret": SECRET}
    res = world.post("/api/v2/webhooks", {**good, **body}, user="ga")
    assert res.status_code == 400, res.text
    assert list(res.json) == [field] and isinstance(res.json[field], list), res.json
    assert stored(world, WEBHOOK_KIND) == []
    h = hook(world, receiver.url)
    res = world.patch(f"/api/v2/webhooks/{h['id']}", body, user="ga")
    assert res.status_code == 400 and field in res.json
    assert world.get(f"/api/v2/webhooks/{h['id']}", user="ga").json == h


def test_missing_fields_and_non_objects(world):
    res = world.post("/api/v2/webhooks", {}, user="ga")
    assert res.status_code == 400 and set(res.json) == {"url", "events", "secret"}
    assert world.post("/api/v2/webhooks", [1], user="ga").status_code == 400
    assert stored(world, WEBHOOK_KIND) == []


# -- deliveries ------------------------------------------------------------------------------------

def test_a_change_is_delivered_signed_with_one_id_everywhere(world, receiver):
    h = hook(world, receiver.url, events=["harness.*"])
    created = world.post("/api/v2/harnesses", HARNESS, user="priv").json
    world.post("/api/v2/engines", {"name": "e1", "base_url": "http://127.0.0.1:9/"}, user="priv")  # not asked for
    metrics = CountingMetrics()
    assert loop(world, metrics=metrics).run_once() == 1
    (got,) = receiver.wait_for(1)
    assert got.path == "/hook"
    assert got.signed_with(SECRET) and not got.signed_with(SECRET + "x")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Xpresso-Event"] == "harness.created"
    body = got.json
    assert set(body) == {"id", "event", "at", "group", "data"}
    assert body["event"] == "harness.created" and body["group"] == "g1"
    assert body["data"] == created  # the v2 wire record after the change
    assert body["id"] == got.headers["X-Xpresso-Delivery"]
    (listed,) = deliveries(world, h["id"])
    assert listed["id"] == body["id"] and listed["status"] == "delivered" and listed["attempts"] == 1
    assert listed["last_status_code"] == 200 and listed["last_error"] is None
    assert set(listed) == {"id", "event", "status", "attempts", "last_status_code", "last_error", "date_created",
                           "date_delivered"}
    assert listed["date_delivered"] is not None
    assert metrics.results == ["delivered"]
    assert stored(world, OUTBOX_KIND) == []  # nothing left to do


def test_one_event_to_two_webhooks_is_two_deliveries(world, receiver):
    a = hook(world, receiver.url, events=["harness.created"])
    b = hook(world, receiver.url + "?b=1", events=["*"], secret="another-secret-of-24-chars")
    inactive = hook(world, receiver.url + "?c=1", active=False)
    hook(world, receiver.url + "?d=1", user="other", group="g2")  # another group's: hears nothing of g1
    gone = hook(world, receiver.url + "?e=1")
    world.delete(f"/api/v2/webhooks/{gone['id']}", user="ga")
    world.post("/api/v2/harnesses", HARNESS)
    loop(world).run_once()
    got = receiver.wait_for(2)
    assert len(got) == 2
    ids = {r.headers["X-Xpresso-Delivery"] for r in got}
    assert len(ids) == 2
    by_path = {r.path: r for r in got}
    assert by_path["/hook"].signed_with(SECRET) and by_path["/hook?b=1"].signed_with("another-secret-of-24-chars")
    assert [d["id"] for d in deliveries(world, a["id"])] == [by_path["/hook"].json["id"]]
    assert [d["id"] for d in deliveries(world, b["id"])] == [by_path["/hook?b=1"].json["id"]]
    assert deliveries(world, inactive["id"]) == []


def test_retries_back_off_keep_the_id_then_fail(world, receiver):
    h = hook(world, receiver.url)
    wall = FakeWall()
    metrics = CountingMetrics()
    worker = loop(world, wall=wall, metrics=metrics, retry_base_s=5.0, max_attempts=3)
    receiver.statuses = [500, 503]
    world.post("/api/v2/harnesses", HARNESS)
    assert worker.run_once() == 1  # 500
    (d,) = deliveries(world, h["id"])
    assert (d["status"], d["attempts"], d["last_status_code"], d["last_error"]) == ("pending", 1, 500, "HTTP 500")
    assert worker.run_once() == 0  # not due yet
    wall.now += 5.0
    assert worker.run_once() == 1  # 503, next in 10 s
    wall.now += 9.9
    assert worker.run_once() == 0
    wall.now += 0.1
    assert worker.run_once() == 1  # 200
    got = receiver.wait_for(3)
    assert len({r.headers["X-Xpresso-Delivery"] for r in got}) == 1
    assert len({r.body for r in got}) == 1  # the same bytes each time
    (d,) = deliveries(world, h["id"])
    assert (d["status"], d["attempts"], d["last_status_code"]) == ("delivered", 3, 200)
    assert metrics.results == ["retry", "retry", "delivered"]
    # a receiver that never says yes: failed after max_attempts
    receiver.statuses = [500] * 10
    world.post("/api/v2/harnesses", {**HARNESS, "name": "h2"})
    for _ in range(3):
        assert worker.run_once() == 1
        wall.now += 1000
    assert worker.run_once() == 0
    newest = deliveries(world, h["id"])[0]
    assert (newest["status"], newest["attempts"], newest["last_status_code"]) == ("failed", 3, 500)
    assert metrics.results[-3:] == ["retry", "retry", "failed"]
    assert [d["status"] for d in deliveries(world, h["id"], status="failed")] == ["failed"]


def test_deliveries_of_one_webhook_arrive_in_event_order(world, receiver):
    h = hook(world, receiver.url)
    other = Receiver()
    with other:
        hook(world, other.url)
        wall = FakeWall()
        worker = loop(world, wall=wall, retry_base_s=5.0)
        receiver.statuses = [500]  # the first event fails once at the first receiver
        rec = world.post("/api/v2/harnesses", HARNESS).json
        world.patch(f"/api/v2/harnesses/{rec['id']}", {"site": "LON"})
        world.delete(f"/api/v2/harnesses/{rec['id']}")
        worker.run_once()
        # the first receiver got only the first event (it failed; the others wait behind it); the
        # second receiver, another webhook, was not held up
        assert receiver.events() == ["harness.created"]
        assert other.events(other.wait_for(3)) == ["harness.created", "harness.updated", "harness.deleted"]
        wall.now += 5.0
        worker.run_once()
        assert receiver.events(receiver.wait_for(4)) == ["harness.created", "harness.created", "harness.updated",
                                                         "harness.deleted"]
    assert [d["event"] for d in deliveries(world, h["id"])] == ["harness.deleted", "harness.updated",
                                                                "harness.created"]  # newest first


def test_redeliver_sends_the_same_delivery_again(world, receiver):
    h = hook(world, receiver.url)
    world.post("/api/v2/harnesses", HARNESS)
    worker = loop(world)
    worker.run_once()
    (first,) = receiver.wait_for(1)
    (d,) = deliveries(world, h["id"])
    res = world.post(f"/api/v2/webhooks/{h['id']}/deliveries/{d['id']}/redeliver", user="ga")
    assert res.status_code == 202 and res.json["id"] == d["id"] and res.json["status"] == "pending"
    worker.run_once()
    second = receiver.wait_for(2)[1]
    assert second.body == first.body and second.headers["X-Xpresso-Delivery"] == d["id"]
    (d,) = deliveries(world, h["id"])
    assert d["status"] == "delivered" and d["attempts"] == 1
    bad = "0d8b6e3c-1d2e-4f5a-8b9c-0123456789ab"
    assert world.post(f"/api/v2/webhooks/{h['id']}/deliveries/{bad}/redeliver", user="ga").status_code == 404
    other = hook(world, receiver.url + "?x")
    assert world.post(f"/api/v2/webhooks/{other['id']}/deliveries/{d['id']}/redeliver",
                      user="ga").status_code == 404
    assert world.post(f"/api/v2/webhooks/{h['id']}/deliveries/{d['id']}/redeliver",
                      user="priv").status_code == 403


def test_a_refused_write_queues_nothing(world, receiver):
    hook(world, receiver.url)
    world.post("/api/v2/harnesses", HARNESS)
    before = (stored(world, DELIVERY_KIND), stored(world, OUTBOX_KIND))
    assert world.post("/api/v2/harnesses", HARNESS).status_code == 409  # the name is taken
    assert world.post("/api/v2/harnesses", {"name": "x"}).status_code == 400
    assert (stored(world, DELIVERY_KIND), stored(world, OUTBOX_KIND)) == before


def test_a_deleted_webhook_fails_its_pending_deliveries(world, receiver):
    h = hook(world, receiver.url)
    world.post("/api/v2/harnesses", HARNESS)
    world.delete(f"/api/v2/webhooks/{h['id']}", user="ga")
    assert loop(world).run_once() == 0
    assert receiver.received == [] and stored(world, OUTBOX_KIND) == []


# -- allow_private ---------------------------------------------------------------------------------

def test_allow_private_false_refuses_at_create_and_at_delivery(make_world, settings, receiver):
    strict = dataclasses.replace(settings, events=dataclasses.replace(settings.events, allow_private=False))
    world = make_world(settings_override=strict)
    for url in (receiver.url, f"http://localhost:{receiver.port}/hook", "http://10.1.2.3/x",
                "http://169.254.169.254/latest", "http://[::1]:80/", "http://0.0.0.0/"):
        res = world.post("/api/v2/webhooks", {"url": url, "events": ["*"], "secret": SECRET}, user="ga")
        assert res.status_code == 400 and "url" in res.json, (url, res.text)
        assert "allow_private" in res.json["url"][0]
    assert stored(world, WEBHOOK_KIND) == []
    # A webhook saved while private addresses were allowed, to a name that resolves (by DNS, at
    # delivery time) to loopback: refused when delivering, nothing sent.
    lenient = make_world()  # a second app on the same store, with the default allow_private: true
    lenient.tokens = world.tokens
    h = hook(lenient, f"http://localhost:{receiver.port}/hook")
    lenient.post("/api/v2/harnesses", HARNESS)
    worker = loop(world, allow_private=False, max_attempts=1)
    assert worker.run_once() == 1
    assert receiver.received == []
    (d,) = deliveries(lenient, h["id"])
    assert d["status"] == "failed" and d["last_status_code"] is None
    assert "localhost" in d["last_error"] and "allow_private" in d["last_error"]


# -- slots, processes ------------------------------------------------------------------------------

def test_a_hanging_receiver_holds_a_delivery_slot_not_a_request(make_world, settings, receiver):
    world = make_world(settings_override=dataclasses.replace(
        settings, events=dataclasses.replace(settings.events, timeout_s=30.0, concurrency=2, poll_s=0.05)))
    hook(world, receiver.url)
    receiver.hang.set()
    world.ctx.deliveries.dispatcher.start()
    try:
        assert world.post("/api/v2/harnesses", HARNESS).status_code == 201
        receiver.wait_for(1)
        assert receiver.hanging == 1  # the receiver holds the delivery...
        for n in range(5):  # ...while requests go on being answered
            assert world.post("/api/v2/harnesses", {**HARNESS, "name": f"more-{n}"}).status_code == 201
            assert world.get("/api/v2/harnesses").status_code == 200
        assert receiver.hanging == 1 and not receiver.release.is_set()
    finally:
        receiver.release.set()
        receiver.wait_for(6)  # then the others follow, in order
        world.ctx.deliveries.dispatcher.stop()
    assert receiver.events()[:6] == ["harness.created"] * 6


def test_timeout_is_a_failed_attempt(world, receiver):
    h = hook(world, receiver.url)
    receiver.hang.set()
    world.post("/api/v2/harnesses", HARNESS)
    worker = loop(world, timeout_s=0.5, max_attempts=1)
    worker.run_once()
    receiver.release.set()
    (d,) = deliveries(world, h["id"])
    assert d["status"] == "failed" and d["last_error"] == "timed out after 0.5 s"


def test_two_delivery_loops_deliver_each_event_once(make_world, receiver):
    world = make_world()
    second = make_world()  # another backend object on the same store, as another process has
    hook(world, receiver.url)
    for n in range(20):
        world.post("/api/v2/harnesses", {**HARNESS, "name": f"h{n}"})
    workers = [loop(world, worker_id=None), DeliveryService(second.ctx.storage, world.ctx.settings.events,
                                                             second.ctx.clock, wall=FakeWall(),
                                                             worker_id=new_worker_id())]
    threads = [threading.Thread(target=w.run_once) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for w in workers:  # whatever one left claimed-and-finished, the other picks up
        w.run_once()
    got = receiver.wait_for(20)
    ids = [r.headers["X-Xpresso-Delivery"] for r in got]
    assert len(ids) == len(set(ids)) == 20
    names = [r.json["data"]["name"] for r in got]
    assert names == [f"h{n}" for n in range(20)]  # one webhook: in event order, across both loops


def test_an_expired_claim_is_taken_over(world, receiver):
    """A process that claimed a delivery and died: its lease runs out, another delivers it."""
    hook(world, receiver.url)
    world.post("/api/v2/harnesses", HARNESS)
    wall = FakeWall()
    dead = loop(world, wall=wall)
    assert len(dead.claim(10)) == 1  # claimed, never attempted
    alive = loop(world, wall=wall)
    assert alive.run_once() == 0  # the claim holds
    wall.now += world.ctx.settings.events.timeout_s + world.ctx.settings.events.lease_s + 1
    assert alive.run_once() == 1
    assert len(receiver.wait_for(1)) == 1


def test_the_defaults_are_the_contract(world):
    events = world.ctx.settings.events
    assert (events.timeout_s, events.retry_base_s, events.max_attempts, events.allow_private) == (10.0, 5.0, 8, True)
    assert world.ctx.settings.history.retention_days == 90


def test_a_dribbling_receiver_is_cut_off_at_the_timeout(world):
    """A receiver that sends a byte now and then never trips a socket timeout; the attempt still
    ends at events.timeout_s (without the watchdog this one would succeed after ~20 s)."""
    import socket as socketlib

    listener = socketlib.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ in range(100):
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        h = hook(world, f"http://127.0.0.1:{listener.getsockname()[1]}/slow")
        world.post("/api/v2/harnesses", HARNESS)
        loop(world, timeout_s=1.0, max_attempts=1).run_once()
        (d,) = deliveries(world, h["id"])
        assert d["status"] == "failed" and d["last_error"] == "timed out after 1 s"
    finally:
        stop.set()
        listener.close()
        thread.join(10)
