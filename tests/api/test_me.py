"""GET /api/v2/me (CONTRACT section 12): the caller, their groups and roles, and the permissions
they hold in the request's group. The Group header is optional here."""
from __future__ import annotations

import jwt
from falcon.testing import TestClient

from tests.conftest import SECRET
from xpresso_env.app import create_wsgi_app
from xpresso_env.core.models import ALL_PERMISSIONS

ME = "/api/v2/me"
MEMBER = ["add_docker_image"]
PRIVILEGE = sorted({"add_docker_image", "add_harness", "change_harness", "add_engine", "change_engine",
                    "delete_docker_image"})


PROFILE = ("email", "date_joined", "last_login", "preferences", "provider")


def access(me: dict) -> dict:
    """GET /me without the profile fields (CONTRACT section 13: tests/api/test_me_profile.py)."""
    assert set(PROFILE) <= set(me)
    return {k: v for k, v in me.items() if k not in PROFILE}


def test_member_with_one_group_falls_back_to_it(world):
    r = world.get(ME, user="mem", group=None)
    assert r.status_code == 200, r.text
    assert r.json["provider"] == "local"  # added by hand: a local password
    assert access(r.json) == {"user": "mem", "superuser": False, "groups": {"g1": "member"}, "group": "g1",
                      "permissions": MEMBER}


def test_named_group_lists_that_roles_permissions(world):
    assert world.get(ME, user="priv").json["permissions"] == PRIVILEGE
    assert world.get(ME, user="guest").json["permissions"] == []
    assert world.get(ME, user="ga").json["permissions"] == sorted(ALL_PERMISSIONS)


def test_several_groups_and_no_header_gives_no_group(world):
    r = world.get(ME, user="multi", group=None)
    assert r.status_code == 200, r.text
    assert access(r.json) == {"user": "multi", "superuser": False, "groups": {"g1": "member", "g2": "member"},
                      "group": None, "permissions": []}
    r = world.get(ME, user="multi", group="g2")
    assert r.json["group"] == "g2" and r.json["permissions"] == MEMBER
    # X-Group is read when Group is absent, as everywhere
    r = world.client.simulate_get(ME, headers={"Authorization": world.tokens["multi"], "X-Group": "g2"})
    assert r.json["group"] == "g2"


def test_superuser_sees_every_group(world):
    r = world.get(ME, user="admin", group=None)
    assert r.status_code == 200, r.text
    assert access(r.json) == {"user": "admin", "superuser": True, "groups": {"g1": None, "g2": None, "g3": None},
                      "group": None, "permissions": []}
    r = world.get(ME, user="admin", group="g3")
    assert r.json["group"] == "g3" and r.json["permissions"] == sorted(ALL_PERMISSIONS)


def test_group_checks_as_everywhere(world):
    r = world.get(ME, user="mem", group="g2")
    assert r.status_code == 403 and r.json == {"detail": "You do not have permission to perform this action."}
    assert world.get(ME, user="admin", group="nope").status_code == 403


def test_token_checks(world):
    r = world.client.simulate_get(ME)
    assert r.status_code == 401 and r.json == {"detail": "Authentication credentials were not provided."}
    assert r.headers["WWW-Authenticate"] == "Jwt"
    r = world.client.simulate_get(ME, headers={"Authorization": "Jwt nonsense"})
    assert r.status_code == 401 and r.json == {"detail": "Invalid token."}
    bare_token = world.tokens["mem"].split(" ", 1)[1]
    assert world.client.simulate_get(ME, headers={"Authorization": bare_token}).json["user"] == "mem"
    jti = jwt.decode(bare_token, SECRET, algorithms=["HS256"])["jti"]
    world.ctx.auth.revoke(jti)
    r = world.client.simulate_get(ME, headers={"Authorization": bare_token})
    assert r.status_code == 401 and r.json == {"detail": "Invalid token."}


def test_unknown_query_parameter_is_400(world):
    r = world.get(ME, user="mem", params={"x": "1"})
    assert r.status_code == 400 and "x" in r.json["detail"]


def test_through_the_served_stack_with_the_response_cache(world):
    """The WSGI stack a server runs (cache frontend in front): a Group-less request works, and a
    role change shows at once (the answer is never stale)."""
    client = TestClient(create_wsgi_app(world.ctx))
    headers = {"Authorization": world.tokens["multi"]}
    assert client.simulate_get("/api/v2/harnesses", headers={**headers, "Group": "g1"}).status_code == 200
    for _ in range(2):
        r = client.simulate_get(ME, headers=headers)
        assert r.status_code == 200 and r.json["group"] is None and r.json["groups"]["g1"] == "member"
    world.ctx.auth.set_role("multi", "g1", "group_admin")
    r = client.simulate_get(ME, headers={**headers, "Group": "g1"})
    assert r.json["groups"]["g1"] == "group_admin" and "manage_group" in r.json["permissions"]
    assert client.simulate_get(ME, headers=headers).json["groups"]["g1"] == "group_admin"
