"""The ldap identity provider against a real OpenLDAP (Debian's slapd, started by the tests on a
loopback port with a throw-away database: xpresso_env/testing/slapd.py). Direct bind and search
then bind, group roles re-read at each sign-in with hand-given roles kept, StartTLS and LDAPS with
a CA file, and a dead directory answering 503 within seconds."""
from __future__ import annotations

import dataclasses
import socket
import time

import pytest

from xpresso_env.testing.slapd import GROUPS, PEOPLE, ROOT_DN, ROOT_PW, group, person, slapd

pytestmark = pytest.mark.slow  # a real slapd

LOGIN, ME = "/api/v2/auth/login", "/api/v2/me"
ENTRIES = "\n".join([person("alice", "alice-pw-1", "alice@example.org"), person("bob", "bob-pw-12"),
                     group("devs", ["alice"]), group("leads", ["alice"]), group("others", ["bob"])])
ROLES = {f"cn=devs,{GROUPS}": ("g1:member",), f"cn=leads,{GROUPS}": ("g1:privilege_member", "g3:guest")}


@pytest.fixture(scope="module")
def directory():
    with slapd(ENTRIES, tls=True) as d:
        yield d


def ldap_world(make_world, settings, **ldap):
    options = {"group_search_base": GROUPS, "group_roles": ROLES, "connect_timeout_s": 2.0, "timeout_s": 2.0, **ldap}
    auth = dataclasses.replace(settings.auth, providers=("local", "ldap"),
                               ldap=dataclasses.replace(settings.auth.ldap, **options))
    return make_world(settings_override=dataclasses.replace(settings, auth=auth))


def login(world, user: str, password: str):
    return world.client.simulate_post(LOGIN, json={"username": user, "password": password})


def me(world, token: str) -> dict:
    return world.client.simulate_get(ME, headers={"Authorization": token}).json


def test_direct_bind_creates_the_user_with_mail_and_group_roles(make_world, settings, directory):
    world = ldap_world(make_world, settings, url=directory.url, user_dn_template=f"uid={{username}},{PEOPLE}")
    r = login(world, "alice", "alice-pw-1")
    assert r.status_code == 200, r.text
    who = me(world, r.json["token"])
    assert who["email"] == "alice@example.org" and who["provider"] == "ldap"  # the page offers no password change
    assert who["groups"] == {"g1": "privilege_member", "g3": "guest"}  # the higher of devs' and leads' in g1
    assert login(world, "alice", "wrong password").status_code == 401
    assert login(world, "nobody", "whatever-pw").status_code == 401
    assert login(world, "alice", "").status_code == 400  # never an anonymous bind


def test_search_then_bind(make_world, settings, directory):
    world = ldap_world(make_world, settings, url=directory.url, bind_dn=ROOT_DN, bind_password=ROOT_PW,
                       user_search_base=PEOPLE)
    r = login(world, "bob", "bob-pw-12")
    assert r.status_code == 200, r.text
    assert me(world, r.json["token"])["groups"] == {}  # `others` gives no role
    assert login(world, "bob", "alice-pw-1").status_code == 401
    assert login(world, "nobody", "bob-pw-12").status_code == 401
    assert login(world, "b*", "bob-pw-12").status_code == 401  # the filter is escaped


def test_group_roles_are_re_read_and_hand_roles_kept(make_world, settings, directory):
    import ldap3

    world = ldap_world(make_world, settings, url=directory.url, user_dn_template=f"uid={{username}},{PEOPLE}")
    assert login(world, "alice", "alice-pw-1").status_code == 200
    world.ctx.auth.set_role("alice", "g2", "guest")  # by hand
    leads = f"cn=leads,{GROUPS}"
    directory.modify(leads, {"member": [(ldap3.MODIFY_DELETE, [f"uid=alice,{PEOPLE}"])]})
    try:
        r = login(world, "alice", "alice-pw-1")
        assert me(world, r.json["token"])["groups"] == {"g1": "member", "g2": "guest"}
        users = {u.name: u for u in world.ctx.auth.list_users()}
        assert users["alice"].roles == {"g2": "guest"}  # the hand-given role, untouched
        assert [e.detail for e in world.ctx.audit.entries(user="alice", event="role_changed")][0] == \
            "directory roles: g1:member"
    finally:
        directory.modify(leads, {"member": [(ldap3.MODIFY_ADD, [f"uid=alice,{PEOPLE}"])]})


def test_starttls_and_ldaps_with_a_ca_file(make_world, settings, directory):
    template = f"uid={{username}},{PEOPLE}"
    for ldap in ({"url": directory.url, "start_tls": True, "ca_file": str(directory.ca_file)},
                 {"url": directory.ldaps_url, "ca_file": str(directory.ca_file)}):
        world = ldap_world(make_world, settings, user_dn_template=template, **ldap)
        assert login(world, "alice", "alice-pw-1").status_code == 200, ldap
    # without the CA the directory's certificate is not trusted: refused, not signed in
    world = ldap_world(make_world, settings, user_dn_template=template, url=directory.ldaps_url)
    assert login(world, "alice", "alice-pw-1").status_code == 503


def test_a_dead_directory_answers_503_within_seconds(make_world, settings):
    template = f"uid={{username}},{PEOPLE}"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel's backlog) and never answers a byte
    try:
        port = silent.getsockname()[1]
        world = ldap_world(make_world, settings, user_dn_template=template, url=f"ldap://127.0.0.1:{port}",
                           timeout_s=1.0, connect_timeout_s=1.0)
        started = time.monotonic()
        r = login(world, "alice", "alice-pw-1")
        assert r.status_code == 503 and r.json == {"detail": "The directory (auth.ldap) cannot be reached, try again later."}
        assert time.monotonic() - started < 5
    finally:
        silent.close()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: refused at once
    world = ldap_world(make_world, settings, user_dn_template=template, url=f"ldap://127.0.0.1:{port}")
    started = time.monotonic()
    assert login(world, "alice", "alice-pw-1").status_code == 503
    assert time.monotonic() - started < 5
    # a local user still signs in while the directory is down (local is tried first)
    world.ctx.profile.set_password("mem", "a local password", by="(cli)")
    assert login(world, "mem", "a local password").status_code == 200


def test_bad_ldap_settings_fail_at_start_up(make_world, settings):
    from xpresso_env.core.errors import ConfigError

    with pytest.raises(ConfigError, match="auth.ldap.url"):
        ldap_world(make_world, settings, user_dn_template="uid={username}")
    with pytest.raises(ConfigError, match="GROUP:ROLE"):
        ldap_world(make_world, settings, url="ldap://127.0.0.1:1", user_dn_template="uid={username}",
                   group_roles={"cn=x": ("g1:emperor",)})
