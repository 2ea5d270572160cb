"""The retention sweep purges what storage would otherwise keep for good, on every selected
storage backend: the build logs of deleted images once the image's retention has passed since
the deletion (kept while the image is live, whatever its status), and Idempotency-Key records
older than 24 h. Builds run for real with the dry-run builder (real git, a real tar)."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional

from tests.images.conftest import FakeClock
from xpresso_env.builds import idempotency
from xpresso_env.builds import log as build_log
from xpresso_env.core.codec import from_doc, to_doc
from xpresso_env.core.timeutil import format_time

BUILD = "/api/v2/images/polaris_build"


def _world(make_world, settings, polaris, clock):
    s = replace(settings, polaris=replace(settings.polaris, repo=str(polaris.path)),
                builder=replace(settings.builder, backend="dry-run"),
                builds=replace(settings.builds, lease_s=6.0),
                images=replace(settings.images, retention_days=6))
    w = make_world(images=True, settings_override=s, clock=clock, poll_s=0.2)
    w.ctx.start()
    return w


def _wait(w, image_id: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        rec = w.get(f"/api/v2/images/{image_id}").json
        if rec["status"] != "building":
            return rec
        assert time.monotonic() < deadline, f"{image_id} still building"
        time.sleep(0.05)


def _submit(w, tag: str, git_ref: str = "main", key: Optional[str] = None) -> dict:
    headers = w.headers("mem", "g1", **({"Idempotency-Key": key} if key else {}))
    r = w.client.simulate_post(BUILD, json={"name": "polaris", "tag": tag, "git_ref": git_ref}, headers=headers)
    assert r.status_code == 200, r.text
    return _wait(w, r.json["uuid"])


def _chunks(w, image_id: str) -> int:
    with w.ctx.storage.read() as tx:
        n = 0
        while tx.get(build_log.KIND, build_log.chunk_id(image_id, n)) is not None:
            n += 1
        return n


def _log(w, image_id: str) -> str:
    r = w.get(f"/api/v2/images/{image_id}/logs")
    assert r.status_code == 200
    return r.text


def test_the_sweep_purges_logs_of_deleted_images_past_retention(make_world, settings, polaris):
    clock = FakeClock()
    w = _world(make_world, settings, polaris, clock)
    swept = _submit(w, "swept")
    failed = _submit(w, "failed", git_ref="no-such-ref")
    kept = _submit(w, "kept")
    assert swept["status"] == kept["status"] == "successful" and failed["status"] == "failed"
    clock.advance(days=3)
    deleted = _submit(w, "deleted")
    assert w.delete(f"/api/v2/images/{deleted['uuid']}").status_code == 204
    assert w.patch(f"/api/v2/images/{kept['uuid']}", {"pin_version": True}, user="mem").status_code == 200
    for rec in (swept, failed, kept, deleted):
        assert _chunks(w, rec["uuid"]) >= 1 and "queued: polaris:" in _log(w, rec["uuid"])

    clock.advance(days=3, minutes=1)  # swept: past its retention, its tar goes; its log stays
    assert [str(i.image.id) for i in w.ctx.images.sweep() if i.removed] == [swept["uuid"]]
    assert w.get(f"/api/v2/images/{swept['uuid']}").json["is_deleted"] is True
    assert "successful: polaris:swept" in _log(w, swept["uuid"]), "a swept image's log is still shown"
    assert "successful: polaris:deleted" in _log(w, deleted["uuid"]), "a deleted image's log too, for a while"

    clock.advance(days=3)  # deleted: 6 days and a minute after its DELETE, past its retention
    w.ctx.images.sweep()
    assert _chunks(w, deleted["uuid"]) == 0 and _log(w, deleted["uuid"]) == ""
    gone = w.get(f"/api/v2/images/{deleted['uuid']}").json
    assert gone["is_deleted"] is True and gone["meta"]["log_removed_at"] == format_time(clock.now)
    assert _chunks(w, swept["uuid"]) >= 1, "swept 3 days ago: its log is kept 3 more days"

    clock.advance(days=3)
    w.ctx.images.sweep()
    assert _chunks(w, swept["uuid"]) == 0 and _log(w, swept["uuid"]) == ""
    assert "log_removed_at" in w.get(f"/api/v2/images/{swept['uuid']}").json["meta"]
    # A live image keeps its log whatever its age or status: the failed build's says why.
    clock.advance(days=10)  # (the test tokens live 30 days)
    w.ctx.images.sweep()
    assert "no-such-ref" in _log(w, failed["uuid"]) and _chunks(w, kept["uuid"]) >= 1
    assert "log_removed_at" not in (w.get(f"/api/v2/images/{failed['uuid']}").json["meta"] or {})


def test_a_build_deleted_while_queued_keeps_its_log_for_the_grace_after_deletion(make_world, settings, polaris):
    clock = FakeClock()
    w = _world(make_world, settings, polaris, clock)
    w.ctx.stop()  # nothing builds: the image stays queued until it is deleted
    lease_s = w.ctx.settings.builds.lease_s
    r = w.client.simulate_post(BUILD, json={"name": "polaris", "tag": "q", "git_ref": "main"},
                               headers=w.headers("mem", "g1"))
    image_id = r.json["uuid"]
    # retention_day 0 on the record: only the grace after the deletion protects the log
    with w.ctx.storage.write() as tx:
        doc = tx.get("image", image_id)
        tx.update(to_doc(replace(from_doc(doc), retention_day=0)))
    assert w.delete(f"/api/v2/images/{image_id}").status_code == 204
    legacy = w.ctx.images.logs.legacy_path(image_id)  # as an earlier version left it, as a file
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_text("2024-01-01T00:00:00.000000Z an old line\n")
    w.ctx.images.sweep()
    assert legacy.exists()
    assert "deleted by admin while building" in _log(w, image_id), "purged while a cancelled build may still write"
    clock.advance(seconds=2 * lease_s + 1)
    w.ctx.images.sweep()
    assert _log(w, image_id) == "" and _chunks(w, image_id) == 0 and not legacy.exists()


def test_the_sweep_purges_idempotency_records_older_than_a_day(make_world, settings, polaris):
    clock = FakeClock()
    w = _world(make_world, settings, polaris, clock)
    first = _submit(w, "a", key="key-1")

    def records() -> list[str]:
        with w.ctx.storage.read() as tx:
            return [d.body["image"] for d in tx.query(idempotency.KIND)]

    clock.advance(hours=12)
    second = _submit(w, "b", key="key-2")
    clock.advance(hours=11, minutes=59)
    w.ctx.images.sweep()
    assert records() == [first["uuid"], second["uuid"]], "younger than 24 h: kept"
    headers = w.headers("mem", "g1", **{"Idempotency-Key": "key-1"})
    again = w.client.simulate_post(BUILD, json={"name": "polaris", "tag": "a", "git_ref": "main"}, headers=headers)
    assert again.status_code == 200 and again.json["uuid"] == first["uuid"]

    clock.advance(minutes=1)  # key-1: 24 h old
    w.ctx.images.sweep()
    assert records() == [second["uuid"]]
    clock.advance(hours=12)
    w.ctx.images.sweep()
    assert records() == []
    # The key is free again: the same request now makes a new build.
    third = _submit(w, "a", key="key-1")
    assert third["uuid"] != first["uuid"] and records() == [third["uuid"]]
