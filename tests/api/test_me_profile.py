"""A user's own tokens, password and preferences, and the audit (CONTRACT section 13), on every
backend."""
from __future__ import annotations

import jwt

from tests.conftest import SECRET

TOKENS, ME, PASSWORD_URL, AUDIT = "/api/v2/me/tokens", "/api/v2/me", "/api/v2/me/password", "/api/v2/audit"
LOGIN = "/api/v2/auth/login"
PASSWORD = "correct horse battery"


def _as(world, user: str) -> dict[str, str]:
    return {"Authorization": world.tokens[user]}


def test_own_tokens_are_made_listed_and_revoked(world):
    c = world.client
    r = c.simulate_post(TOKENS, json={"name": "laptop", "days": 7}, headers=_as(world, "mem"))
    assert r.status_code == 201, r.text
    made = r.json
    assert made["token"].startswith("Jwt ") and made["name"] == "laptop" and made["typ"] == "api"
    assert jwt.decode(made["token"].split()[1], SECRET, algorithms=["HS256"])["exp"] - \
        jwt.decode(made["token"].split()[1], SECRET, algorithms=["HS256"])["iat"] == 7 * 86400
    mine = c.simulate_get(TOKENS, headers=_as(world, "mem")).json
    assert [t["jti"] for t in mine][-1] == made["jti"]
    assert all("token" not in t for t in mine)  # shown once, never listed
    assert set(mine[-1]) == {"jti", "name", "typ", "created", "expires", "last_used", "revoked"}
    assert c.simulate_get("/api/v2/harnesses", headers={"Authorization": made["token"], "Group": "g1"}).status_code == 200
    # another user's token is not there for them
    assert c.simulate_delete(f"{TOKENS}/{made['jti']}", headers=_as(world, "priv")).status_code == 404
    assert made["jti"] not in [t["jti"] for t in c.simulate_get(TOKENS, headers=_as(world, "priv")).json]
    assert c.simulate_delete(f"{TOKENS}/{made['jti']}", headers=_as(world, "mem")).status_code == 204
    assert c.simulate_get(ME, headers={"Authorization": made["token"]}).status_code == 401
    assert [t for t in c.simulate_get(TOKENS, headers=_as(world, "mem")).json if t["jti"] == made["jti"]][0]["revoked"]
    assert c.simulate_delete(f"{TOKENS}/nosuchtoken", headers=_as(world, "mem")).status_code == 404
    # a system administrator still sees every token
    assert made["jti"] in {t.jti for t in world.ctx.auth.list_tokens()}
    events = [(r.event, r.user) for r in world.ctx.audit.entries(user="mem")]
    assert ("token_created", "mem") in events and ("token_revoked", "mem") in events


def test_bad_token_requests_are_400s_and_change_nothing(world):
    c = world.client
    def listed() -> list:
        return [{k: v for k, v in t.items() if k != "last_used"} for t in
                c.simulate_get(TOKENS, headers=_as(world, "mem")).json]

    before = listed()
    for body in ({"name": "x", "days": 366}, {"name": "x", "days": 0}, {"name": "", "days": 1}, {"days": 1},
                 {"name": "x", "days": "7"}, {"name": "x", "colour": 1}, ["x"], {"name": "x" * 101}):
        r = c.simulate_post(TOKENS, json=body, headers=_as(world, "mem"))
        assert r.status_code == 400, (body, r.text)
    assert listed() == before
    assert c.simulate_post(TOKENS, json={"name": "x"}).status_code == 401


def test_password_change(world):
    world.ctx.profile.set_password("mem", PASSWORD, by="(cli)")
    c = world.client
    r = c.simulate_post(PASSWORD_URL, json={"old": "wrong one", "new": "a new password"}, headers=_as(world, "mem"))
    assert r.status_code == 400 and r.json == {"old": ["Wrong password."]}
    r = c.simulate_post(PASSWORD_URL, json={"old": PASSWORD, "new": "short"}, headers=_as(world, "mem"))
    assert r.status_code == 400 and "new" in r.json
    r = c.simulate_post(PASSWORD_URL, json={"old": PASSWORD, "new": "a new password"}, headers=_as(world, "mem"))
    assert r.status_code == 204
    assert c.simulate_post(LOGIN, json={"username": "mem", "password": PASSWORD}).status_code == 401
    assert c.simulate_post(LOGIN, json={"username": "mem", "password": "a new password"}).status_code == 200
    # a user who has no password here is told whom to ask
    r = c.simulate_post(PASSWORD_URL, json={"old": "anything", "new": "a new password"}, headers=_as(world, "guest"))
    assert r.status_code == 400 and "set-password" in r.json["detail"]
    assert [r.by for r in world.ctx.audit.entries(user="mem", event="password_changed")] == ["mem", "(cli)"]


