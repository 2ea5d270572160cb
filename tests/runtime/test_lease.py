"""The one lease (xpresso_env/runtime/lease.py): its rules, its stored time, and, for every user of
it (the build queue, the probe claims, the webhook outbox, the queue-depth gauge), that an expired
claim is taken over and a live one is not, through that user's own code on a real (SQLite) store,
whether the claim was written by this version or by an earlier one (ISO text, float seconds)."""
from __future__ import annotations

import socket
import subprocess
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from falcon.testing import TestClient

from tests.conftest import World, make_settings, seed
from xpresso_env.app import build_context, create_app
from xpresso_env.core.codec import to_doc
from xpresso_env.core.metrics import NullMetrics
from xpresso_env.core.models import Image, ImageStatus
from xpresso_env.core.timeutil import format_time
from xpresso_env.journal.delivery import DeliveryService
from xpresso_env.journal.journal import OUTBOX_KIND
from xpresso_env.probes.state import STATE_KIND
from xpresso_env.runtime import lease
from xpresso_env.runtime.lease import Claim, Identity
from xpresso_env.runtime.prometheus import StorageGauges

T0 = datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=timezone.utc)
NOW = lease.micros(T0)
HERE = Identity(host="build-1", boot="boot-a", pidns="pid:[4026531836]", pid=100)


# --------------------------------------------------------------------------- the rules


def test_claim_renew_release_and_expiry():
    held = lease.claim("w1", NOW, 30)
    assert held == Claim("w1", NOW + 30_000_000)
    assert not held.expired(NOW) and not held.expired(NOW + 29_999_999)
    assert held.expired(NOW + 30_000_000)  # an expiry is the first instant the claim no longer holds
    assert lease.renew(held, NOW + 20_000_000, 30).until == NOW + 50_000_000
    assert held.fields() == {"claimed_by": "w1", "lease_until": NOW + 30_000_000}
    assert lease.release() == {"claimed_by": None, "lease_until": None}
    assert lease.read(**lease.release()) is None


def test_renewal_is_due_once_a_third_of_the_lease_is_used():
    held = lease.claim("w1", NOW, 30)
    assert not held.due_for_renewal(NOW + 9_999_999, 30)
    assert held.due_for_renewal(NOW + 10_000_000, 30)


def test_takeover():
    live, gone = lease.claim("w1", NOW, 30), lease.claim("w1", NOW - 31_000_000, 30)
    assert lease.takeable(None, NOW)  # nobody holds it
    assert not lease.takeable(live, NOW) and lease.takeable(gone, NOW)
    assert lease.takeable(live, NOW, by="w1") and not lease.takeable(live, NOW, by="w2")
    assert lease.takeable(lease.read("w1", None), NOW)  # an owner without an expiry holds nothing


def test_a_dead_owner_is_one_of_this_machine_whose_pid_is_gone():
    def alive(pid: int) -> bool:
        return pid != 200

    dead = lease.claim("w1", NOW, 3600, replace(HERE, pid=200))
    assert dead.dead_owner(HERE, alive)
    assert not lease.claim("w1", NOW, 3600, replace(HERE, pid=300)).dead_owner(HERE, alive)  # still runs
    assert not lease.claim("w1", NOW, 3600, HERE).dead_owner(HERE, lambda pid: False)  # ourselves
    for other in (replace(HERE, host="build-2"), replace(HERE, boot="boot-b"), replace(HERE, pidns="pid:[1]"),
                  replace(HERE, boot="")):
        assert not lease.claim("w1", NOW, 3600, replace(other, pid=200)).dead_owner(HERE, alive), other
    assert not lease.claim("w1", NOW, 3600).dead_owner(HERE, alive)  # no identity stored: expiry only


def test_takeable_tells_a_dead_owner_only_when_asked_where_it_runs():
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid of this machine that no longer runs
    here = Identity.here()
    dead = lease.claim("w1", NOW, 3600, replace(here, pid=gone.pid))
    assert lease.takeable(dead, NOW, here=here)
    assert not lease.takeable(dead, NOW)  # the gauge's rule: the same on every machine
    assert not lease.takeable(lease.claim("w1", NOW, 3600, here), NOW, here=here)  # this very process


def test_identity_round_trips_through_worker_meta():
    here = Identity.here()
    assert here.pid is not None and here.host == socket.gethostname()
    assert Identity.from_meta({"worker_id": "w", "claimed_at": "x", **here.as_meta()}) == here
    assert Identity.from_meta(None) == Identity("", "", "", None)
    assert Identity.from_meta({"pid": "12"}).pid is None  # not an int: no pid to look at


