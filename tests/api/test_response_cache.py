"""The GET response cache is never stale: every change that could alter an answer is seen."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.conftest import World

LIST = "/api/v2/harnesses"


def _cached(world: World, path: str, user: str, group="g1", query: str = "") -> bool:
    return world.ctx.cached.cache.get((path, query, world.tokens[user], group)) is not None


def test_repeated_get_is_served_from_the_cache_with_the_same_bytes(world):
    world.post(LIST, {"name": "h", "path": "/p"}, user="priv")
    first = world.get(LIST, user="mem")
    assert _cached(world, LIST, "mem")
    second = world.get(LIST, user="mem")
    assert second.content == first.content and second.headers["X-Total-Count"] == "1"


def test_writes_by_another_process_invalidate(world, make_world):
    other = make_world()  # a second app on the same store stands for another process
    other.tokens = world.tokens
    h = world.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
    assert [x["site"] for x in world.get(LIST).json] == [""]
    assert world.get(f"{LIST}/{h['id']}").json["site"] == ""
    other.patch(f"{LIST}/{h['id']}", {"site": "NEW"}, user="priv")
    assert [x["site"] for x in world.get(LIST).json] == ["NEW"]
    assert world.get(f"{LIST}/{h['id']}").json["site"] == "NEW"
    other.post(LIST, {"name": "h2", "path": "/p"}, user="priv")
    assert len(world.get(LIST).json) == 2
    other.delete(f"{LIST}/{h['id']}", user="ga")
    assert len(world.get(LIST).json) == 1


def test_revocation_user_and_role_changes_invalidate(world):
    assert world.get(LIST, user="mem").status_code == 200
    assert world.get(LIST, user="priv").status_code == 200
    assert world.get(LIST, user="guest").status_code == 200
    world.ctx.auth.set_role("mem", "g1", None)  # no longer a member
    assert world.get(LIST, user="mem").status_code == 403
    world.ctx.auth.delete_user("priv")
    assert world.get(LIST, user="priv").status_code == 401
    import jwt

    from tests.conftest import SECRET

    jti = jwt.decode(world.tokens["guest"].split()[1], SECRET, algorithms=["HS256"])["jti"]
    world.ctx.auth.revoke(jti)
    assert world.get(LIST, user="guest").status_code == 401


def test_other_groups_do_not_share_entries(world):
    world.post(LIST, {"name": "h", "path": "/p"}, user="priv")
    assert len(world.get(LIST, user="admin", group="g1").json) == 1
    assert world.get(LIST, user="admin", group="g2").json == []


def test_expiry_is_checked_on_every_hit(make_world):
    now = [datetime.now(timezone.utc)]
    w = make_world(clock=lambda: now[0])
    assert w.get(LIST, user="mem").status_code == 200
    assert w.get(LIST, user="mem").status_code == 200
    now[0] += timedelta(days=31)
    r = w.get(LIST, user="mem")
    assert r.status_code == 401 and r.json == {"detail": "Token has expired."}


def test_cache_is_bounded_in_bytes():
    from xpresso_env.access.cache import Entry, ResponseCache
    from xpresso_env.access.reads import Dependencies
    from xpresso_env.core.timeutil import utcnow

    cache = ResponseCache(max_bytes=1000, counters=None, clock=utcnow)
    nothing = Dependencies(keys=(), values=())
    for i in range(50):
        cache.put((str(i), "", None, None), Entry(depends=nothing, body=b"x" * 100, total=None, user="u",
                                              group="g", token_expires=0))
    assert cache._bytes <= 1000 and len(cache._entries) == 10
    assert cache.get(("49", "", None, None)) is not None and cache.get(("0", "", None, None)) is None
    cache.put(("big", "", None, None), Entry(depends=nothing, body=b"x" * 600, total=None, user="u", group="g",
                                         token_expires=0))
    assert cache.get(("big", "", None, None)) is None  # larger than a quarter: not kept


def test_the_wsgi_frontend_answers_hits_and_sees_every_change(world, make_world):
    """What `serve` runs: hits answered before falcon, still never stale."""
    from falcon.testing import TestClient

    from xpresso_env.app import create_wsgi_app

    front = World(ctx=world.ctx, client=TestClient(create_wsgi_app(world.ctx)), tokens=world.tokens)
    other = make_world()
    other.tokens = world.tokens
    h = world.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
    first = front.get(LIST + "?site=", user="mem")
    assert _cached(world, LIST, "mem", query="site=")
    hit = front.get(LIST + "?site=", user="mem")
    assert hit.content == first.content and hit.headers["X-Total-Count"] == "1"
    assert hit.headers["Content-Type"] == "application/json"
    other.patch(f"{LIST}/{h['id']}", {"site": "NEW"}, user="priv")
    assert front.get(LIST, user="mem").json[0]["site"] == "NEW"
    assert front.get(LIST + "?site=", user="mem").json == []
    world.ctx.auth.delete_user("mem")
    assert front.get(LIST, user="mem").status_code == 401
    assert front.client.simulate_get(LIST, headers={"Authorization": "Jwt forged", "Group": "g1"}).status_code == 401


def test_entries_are_restamped_after_unrelated_writes(world):
    world.post(LIST, {"name": "h", "path": "/p"}, user="priv")
    first = world.get(LIST, user="mem")
    world.post("/api/v2/engines", {"name": "e", "base_url": "https://j.example.com"}, user="priv")  # unrelated
    again = world.get(LIST, user="mem")
    assert again.content == first.content
    entry = world.ctx.cached.cache.get((LIST, "", world.tokens["mem"], "g1"))
    stamp = world.ctx.storage.change_stamp()
    if stamp is not None:  # backends with a store-wide stamp (sqlite): the next hit needs no query
        assert entry.depends.stamp == stamp
    world.post(LIST, {"name": "h2", "path": "/p"}, user="priv")  # related: the stamp cannot hide it
    assert len(world.get(LIST, user="mem").json) == 2


def test_probe_state_writes_leave_hits_free_and_record_writes_are_still_seen(world, monkeypatch):
    """The probes write their state hundreds of times a second: a hit must stay a memory read
    (no counter query) through them, and a change of the records it shows is still seen at once."""
    from xpresso_env.probes.state import STATE_KIND
    from xpresso_env.storage import Doc

    h = world.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
    first = world.get(LIST, user="mem")
    assert world.get(LIST, user="mem").content == first.content  # stamped now (sqlite)
    if world.ctx.storage.change_stamp() is None:
        return  # postgres, yaml: no store-wide stamp, every hit checks the counters anyway
    asked = []
    real = world.ctx.storage.versions
    monkeypatch.setattr(world.ctx.storage, "versions", lambda keys: asked.append(keys) or real(keys))
    for n in range(3):
        with world.ctx.storage.write() as tx:
            doc = Doc(kind=STATE_KIND, id=h["id"], group="g1", name=None, deleted=False, created="2024", body={"n": n})
            tx.insert(doc) if n == 0 else tx.update(doc)
        assert world.get(LIST, user="mem").content == first.content
    assert asked == []
    world.patch(f"{LIST}/{h['id']}", {"site": "NEW"}, user="priv")
    assert world.get(LIST, user="mem").json[0]["site"] == "NEW"
