"""The read path: one home for authentication, the group rule and the cache's dependencies.

* A storage plugin with the documents interface only runs the whole API; the cache turns itself
  off and says so in /api/v2/plugins and /api/v2/health.
* The authentication memo never outlives a revocation, a role change, a deleted user or a
  deleted group, made through another app on the same store.
* The 403 body keeps DRF's words; the server's log line says which permission, group and user.
* A read flows one way: no transaction reaches ``http/``, a cache miss looks the cache up once,
  and /api/v2/me authenticates in the same read scope as every other read.
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

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


# -- a read flows one way ---------------------------------------------------------------------------

class _WatchedTx:
    """A read transaction that checks, on every use, who is using it: the read scope's owners
    (services in the domain rooms, through ``access/reads.py``), never a frame of ``http/``."""

    def __init__(self, tx, seen: list):
        self._tx = tx
        self._seen = seen

    def __getattr__(self, name):
        real = getattr(self._tx, name)
        if not callable(real):
            return real

        def call(*args, **kwargs):
            frame = sys._getframe(1)
            users = []
            while frame is not None:
                path = frame.f_code.co_filename.replace(os.sep, "/")
                if "/xpresso_env/" in path:
                    users.append((path.split("/xpresso_env/")[-1], any(v is self or v is self._tx
                                                                     for v in frame.f_locals.values())))
                frame = frame.f_back
            self._seen.append((name, users))
            return real(*args, **kwargs)
        return call


def _watch_reads(world: World, monkeypatch) -> list:
    seen: list = []
    real = world.ctx.storage.read

    @contextmanager
    def read():
        with real() as tx:
            yield _WatchedTx(tx, seen)

    monkeypatch.setattr(world.ctx.storage, "read", read)
    return seen


def test_no_transaction_reaches_the_http_layer(world, monkeypatch):
    """Every GET (and the authentication of a write) reads through a transaction the read scope
    opened for a service: no frame of ``http/`` calls it or holds it."""
    h = world.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
    hook = world.post("/api/v2/webhooks", {"url": "http://127.0.0.1:9/x", "events": ["*"], "secret": "s" * 20},
                      user="ga").json
    seen = _watch_reads(world, monkeypatch)
    paths = [LIST, f"{LIST}/{h['id']}", "/api/v1/harnesses", f"/api/v1/harnesses/{h['id']}",
             "/api/v2/resources/harnesses/h", f"{LIST}/{h['id']}/history", f"{LIST}/{h['id']}/state",
             "/api/v2/me", "/api/v2/webhooks", f"/api/v2/webhooks/{hook['id']}",
             f"/api/v2/webhooks/{hook['id']}/deliveries"]
    if world.ctx.images is not None:
        paths.append("/api/v2/images")
    for path in paths:
        r = world.get(path, user="ga")
        assert r.status_code == 200, (path, r.text)
    assert world.patch(f"{LIST}/{h['id']}", {"site": "X"}, user="priv").status_code == 200  # `who`
    assert seen and all(any(path.startswith("http/resources/") for path, _ in users) for _, users in seen)
    for name, users in seen:
        assert not users[0][0].startswith("http/"), (name, users)  # who calls the transaction
        assert not any(path.startswith("http/") and holds for path, holds in users), (name, users)


def test_a_miss_looks_the_cache_up_once(world, monkeypatch):
    h = world.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
    looked: list = []
    real = world.ctx.cached.cache.fresh
    monkeypatch.setattr(world.ctx.cached.cache, "fresh", lambda key: looked.append(key) or real(key))
    served = TestClient(create_wsgi_app(world.ctx))
    for path in (LIST, f"{LIST}/{h['id']}"):
        looked.clear()
        assert served.simulate_get(path, headers=world.headers("mem")).status_code == 200
        assert len(looked) == 1  # the miss: the frontend asked, the resource did not ask again
        looked.clear()
        assert served.simulate_get(path, headers=world.headers("mem")).status_code == 200
        assert len(looked) == 1  # the hit
    # the falcon app alone (no frontend): the resource asks, once
    looked.clear()
    assert world.get(f"{LIST}?site=", user="mem").status_code == 200
    assert len(looked) == 1
    assert world.get(f"{LIST}?site=", user="mem").status_code == 200
    assert len(looked) == 2


def test_cache_answers_are_counted_once_each(world):
    from prometheus_client.parser import text_string_to_metric_families

    def counted() -> dict:
        text = world.ctx.metrics.exposition(None)[0].decode()
        return {s.labels["result"]: s.value for f in text_string_to_metric_families(text)
                if f.name == "xpresso_response_cache_requests" for s in f.samples if s.name.endswith("_total")}

    served = TestClient(create_wsgi_app(world.ctx))
    before = counted()
    for _ in range(3):
        assert served.simulate_get(LIST, headers=world.headers("mem")).status_code == 200
    assert served.simulate_get(LIST, headers={"Authorization": "Jwt forged", "Group": "g1"}).status_code == 401
    after = counted()
    assert after.get("miss", 0) - before.get("miss", 0) == 2  # the first read, and the refused one
    assert after.get("hit", 0) - before.get("hit", 0) == 2


def test_me_goes_through_the_read_scope(world, monkeypatch):
    """/api/v2/me authenticates in the read scope like every read: its authentication is
    memoised (the counters vouch for it) and a revocation still shows at once."""
    scopes: list = []
    real_scope = world.ctx.reads.scope
    monkeypatch.setattr(world.ctx.reads, "scope",
                        lambda credentials, kind=None, group_required=True:
                        scopes.append((kind, group_required)) or real_scope(credentials, kind, group_required))
    checks: list = []
    real_auth = world.ctx.auth.authenticate
    monkeypatch.setattr(world.ctx.auth, "authenticate", lambda *a, **k: checks.append(a[1]) or real_auth(*a, **k))
    for _ in range(2):
        r = world.get("/api/v2/me", user="multi", group=None)
        assert r.status_code == 200 and r.json["group"] is None
    assert scopes == [(None, False)] * 2
    assert len(checks) == 1  # the second one was the memo's, vouched for by the counters
    # the memo of a Group-less /me never answers a read that needs a group
    r = world.get(LIST, user="multi", group=None)
    assert r.status_code == 400 and "Group header is required" in r.json["detail"]
    assert world.get("/api/v2/me", user="admin", group=None).json["group"] is None
    assert world.get(LIST, user="admin", group=None).status_code == 400
    world.ctx.auth.revoke(_jti(world, "multi"))
    assert world.get("/api/v2/me", user="multi", group=None).status_code == 401


def test_the_frontend_reads_registry_misses_as_falcon_would(world, make_world, monkeypatch):
    """What `serve` runs reads a miss of the registry's GETs without falcon's request and response;
    every answer (and every refusal) is the one falcon gives for the same request."""
    import falcon

    other = make_world()  # a second app on the same store, its own cache: falcon reads its misses
    other.tokens = world.tokens
    h = world.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
    requests = [(LIST, "mem", "g1"), (f"{LIST}/{h['id']}", "mem", "g1"), (f"/api/v1/harnesses/{h['id']}", "mem", "g1"),
                ("/api/v1/engines", "mem", "g1"), ("/api/v2/resouces/harnesses/h", "mem", "g1"),
                ("/api/v1/resources/engines/none", "mem", "g1"), ("/api/v2/resources/nothing/h", "mem", "g1"),
                (f"{LIST}/not-an-id", "mem", "g1"), (f"{LIST}/{h['id']}", "other", "g2"),
                (f"{LIST}/{h['id']}", "mem", "g2"), (f"{LIST}/{h['id']}", "multi", None), (LIST, None, "g1"),
                (LIST, "forged", "g1")]
    served = TestClient(create_wsgi_app(world.ctx))
    falcon_calls: list = []
    real_call = falcon.App.__call__
    monkeypatch.setattr(falcon.App, "__call__", lambda self, env, sr: falcon_calls.append(1) or real_call(self, env, sr))
    for path, user, group in requests:
        headers = {} if user is None else {"Authorization": "Jwt forged" if user == "forged" else world.tokens[user]}
        if group is not None:
            headers["Group"] = group
        assert world.ctx.cached.cache.get((path, "", headers.get("Authorization"), group)) is None  # a miss
        falcon_calls.clear()
        answer = served.simulate_get(path, headers=headers)
        assert falcon_calls == [], path
        expected = other.client.simulate_get(path, headers=headers)  # the falcon app alone
        assert (answer.status_code, answer.content) == (expected.status_code, expected.content), path
        for name in ("Content-Type", "X-Total-Count", "WWW-Authenticate"):
            assert answer.headers.get(name) == expected.headers.get(name), (path, name)
    # a query string, or a trailing slash, is falcon's to parse
    falcon_calls.clear()
    assert served.simulate_get(f"{LIST}?limit=1", headers=world.headers("mem")).status_code == 200
    assert served.simulate_get(f"{LIST}/", headers=world.headers("priv")).status_code == 200
    assert len(falcon_calls) == 2