def test_worker_ids_say_where_and_are_unique():
    a, b = lease.worker_id(), lease.worker_id()
    host, pid, _ = a.split(":")
    assert a != b and host == socket.gethostname() and int(pid) == Identity.here().pid


def test_the_stored_time_round_trips_exactly():
    for at in (T0, T0.replace(microsecond=0), T0 + timedelta(microseconds=1),
               datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
               datetime(2400, 2, 29, tzinfo=timezone.utc)):
        assert lease.from_micros(lease.micros(at)) == at
        assert type(lease.micros(at)) is int
    assert lease.micros(T0.replace(tzinfo=None)) == NOW  # a naive time is UTC
    assert lease.micros(T0.astimezone(timezone(timedelta(hours=-5)))) == NOW
    assert lease.epoch_micros(T0.timestamp()) == NOW


@pytest.mark.parametrize("stored, expected", [
    (NOW, NOW),  # this version
    (format_time(T0), NOW),  # builds and probe states before: ISO text
    ("2026-12-07T09:30:15.123456+00:00", NOW),
    (T0.timestamp(), NOW),  # the webhook outbox before: float seconds
    (0.0, 0),
    (T0, NOW),  # a record made in memory
    (None, None),
    ("not a time", 0), (True, 0), ([1], 0),  # no version wrote these: expired
])
def test_every_stored_form_is_read(stored, expected):
    assert lease.read_until(stored) == expected


# --------------------------------------------------------------------------- the users


def until_in(form: str, until: int) -> Any:
    """An expiry as this version stores it, or as the previous version did for that user."""
    if form == "micros":
        return until
    if form == "text":
        return format_time(lease.from_micros(until))
    assert form == "seconds"
    return until / 1_000_000


class Clock:
    def __init__(self, at: datetime = T0):
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def make_ctx(tmp_path: Path):
    made = []

    def make(**kwargs):
        extra = kwargs.pop("extra", None)
        ctx = build_context(make_settings(tmp_path, "sqlite", extra=extra), check_schema=False, **kwargs)
        ctx.storage.init()
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def _building(name: str, claimed_by: Any = None, lease_until: Any = None, **changes) -> Image:
    return Image(id=uuid.uuid4(), group="g1", name=name, tag="v1", git_ref="main", submitter="admin",
                 nfs_path=f"/nfs/{name}.tar", retention_day=6, date_created=T0, date_updated=T0,
                 claimed_by=claimed_by, attempts=1 if claimed_by else 0, **changes)


def _store_images(ctx, images: list[Image], lease_untils: list[Any]) -> None:
    """Write images with their expiry stored as given (the raw document, as an older version left it)."""
    with ctx.storage.write() as tx:
        for image, until in zip(images, lease_untils):
            doc = to_doc(image)
            tx.insert(replace(doc, body={**doc.body, "lease_until": until}))


@pytest.mark.parametrize("form", ["micros", "text"])
def test_builds_take_over_an_expired_claim_and_leave_a_live_one(make_ctx, form):
    ctx = make_ctx(images=True, lease_clock=Clock())
    gone = _building("gone", claimed_by="host-b:1:aaaa/w0")
    live = _building("live", claimed_by="host-b:2:bbbb/w0")
    _store_images(ctx, [gone, live], [until_in(form, NOW - 1), until_in(form, NOW + 60_000_000)])
    claimed = ctx.images.queue.claim_next("test/w0")
    assert claimed is not None and claimed.id == gone.id and claimed.claimed_by == "test/w0"
    assert claimed.attempts == 2 and claimed.lease_until == NOW + lease.span(ctx.settings.builds.lease_s)
    assert ctx.images.queue.claim_next("test/w1") is None, "a live claim is left alone"
    with ctx.storage.read() as tx:
        stored = tx.get(Image.KIND, str(gone.id)).body
    assert stored["lease_until"] == claimed.lease_until  # written in this version's form


def test_builds_take_over_a_dead_owner_of_this_machine_before_its_lease_ends(make_ctx):
    ctx = make_ctx(images=True, lease_clock=Clock())
    gone = subprocess.Popen(["true"])
    gone.wait()
    meta = {"worker_id": "x/w0", **replace(Identity.here(), pid=gone.pid).as_meta()}
    dead = _building("dead", claimed_by="x/w0", worker_meta=meta)
    _store_images(ctx, [dead], [format_time(T0 + timedelta(hours=1))])
    claimed = ctx.images.queue.claim_next("test/w0")
    assert claimed is not None and claimed.id == dead.id