def test_preferences(world):
    c = world.client
    me = c.simulate_get(ME, headers=_as(world, "mem")).json
    assert me["preferences"] == {"time_zone": "UTC", "time_format": "24h"} and me["date_joined"].endswith("Z")
    r = c.simulate_patch(ME, json={"preferences": {"time_zone": "Europe/Paris"}}, headers=_as(world, "mem"))
    assert r.status_code == 200 and r.json["preferences"] == {"time_zone": "Europe/Paris", "time_format": "24h"}
    r = c.simulate_patch(ME, json={"preferences": {"time_format": "12h"}}, headers=_as(world, "mem"))
    assert r.json["preferences"] == {"time_zone": "Europe/Paris", "time_format": "12h"}
    for bad in ({"time_zone": "Mars/Olympus"}, {"time_zone": "../../etc/passwd"}, {"time_zone": ""},
                {"time_format": "25h"}, {"colour": "red"}, "UTC"):
        r = c.simulate_patch(ME, json={"preferences": bad}, headers=_as(world, "mem"))
        assert r.status_code == 400, (bad, r.text)
    assert c.simulate_patch(ME, json={"time_zone": "UTC"}, headers=_as(world, "mem")).status_code == 400
    assert c.simulate_get(ME, headers=_as(world, "mem")).json["preferences"] == {"time_zone": "Europe/Paris",
                                                                                  "time_format": "12h"}
    # the API's own times stay UTC
    assert c.simulate_get(ME, headers=_as(world, "mem")).json["date_joined"].endswith("Z")


def test_the_audit_is_for_system_administrators_newest_first_and_paged(world):
    world.ctx.profile.set_password("mem", PASSWORD, by="(cli)")
    c = world.client
    c.simulate_post(LOGIN, json={"username": "mem", "password": "wrong guess"}, remote_addr="192.0.2.1")
    c.simulate_post(LOGIN, json={"username": "mem", "password": PASSWORD}, remote_addr="192.0.2.2")
    r = c.simulate_get(AUDIT, headers=_as(world, "admin"))
    assert r.status_code == 200
    rows = r.json
    assert [row["event"] for row in rows[:3]] == ["login", "login_failed", "password_changed"]
    assert rows[0] == {"at": rows[0]["at"], "event": "login", "user": "mem", "by": "mem", "address": "192.0.2.2",
                       "detail": "provider local"}
    assert int(r.headers["X-Total-Count"]) == len(rows)
    r = c.simulate_get(AUDIT, params={"user": "mem", "event": "login_failed"}, headers=_as(world, "admin"))
    assert [(row["event"], row["address"]) for row in r.json] == [("login_failed", "192.0.2.1")]
    r = c.simulate_get(AUDIT, params={"limit": "1", "offset": "1"}, headers=_as(world, "admin"))
    assert [row["event"] for row in r.json] == ["login_failed"] and int(r.headers["X-Total-Count"]) == len(rows)
    assert c.simulate_get(AUDIT, headers=_as(world, "ga")).status_code == 403
    assert c.simulate_get(AUDIT).status_code == 401
    for params in ({"event": "coffee"}, {"colour": "red"}, {"limit": "0"}):
        assert c.simulate_get(AUDIT, params=params, headers=_as(world, "admin")).status_code == 400


def test_the_sweep_removes_old_audit_rows_and_spent_failure_counts(make_world, settings):
    from datetime import datetime, timedelta, timezone

    class Clock:
        now = datetime.now(timezone.utc)

        def __call__(self):
            return self.now

    clock = Clock()
    world = make_world(clock=clock)
    c = world.client
    for name in ("made-up-1", "made-up-2"):  # a guesser spraying names
        assert c.simulate_post(LOGIN, json={"username": name, "password": "whatever!"}).status_code == 401
    with world.ctx.storage.read() as tx:
        assert len(tx.query("login_failures")) == 2
    assert world.ctx.audit.sweep() == 0  # still within the window and the retention
    clock.now += timedelta(seconds=world.ctx.settings.auth.login_window_s + 1)
    assert world.ctx.audit.sweep() == 2
    clock.now += timedelta(days=world.ctx.settings.history.retention_days)
    assert world.ctx.audit.sweep() >= 2  # the two login_failed rows, and the seed's token_created
    assert world.ctx.audit.entries() == []


def test_last_used_follows_the_token(world):
    c = world.client
    made = c.simulate_post(TOKENS, json={"name": "ci"}, headers=_as(world, "mem")).json
    assert made["last_used"] is None
    for _ in range(2):
        assert c.simulate_get(ME, headers={"Authorization": made["token"]}).status_code == 200
    listed = {t["jti"]: t for t in c.simulate_get(TOKENS, headers=_as(world, "mem")).json}
    if world.ctx.settings.storage.backend == "yaml":  # not kept there (README: Signing in)
        assert listed[made["jti"]]["last_used"] is None
    else:
        assert listed[made["jti"]]["last_used"].endswith("Z")
