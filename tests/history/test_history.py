"""History and audit (CONTRACT section 8): rows written in the change's own transaction, on every
storage backend (the ``backend`` fixture), credentials masked, other groups' records 404."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from xpresso_env.journal.history import HistoryService
from xpresso_env.journal.journal import HISTORY_KIND, Journal

HARNESS = {"name": "h1", "path": "/opt/pyats", "site": "OTT"}
ENGINE = {"name": "e1", "base_url": "http://127.0.0.1:9/", "username": "ci-user", "api_token": "tok-secret-1"}


def history(world, plural, record_id, user="admin", group="g1", **params):
    return world.get(f"/api/v2/{plural}/{record_id}/history", user=user, group=group, params=params or None)


def test_create_update_delete_are_recorded_oldest_first(world):
    created = world.post("/api/v2/harnesses", HARNESS, user="priv").json
    hid = created["id"]
    assert world.patch(f"/api/v2/harnesses/{hid}", {"site": "LON", "configuration_state": "MAINTENANCE"},
                       user="priv").status_code == 200
    assert world.delete(f"/api/v2/harnesses/{hid}", user="ga").status_code == 204
    res = history(world, "harnesses", hid, user="guest")  # membership is enough to read
    assert res.status_code == 200, res.text
    rows = res.json
    assert res.headers["X-Total-Count"] == "3"
    assert [r["event"] for r in rows] == ["created", "updated", "deleted"]
    assert [r["by"] for r in rows] == ["priv", "priv", "ga"]
    assert all(set(r) == {"at", "event", "by", "changes", "reason"} and r["reason"] is None for r in rows)
    assert rows[0]["changes"]["name"] == [None, "h1"]
    assert rows[0]["changes"]["path"] == [None, "/opt/pyats"]
    assert rows[1]["changes"] == {"site": ["OTT", "LON"], "configuration_state": ["ENABLED", "MAINTENANCE"]}
    assert rows[2]["changes"] == {"deleted": [False, True]}
    assert rows[0]["at"] <= rows[1]["at"] <= rows[2]["at"]
    assert rows[0]["at"].endswith("Z")
    # paging
    page = history(world, "harnesses", hid, limit="1", offset="1").json
    assert [r["event"] for r in page] == ["updated"]


def test_engine_credentials_appear_only_as_stars(world):
    eng = world.post("/api/v2/engines", ENGINE, user="priv").json
    world.patch(f"/api/v2/engines/{eng['id']}", {"api_token": "tok-secret-2"}, user="priv")
    world.patch(f"/api/v2/engines/{eng['id']}", {"username": None}, user="priv")
    res = history(world, "engines", eng["id"])
    text = res.text
    assert "tok-secret" not in text and "ci-user" not in text
    rows = res.json
    assert rows[0]["changes"]["api_token"] == [None, "***"] and rows[0]["changes"]["username"] == [None, "***"]
    assert rows[1]["changes"] == {"api_token": ["***", "***"]}
    assert rows[2]["changes"] == {"username": ["***", None]}
    with world.ctx.storage.read() as tx:  # not in storage either
        assert "tok-secret" not in repr([d.body for d in tx.query(HISTORY_KIND, eng["id"])])


def test_other_group_unknown_and_malformed_ids_are_404(world):
    hid = world.post("/api/v2/harnesses", HARNESS).json["id"]
    assert history(world, "harnesses", hid, user="other", group="g2").status_code == 404
    assert history(world, "engines", hid).status_code == 404  # a harness id is no engine
    assert history(world, "harnesses", "0d8b6e3c-1d2e-4f5a-8b9c-0123456789ab").status_code == 404
    assert history(world, "harnesses", "not-a-uuid").status_code == 404
    assert world.client.simulate_get(f"/api/v2/harnesses/{hid}/history").status_code == 401
    res = history(world, "harnesses", hid, bogus="1")
    assert res.status_code == 400 and "detail" in res.json
    assert history(world, "harnesses", hid, limit="0").status_code == 400


def test_state_events_have_no_user_and_carry_the_reason(world):
    """What the prober writes: journal.record(event="state") in its own transaction."""
    hid = world.post("/api/v2/harnesses", HARNESS).json["id"]
    storage, journal = world.ctx.storage, world.ctx.journal
    with storage.write() as tx:
        doc = tx.get("harness", hid, lock=True)
        after = {**doc.body, "operational_state": "OFFLINE"}
        tx.update(doc.__class__(**{**doc.__dict__, "body": after}))
        journal.record(tx, kind="harness", event="state", group="g1", record_id=hid, before=doc.body, after=after,
                       by=None, reason="no pyATS installation at /opt/pyats")
    rows = history(world, "harnesses", hid).json
    assert rows[-1] == {"at": rows[-1]["at"], "event": "state", "by": None,
                        "changes": {"operational_state": ["UNKNOWN", "OFFLINE"]},
                        "reason": "no pyATS installation at /opt/pyats"}


def test_a_refused_write_leaves_no_history(world):
    world.post("/api/v2/harnesses", HARNESS)
    other = world.post("/api/v2/harnesses", {**HARNESS, "name": "h2"}).json
    res = world.patch(f"/api/v2/harnesses/{other['id']}", {"name": "h1"})  # name clash: 409
    assert res.status_code == 409
    assert [r["event"] for r in history(world, "harnesses", other["id"]).json] == ["created"]
    # and a record change never commits without its history row: a journal that fails rolls it back
    journal = world.ctx.journal

    def broken(*args, **kwargs):
        raise RuntimeError("journal down")

    journal.record = broken  # the instance attribute shadows the method for this test's context
    res = world.post("/api/v2/harnesses", {**HARNESS, "name": "h3"})
    assert res.status_code == 500
    with world.ctx.storage.read() as tx:
        assert tx.find_name("harness", "g1", "h3") is None


def test_sweep_removes_rows_older_than_the_retention(world):
    hid = world.post("/api/v2/harnesses", HARNESS).json["id"]  # written now
    now = datetime.now(timezone.utc)
    old = Journal(lambda: now - timedelta(days=91))  # a row written 91 days ago, by a probe
    with world.ctx.storage.write() as tx:
        body = tx.get("harness", hid).body
        old.record(tx, kind="harness", event="state", group="g1", record_id=hid, before=body,
                   after={**body, "operational_state": "ONLINE"}, by=None, reason="pyATS 24.3")
    assert [r["event"] for r in history(world, "harnesses", hid).json] == ["state", "created"]
    sweeper = HistoryService(world.ctx.storage, lambda: now, retention_days=90)
    assert sweeper.sweep() == 1
    assert [r["event"] for r in history(world, "harnesses", hid).json] == ["created"]
    assert sweeper.sweep() == 0
    assert HistoryService(world.ctx.storage, lambda: now + timedelta(days=91), retention_days=90).sweep() == 1
    assert history(world, "harnesses", hid).json == []