@pytest.mark.parametrize("form", ["micros", "text"])
def test_probes_take_over_an_expired_claim_and_leave_a_live_one(make_ctx, form):
    clock = Clock(datetime.now(timezone.utc))  # the tokens are checked against the real time
    t0, now = clock.at, lease.micros(clock.at)
    ctx = make_ctx(images=False, clock=clock, extra={"probes": {"enabled": True, "timeout_s": 2.0, "lease_s": 20}})
    w = World(ctx=ctx, client=create_app_client(ctx), tokens=seed(ctx))
    port = _free_port()
    ids = [w.post("/api/v2/engines", {"name": name, "base_url": f"http://127.0.0.1:{port}"}).json["id"]
           for name in ("gone", "live")]
    assert len(ctx.probes.run_due()) == 2  # probed once: each has its probe_state document
    with ctx.storage.write() as tx:  # another process claimed both; one of them died
        for record_id, until in zip(ids, (now - 1, now + 60_000_000)):
            doc = tx.get(STATE_KIND, record_id, lock=True)
            tx.update(replace(doc, body={**doc.body, "claimed_by": "host-b:1:cccc", "next_at": None,
                                         "lease_until": until_in(form, until)}))
    step = ctx.probes.claims.transact([], {record_id: "engine" for record_id in ids}, t0, False, None)
    assert [job.record_id for job in step.jobs] == [ids[0]], "the expired claim only"
    assert step.moves[ids[1]] == t0 + timedelta(seconds=60)  # looked at again when the live one ends
    ctx.probes.claims.release([ids[0]])
    clock.at = t0 + timedelta(seconds=1)
    assert [o.name for o in ctx.probes.run_due()] == ["gone"]  # the scheduler's own round agrees


@pytest.mark.parametrize("form", ["micros", "seconds"])
def test_deliveries_take_over_an_expired_claim_and_leave_a_live_one(make_ctx, form):
    ctx = make_ctx(images=False)
    w = World(ctx=ctx, client=create_app_client(ctx), tokens=seed(ctx))
    for n in (1, 2):  # two webhooks: each has its head entry
        r = w.post("/api/v2/webhooks", {"url": f"http://127.0.0.1:{_free_port()}/{n}", "events": ["*"],
                                        "secret": "a-secret-of-24-characters"}, user="ga")
        assert r.status_code == 201, r.text
    w.post("/api/v2/harnesses", {"name": "h1", "path": "/opt/pyats"})
    assert ctx.deliveries.fan_out() == 2  # the one stored event: a delivery and an outbox entry per webhook
    with ctx.storage.write() as tx:
        entries = sorted(tx.query(OUTBOX_KIND), key=lambda d: d.id)
        assert len(entries) == 2
        for doc, until in zip(entries, (NOW - 1, NOW + 60_000_000)):
            claim = {"claimed_by": "host-b:1:dddd", "lease_until": until_in(form, until)}
            tx.update(replace(doc, body={**doc.body, **claim}))
    wall = T0.timestamp()
    service = DeliveryService(ctx.storage, ctx.settings.events, ctx.clock, NullMetrics(), wall=lambda: wall,
                              worker_id="test")
    claimed = service.claim(10)
    assert [d.id for d in claimed] == [entries[0].id], "the expired claim only"
    settings = ctx.settings.events
    assert claimed[0].body["lease_until"] == NOW + lease.span(settings.timeout_s + settings.lease_s)
    assert service.claim(10) == []  # now ours, and live


@pytest.mark.parametrize("form", ["micros", "text"])
def test_the_queue_depth_gauge_counts_an_expired_claim_and_not_a_live_one(make_ctx, form):
    ctx = make_ctx(images=False)
    images = [_building("free"), _building("gone", claimed_by="w-1"), _building("live", claimed_by="w-2"),
              _building("done", claimed_by=None, status=ImageStatus.SUCCESSFUL)]
    _store_images(ctx, images, [None, until_in(form, NOW - 1), until_in(form, NOW + 60_000_000), None])
    depth = [m for m in StorageGauges(ctx.storage, Clock()).collect() if m.name == "xpresso_build_queue_depth"]
    assert [s.value for s in depth[0].samples] == [2]  # free and gone: waiting for a worker


# --------------------------------------------------------------------------- helpers


def create_app_client(ctx) -> TestClient:
    return TestClient(create_app(ctx))


def _free_port() -> int:
    """A loopback port where nothing listens (just released): probes and deliveries fail fast."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port



def test_read_fields_reads_what_claim_fields_and_release_write():
    held = lease.claim("w1", 5 * 1_000_000, 30)
    assert lease.read_fields({"other": 1, **held.fields()}) == lease.Claim(owner="w1", until=held.until)
    assert lease.read_fields(lease.release()) is None
    assert lease.read_fields({}) is None
