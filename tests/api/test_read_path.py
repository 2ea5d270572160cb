"""The read path: one home for authentication, the group rule and the cache's dependencies.

* A storage plugin with the documents interface only runs the whole API; the cache turns itself
  off and says so in /api/v2/plugins and /api/v2/health.
* The authentication memo never outlives a revocation, a role change, a deleted user or a
  deleted group, made through another app on the same store.
* The 403 body keeps DRF's words; the server's log line says which permission, group and user.
"""
from __future__ import annotations

import logging

from falcon.testing import TestClient

from tests.conftest import World, seed
from xpresso_env.app import build_context, create_app, create_wsgi_app
from xpresso_env.config import load_settings
from xpresso_env.plugin import make_plugin_manager
from xpresso_env.testing.memory_storage import MemoryStoragePlugin

LIST = "/api/v2/harnesses"
FORBIDDEN = {"detail": "You do not have permission to perform this action."}


def memory_world(tmp_path) -> World:
    settings = load_settings(None, env={"XPRESSO_ENV_AUTH_SECRET": "s" * 40, "XPRESSO_ENV_SERVER_ACCESS_LOG": "false"},
                             overrides={"storage": {"backend": "memory"},
                                        "images": {"nfs_root": str(tmp_path / "nfs"), "logs_root": str(tmp_path / "l"),
                                                   "workspace_root": str(tmp_path / "ws")}})
    ctx = build_context(settings, pm=make_plugin_manager(extra_plugins=[MemoryStoragePlugin()]),
                        check_schema=False, images=False)
    ctx.storage.init()
    return World(ctx=ctx, client=TestClient(create_wsgi_app(ctx)), tokens=seed(ctx))


def test_a_documents_only_backend_serves_the_api_with_the_cache_off(tmp_path):
    w = memory_world(tmp_path)
    try:
        assert not w.ctx.cached.enabled
        h = w.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
        assert [r["id"] for r in w.get(LIST, user="mem").json] == [h["id"]]
        w.patch(f"{LIST}/{h['id']}", {"site": "OTT"}, user="priv")
        assert w.get(f"{LIST}/{h['id']}", user="mem").json["site"] == "OTT"  # nothing cached, nothing stale
        assert w.get(f"/api/v1/harnesses/{h['id']}", user="mem").json["uuid"] == h["id"]
        w.ctx.auth.revoke(_jti(w, "mem"))
        assert w.get(LIST, user="mem").status_code == 401
        plugins = w.client.simulate_get("/api/v2/plugins").json
        memory = [p for p in plugins if "storage" in p]
        assert len(memory) == 1 and memory[0]["storage"]["backend"] == "memory"
        assert memory[0]["storage"]["response_cache"].startswith("off: storage backend 'memory' keeps no change")
        health = w.client.simulate_get("/api/v2/health").json
        assert health["storage"] == "memory" and health["response_cache"].startswith("off")
    finally:
        w.ctx.close()


def test_plugins_say_the_cache_is_on_for_a_counting_backend(world):
    entry = [p for p in world.client.simulate_get("/api/v2/plugins").json if "storage" in p]
    assert len(entry) == 1 and entry[0]["storage"]["response_cache"] == "on"
    assert entry[0]["name"] == f"xpresso_env_plugins.storage_{world.ctx.storage.name}"


def _jti(w: World, user: str) -> str:
    import jwt

    return jwt.decode(w.tokens[user].split()[1], options={"verify_signature": False})["jti"]


def test_memo_never_outlives_a_revocation_made_elsewhere(make_world):
    w = make_world()
    other = make_world()  # a second app on the same store: another process, as far as caches go
    h = w.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
    h2 = w.post(LIST, {"name": "h2", "path": "/p"}, user="priv").json
    assert w.get(f"{LIST}/{h['id']}", user="mem").status_code == 200  # memo of mem's authentication
    other.ctx.auth.revoke(_jti(w, "mem"))
    # a record never read before (no cached response): only the memo could let it through
    r = w.get(f"{LIST}/{h2['id']}", user="mem")
    assert (r.status_code, r.json) == (401, {"detail": "Invalid token."})


def test_memo_never_outlives_a_role_change_or_a_deleted_user_made_elsewhere(make_world):
    w = make_world()
    other = make_world()
    assert w.post(LIST, {"name": "a", "path": "/p"}, user="priv").status_code == 201
    other.ctx.auth.set_role("priv", "g1", "guest")
    r = w.post(LIST, {"name": "b", "path": "/p"}, user="priv")
    assert (r.status_code, r.json) == (403, FORBIDDEN)
    assert w.get(LIST, user="mem").status_code == 200
    other.ctx.auth.delete_user("mem")
    assert w.get(f"{LIST}?site=x", user="mem").status_code == 401


def test_memo_never_outlives_the_token_expiry(make_world):
    from datetime import datetime, timedelta, timezone

    now = [datetime.now(timezone.utc)]
    w = make_world(clock=lambda: now[0])
    assert w.get(LIST, user="mem").status_code == 200
    now[0] += timedelta(days=400)
    r = w.get(f"{LIST}?site=y", user="mem")
    assert (r.status_code, r.json) == (401, {"detail": "Token has expired."})


def test_group_header_wins_over_x_group_on_every_path(world):
    h = world.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
    headers = {"Authorization": world.tokens["multi"], "Group": "g2", "X-Group": "g1"}
    assert world.client.simulate_get(LIST, headers=headers).json == []  # g2's list, not g1's
    assert world.client.simulate_get(f"{LIST}/{h['id']}", headers=headers).status_code == 404
    front = TestClient(create_wsgi_app(world.ctx))
    for _ in range(2):  # a miss, then a hit answered before falcon: the same rule
        assert front.simulate_get(LIST, headers=headers).json == []


def test_a_403_logs_the_missing_permission_and_group_and_keeps_drf_words(world, caplog):
    with caplog.at_level(logging.WARNING, logger="xpresso_env.api"):
        r = world.post(LIST, {"name": "h", "path": "/p"}, user="mem")
    assert (r.status_code, r.json) == (403, FORBIDDEN)
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "xpresso_env.api"]
    assert any("add_harness" in line and "g1" in line and "mem" in line for line in lines), lines


def test_a_refused_permission_is_answered_before_the_body_is_read(world):
    r = world.client.simulate_post(LIST, body="not json", headers={**world.headers("mem"),
                                                                   "Content-Type": "text/plain"})
    assert (r.status_code, r.json) == (403, FORBIDDEN)
    r = world.client.simulate_post(LIST, body="not json", headers={**world.headers("priv"),
                                                                   "Content-Type": "text/plain"})
    assert r.status_code == 415


def test_create_app_and_wsgi_app_build_independent_apps(settings):
    ctxs = [build_context(settings, check_schema=False, images=False) for _ in range(2)]
    try:
        ctxs[0].storage.init()
        apps = [create_app(c) for c in ctxs]
        assert apps[0] is not apps[1] and ctxs[0].cached is not ctxs[1].cached
    finally:
        for c in ctxs:
            c.close()


def test_health_says_503_and_why_when_storage_does_not_answer(tmp_path):
    w = memory_world(tmp_path)
    assert w.client.simulate_get("/api/v2/health").status_code == 200
    w.ctx.storage.close()  # the memory backend refuses every transaction once closed
    r = w.client.simulate_get("/api/v2/health")
    assert r.status_code == 503 and r.json["status"] == "storage unavailable: The memory storage is closed."
