"""Signing in (CONTRACT section 13): sessions, one 401 for a wrong name or password, the lockout
counted in storage, sign-out, passwords kept only as argon2id hashes. On every backend."""
from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from datetime import datetime, timedelta, timezone

import jwt
import pytest
import yaml

from tests.conftest import SECRET, make_settings

LOGIN, LOGOUT, ME = "/api/v2/auth/login", "/api/v2/auth/logout", "/api/v2/me"
PASSWORD = "correct horse battery"
INVALID = {"detail": "Invalid username or password."}


class Clock:
    """A clock the test moves (lockout windows, session expiry)."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def login(world, username: str, password: str = PASSWORD, **kw):
    return world.client.simulate_post(LOGIN, json={"username": username, "password": password}, **kw)


@pytest.fixture
def signed(world):
    world.ctx.profile.set_password("mem", PASSWORD, by="(cli)")
    return world


def test_sign_in_gives_a_session_token_that_works(signed):
    r = login(signed, "mem")
    assert r.status_code == 200, r.text
    assert set(r.json) == {"token", "expires", "user"} and r.json["user"] == "mem"
    token = r.json["token"]
    assert token.startswith("Jwt ")
    claims = jwt.decode(token.split()[1], SECRET, algorithms=["HS256"])
    assert claims["typ"] == "session" and claims["sub"] == "mem"
    assert 11.9 * 3600 <= claims["exp"] - claims["iat"] <= 12 * 3600  # auth.session_hours
    me = signed.client.simulate_get(ME, headers={"Authorization": token})
    assert me.status_code == 200 and me.json["user"] == "mem" and me.json["last_login"] is not None
    r = signed.client.simulate_get("/api/v2/harnesses", headers={"Authorization": token, "Group": "g1"})
    assert r.status_code == 200


def test_wrong_password_and_unknown_user_are_the_same_401(signed):
    wrong, unknown = login(signed, "mem", "not the password"), login(signed, "nobody", PASSWORD)
    for r in (wrong, unknown):
        assert r.status_code == 401 and r.json == INVALID and r.headers["WWW-Authenticate"] == "Jwt"
    # a user without a password (never given one) is refused the same way
    assert login(signed, "guest", PASSWORD).json == INVALID


@pytest.mark.slow
def test_an_unknown_user_takes_about_as_long_as_a_wrong_password(make_world, settings):
    # The real cost here: with cheap hashes the difference would be lost in the noise.
    costly = dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, password_time_cost=3,
                                                                    password_memory_kib=32768,
                                                                    login_max_failures=100))
    world = make_world(settings_override=costly)
    world.ctx.profile.set_password("mem", PASSWORD, by="(cli)")

    def timed(name: str) -> float:
        started = time.perf_counter()
        assert login(world, name, "wrong password!").status_code == 401
        return time.perf_counter() - started

    pairs = [(timed("mem"), timed("nobody-here")) for _ in range(7)]  # interleaved: the machine is shared
    ratio = statistics.median(unknown / wrong for wrong, unknown in pairs)
    assert 0.5 < ratio < 2.0, pairs


def test_bad_sign_in_bodies_are_400s(signed):
    c = signed.client
    assert c.simulate_post(LOGIN, json={"username": "mem"}).status_code in (400, 401)
    assert c.simulate_post(LOGIN, json=["mem", PASSWORD]).status_code == 400
    assert c.simulate_post(LOGIN, json={"username": 5, "password": PASSWORD}).json == {
        "username": ["A non-empty string is required."]}
    assert c.simulate_post(LOGIN, json={"username": "mem", "password": PASSWORD, "x": 1}).status_code == 400
    assert c.simulate_post(LOGIN).status_code == 400  # no body and no trusted proxy header
    assert c.simulate_post(LOGIN, json={"username": "a" * 151, "password": PASSWORD}).status_code == 400


def test_lockout_is_counted_in_storage_for_every_process(make_world, settings, caplog):
    clock = Clock()
    strict = dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, login_max_failures=3,
                                                                    login_window_s=60.0))
    one = make_world(settings_override=strict, clock=clock)
    two = make_world(settings_override=strict, clock=clock)  # another process on the same store
    one.ctx.profile.set_password("mem", PASSWORD, by="(cli)")
    caplog.set_level(logging.WARNING, logger="xpresso_env.auth")
    assert login(one, "mem", "wrong-1").status_code == 401
    assert login(two, "mem", "wrong-2").status_code == 401
    clock.now += timedelta(seconds=10)
    assert login(one, "mem", "wrong-3").status_code == 401
    for world in (two, one):  # locked everywhere, the right password included
        r = login(world, "mem")
        assert r.status_code == 429 and r.json == {"detail": "Too many failed sign-ins for this user, try again later."}
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    locks = [rec for rec in caplog.records if "sign-in locked for user 'mem'" in rec.getMessage()]
    assert len(locks) == 1 and PASSWORD not in caplog.text
    assert login(one, "ga").status_code == 401  # other names are not locked (ga has no password)
    clock.now += timedelta(seconds=51)  # the oldest failure leaves the window
    assert login(two, "mem").status_code == 200
    assert login(one, "mem", "wrong-4").status_code == 401  # a success starts the count again
    assert login(one, "mem").status_code == 200
    events = [r.event for r in one.ctx.audit.entries(user="mem")]
    assert events.count("login_failed") == 4 and events.count("login_locked") == 1 and events.count("login") == 2


def test_logout_revokes_the_session_and_only_a_session(signed):
    token = login(signed, "mem").json["token"]
    r = signed.client.simulate_post(LOGOUT, headers={"Authorization": token})
    assert r.status_code == 204
    assert signed.client.simulate_get(ME, headers={"Authorization": token}).status_code == 401
    r = signed.client.simulate_post(LOGOUT, headers={"Authorization": signed.tokens["mem"]})
    assert r.status_code == 400  # an API token is revoked with DELETE /api/v2/me/tokens/{jti}
    assert signed.client.simulate_get(ME, headers={"Authorization": signed.tokens["mem"]}).status_code == 200
    assert signed.client.simulate_post(LOGOUT).status_code == 401


def test_a_password_is_rehashed_when_the_parameters_change(make_world, settings):
    world = make_world()
    world.ctx.profile.set_password("mem", PASSWORD, by="(cli)")

    def stored_hash() -> str:
        with world.ctx.storage.read() as tx:
            return tx.get("user", "mem").body["password"]

    before = stored_hash()
    assert before.startswith("$argon2id$") and "m=1024,t=1" in before
    stronger = dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, password_time_cost=2))
    other = make_world(settings_override=stronger)
    assert login(other, "mem").status_code == 200
    after = stored_hash()
    assert "m=1024,t=2" in after and after != before
    assert login(world, "mem").status_code == 200  # the new hash still checks where the old cost is set


def test_passwords_are_never_logged_nor_exported_in_clear(signed, caplog, tmp_path):
    from xpresso_env.admin.transfer import export_file
    from xpresso_env.builds.files import ImagePaths

    caplog.set_level(logging.DEBUG)
    login(signed, "mem", "a secret guess")
    login(signed, "mem")
    out = tmp_path / "export.yaml"
    export_file(signed.ctx.storage, str(out), signed.ctx.clock, ImagePaths.from_settings(signed.ctx.settings))
    text = out.read_text()
    assert PASSWORD not in text and "a secret guess" not in text
    yaml.safe_load(text)
    assert "$argon2id$" in text  # export carries the hash
    assert PASSWORD not in caplog.text and "a secret guess" not in caplog.text
    assert "$argon2id$" not in repr(signed.ctx.auth.list_users())  # not even the hash in a repr


def test_a_header_from_a_trusted_proxy_signs_in_and_from_elsewhere_is_ignored(make_world, settings, caplog):
    proxied = dataclasses.replace(settings, auth=dataclasses.replace(
        settings.auth, providers=("local", "header"),
        header=dataclasses.replace(settings.auth.header, name="X-Remote-User", trusted_proxies=("10.0.0.0/8",))))
    world = make_world(settings_override=proxied)
    caplog.set_level(logging.WARNING)
    r = world.client.simulate_post(LOGIN, headers={"X-Remote-User": "zoe"}, remote_addr="10.1.2.3")
    assert r.status_code == 200 and r.json["user"] == "zoe"  # created at first sign-in, no roles
    me = world.client.simulate_get(ME, headers={"Authorization": r.json["token"]}).json
    assert me["user"] == "zoe" and me["groups"] == {}
    for _ in range(2):
        r = world.client.simulate_post(LOGIN, headers={"X-Remote-User": "admin"}, remote_addr="192.0.2.7")
        assert r.status_code == 400  # as if the header were absent: no credentials at all
    r = world.client.simulate_post(LOGIN, json={"username": "admin", "password": "x" * 8},
                                   headers={"X-Remote-User": "admin"}, remote_addr="192.0.2.7")
    assert r.status_code == 401
    ignored = [rec for rec in caplog.records if "192.0.2.7" in rec.getMessage()]
    assert len(ignored) == 1 and "trusted_proxies" in ignored[0].getMessage()


def test_an_unknown_provider_is_a_start_up_error(tmp_path):
    from xpresso_env.app import build_context
    from xpresso_env.core.errors import ConfigError

    settings = make_settings(tmp_path, extra={"auth": {"providers": ["local", "oidc"]}})
    with pytest.raises(ConfigError, match="unknown identity provider 'oidc'; installed: header, ldap, local"):
        build_context(settings, check_schema=False, images=False)


def test_racing_guesses_on_two_processes_are_checked_no_more_than_the_limit(make_world, settings):
    import threading

    strict = dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, login_max_failures=3))
    worlds = [make_world(settings_override=strict), make_world(settings_override=strict)]
    worlds[0].ctx.profile.set_password("mem", PASSWORD, by="(cli)")
    codes: list[int] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        r = login(worlds[n % 2], "mem", f"guess-{n}")
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [401] * 3 + [429] * 13, codes
    assert all(login(w, "mem").status_code == 429 for w in worlds)


def test_the_dummy_hash_is_made_at_the_first_check_not_when_the_service_is_built():
    """Every CLI command and process builds the service, and few check a password: the dummy hash
    an unknown user is checked against (about 0.13 s at the default cost) is made when the
    first password is checked, with the configured parameters, whoever that check is for."""
    from xpresso_env.access.passwords import Passwords

    passwords = Passwords(time_cost=1, memory_kib=1024, parallelism=1)
    assert passwords._dummy is None
    stored = passwords.hash("a right password")
    assert passwords.verify(stored, "a right password").ok
    assert passwords._dummy is not None and passwords._dummy.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert not passwords.verify(None, "a right password").ok
