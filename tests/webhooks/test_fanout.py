"""Bounded fan-out (CONTRACT section 16): at most ``events.max_webhooks_per_group`` live webhooks
per group, one stored event per write however many webhooks ask for it (fanned out to deliveries
by the delivery loop, off the write path), and old finished deliveries and spent outbox entries
swept after ``events.deliveries_retention_days``. Every storage backend (the ``world`` fixture)."""
from __future__ import annotations

import dataclasses
import threading
import time
from datetime import datetime, timedelta, timezone

from xpresso_env.core.metrics import NullMetrics
from xpresso_env.journal.delivery import DeliveryService
from xpresso_env.journal.journal import (
    DELIVERY_KIND,
    EVENT_KIND,
    OUTBOX_KIND,
    QUEUE_KIND,
    SUBSCRIPTIONS_KIND,
    outbox_id,
    subscriptions,
)
from xpresso_env.journal.retention import DeliveryRetention
from xpresso_env.runtime.lease import worker_id
from xpresso_env.storage import Doc

from .receiver import Receiver

SECRET = "a-secret-of-24-characters"


def _hook(world, url: str, group: str = "g1", user: str = "ga"):
    return world.post("/api/v2/webhooks", {"url": url, "events": ["harness.*"], "secret": SECRET}, user=user,
                      group=group)


def _stored(world, kind: str) -> list[Doc]:
    with world.ctx.storage.read() as tx:
        return tx.query(kind)


def _strict_world(make_world, settings, **events):
    return make_world(settings_override=dataclasses.replace(
        settings, events=dataclasses.replace(settings.events, **events)))


def test_the_defaults_are_the_contract(world):
    events = world.ctx.settings.events
    assert (events.max_webhooks_per_group, events.deliveries_retention_days, events.deliver) == (25, 7, True)


def test_a_group_has_at_most_max_webhooks_per_group_live_webhooks(make_world, settings):
    world = _strict_world(make_world, settings, max_webhooks_per_group=3)
    made = [_hook(world, f"http://127.0.0.1:9/{n}") for n in range(3)]
    assert [r.status_code for r in made] == [201, 201, 201]
    world.patch(f"/api/v2/webhooks/{made[0].json['id']}", {"active": False}, user="ga")  # inactive: still live
    before = _stored(world, "webhook")
    one_more = _hook(world, "http://127.0.0.1:9/3")
    assert one_more.status_code == 409, one_more.text
    assert list(one_more.json) == ["detail"] and "max_webhooks_per_group" in one_more.json["detail"]
    assert _stored(world, "webhook") == before  # nothing written
    assert _hook(world, "http://127.0.0.1:9/g2", group="g2", user="other").status_code == 201  # per group
    assert world.delete(f"/api/v2/webhooks/{made[1].json['id']}", user="ga").status_code == 204
    assert _hook(world, "http://127.0.0.1:9/again").status_code == 201  # a deleted one frees its place


def test_a_write_stores_one_event_and_the_delivery_loop_fans_it_out(world):
    hooks = [_hook(world, f"http://127.0.0.1:9/{n}").json["id"] for n in range(5)]
    world.post("/api/v2/webhooks", {"url": "http://127.0.0.1:9/img", "events": ["image.*"], "secret": SECRET},
               user="ga")  # asks for something else: not in the event
    assert world.post("/api/v2/harnesses", {"name": "h1", "path": "/opt/pyats"}).status_code == 201
    (event,) = _stored(world, EVENT_KIND)  # one, whatever the number of webhooks
    assert event.body["event"] == "harness.created" and sorted(event.body["webhooks"]) == sorted(hooks)
    assert _stored(world, DELIVERY_KIND) == [] and _stored(world, OUTBOX_KIND) == []
    assert world.ctx.deliveries.fan_out() == 5
    assert _stored(world, EVENT_KIND) == []
    deliveries = _stored(world, DELIVERY_KIND)
    assert sorted(d.group for d in deliveries) == sorted(hooks) and len(_stored(world, OUTBOX_KIND)) == 5
    assert {d.body["data"]["name"] for d in deliveries} == {"h1"}
    assert world.ctx.deliveries.fan_out() == 0  # each event once


def test_a_write_with_no_webhook_asking_stores_no_event(world):
    world.post("/api/v2/webhooks", {"url": "http://127.0.0.1:9/img", "events": ["image.*"], "secret": SECRET},
               user="ga")
    world.post("/api/v2/harnesses", {"name": "h1", "path": "/opt/pyats"})
    assert _stored(world, EVENT_KIND) == []


def test_two_delivery_loops_fan_each_event_out_once_in_order(make_world):
    world = make_world()
    second = make_world()  # another process's view of the same store
    hook_id = _hook(world, "http://127.0.0.1:9/x").json["id"]
    for n in range(6):
        world.post("/api/v2/harnesses", {"name": f"h{n}", "path": "/opt/pyats"})
    assert world.ctx.deliveries.fan_out() + second.ctx.deliveries.fan_out() == 6
    with world.ctx.storage.read() as tx:
        queue = tx.get(QUEUE_KIND, hook_id)
        names = [tx.get(DELIVERY_KIND, tx.get(OUTBOX_KIND, outbox_id(hook_id, n)).body["delivery_id"])
                 .body["data"]["name"] for n in range(queue.body["head"], queue.body["tail"])]
    assert names == [f"h{n}" for n in range(6)]  # the webhook's queue keeps event order


def test_old_finished_deliveries_and_spent_outbox_entries_are_swept(world):
    now = datetime.now(timezone.utc)
    with Receiver() as receiver:
        kept = _hook(world, receiver.url).json["id"]
        gone = _hook(world, "http://127.0.0.1:9/gone").json["id"]
        world.post("/api/v2/harnesses", {"name": "h1", "path": "/opt/pyats"})
        loop = DeliveryService(world.ctx.storage, world.ctx.settings.events, world.ctx.clock, NullMetrics(),
                               worker_id=worker_id())
        loop.fan_out()
        with world.ctx.storage.write() as tx:  # the dead receiver's delivery is not attempted here
            queue = tx.get(QUEUE_KIND, gone)
            entry = tx.get(OUTBOX_KIND, outbox_id(gone, 0))
            tx.update(dataclasses.replace(entry, body={**entry.body, "next_at": 1e12}))
        assert loop.run_once() == 1
        receiver.wait_for(1)
    world.post("/api/v2/harnesses", {"name": "h2", "path": "/opt/pyats"})  # pending, whatever its age
    loop.fan_out()
    with world.ctx.storage.write() as tx:  # an entry left behind its queue's head (made, not removed)
        tx.insert(Doc(kind=OUTBOX_KIND, id=outbox_id(kept, 0), group=None, name=None, deleted=False,
                      created=queue.created, body={"webhook_id": kept, "delivery_id": "x", "n": 0, "next_at": 0.0}))
    world.delete(f"/api/v2/webhooks/{gone}", user="ga")  # its pending deliveries fail
    statuses = sorted(d.body["status"] for d in _stored(world, DELIVERY_KIND))
    assert statuses == ["delivered", "failed", "failed", "pending"]

    settings = world.ctx.settings.events
    assert DeliveryRetention(world.ctx.storage, lambda: now + timedelta(days=6), settings.deliveries_retention_days,
                             3600.0).sweep() == 1  # only the spent outbox entry: nothing finished is 7 days old
    assert _stored(world, OUTBOX_KIND)[0].id == outbox_id(kept, 1)  # h2's, still to be made
    sweep = DeliveryRetention(world.ctx.storage, lambda: now + timedelta(days=8), settings.deliveries_retention_days,
                              3600.0)
    assert sweep.sweep() == 3
    (left,) = _stored(world, DELIVERY_KIND)
    assert left.body["status"] == "pending" and left.body["data"]["name"] == "h2"
    assert len(_stored(world, OUTBOX_KIND)) == 1 and sweep.sweep() == 0


def test_a_write_reads_the_groups_subscriptions_and_they_follow_every_webhook_change(world):
    """One document per group says what its live webhooks ask for: created, changed and deleted
    webhooks are in it at once; a store without it (older, imported) is read the long way."""
    a = _hook(world, "http://127.0.0.1:9/a").json["id"]
    b = _hook(world, "http://127.0.0.1:9/b").json["id"]
    world.patch(f"/api/v2/webhooks/{b}", {"events": ["engine.*"]}, user="ga")
    c = _hook(world, "http://127.0.0.1:9/c").json["id"]
    world.patch(f"/api/v2/webhooks/{c}", {"active": False}, user="ga")
    with world.ctx.storage.read() as tx:
        listed = {h["id"]: (h["events"], h["active"]) for h in subscriptions(tx, "g1")}
    assert listed == {a: (["harness.*"], True), b: (["engine.*"], True), c: (["harness.*"], False)}
    world.delete(f"/api/v2/webhooks/{a}", user="ga")
    world.post("/api/v2/harnesses", {"name": "h1", "path": "/opt/pyats"})
    world.post("/api/v2/engines", {"name": "e1", "base_url": "https://ci.example.com/"})
    assert [e.body["webhooks"] for e in _stored(world, EVENT_KIND)] == [[b]]  # the engine's event, to b only
    with world.ctx.storage.write() as tx:  # a store from before the subscriptions document
        tx.purge(SUBSCRIPTIONS_KIND, "g1")
    world.post("/api/v2/engines", {"name": "e2", "base_url": "https://ci.example.com/"})
    assert [e.body["webhooks"] for e in _stored(world, EVENT_KIND)] == [[b], [b]]


def test_events_are_fanned_out_while_every_delivery_slot_is_held(make_world, settings):
    """A hanging receiver holds the only slot: later writes still become pending deliveries."""
    world = _strict_world(make_world, settings, timeout_s=30.0, concurrency=1, poll_s=0.05)
    with Receiver() as receiver:
        hook_id = _hook(world, receiver.url).json["id"]
        receiver.hang.set()
        world.ctx.deliveries.dispatcher.start()
        try:
            world.post("/api/v2/harnesses", {"name": "h0", "path": "/opt/pyats"})
            receiver.wait_for(1)  # the slot is held from now on
            world.post("/api/v2/harnesses", {"name": "h1", "path": "/opt/pyats"})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _stored(world, EVENT_KIND):
                time.sleep(0.05)
            listed = world.get(f"/api/v2/webhooks/{hook_id}/deliveries", user="ga").json
            assert [d["status"] for d in listed] == ["pending", "pending"] and receiver.hanging == 1
        finally:
            receiver.release.set()
            world.ctx.deliveries.dispatcher.stop()


def test_creates_at_once_never_pass_the_bound(make_world, settings):
    """Eight creates at once from two servers' contexts on one store: exactly the bound succeed."""
    world = _strict_world(make_world, settings, max_webhooks_per_group=3)
    other = make_world(settings_override=world.ctx.settings)  # another process's view of the store
    other.tokens = world.tokens
    results: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def create(n: int) -> None:
        start.wait()
        status = _hook((world, other)[n % 2], f"http://127.0.0.1:9/{n}").status_code
        with lock:
            results.append(status)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] * 3 + [409] * 5
    with world.ctx.storage.read() as tx:
        assert len(subscriptions(tx, "g1")) == 3
