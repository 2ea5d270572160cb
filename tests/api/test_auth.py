"""Tokens, the Group header and the order of checks (CONTRACT sections 1, 2, 7)."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import jwt
import pytest

from tests.conftest import SECRET

LIST = "/api/v2/harnesses"


def bare(token: str) -> str:
    return token.split(" ", 1)[1]


@pytest.mark.parametrize("scheme", ["Jwt {}", "JWT {}", "jwt {}", "Bearer {}", "bearer {}", "{}"])
def test_authorization_schemes(world, scheme):
    r = world.client.simulate_get(LIST, headers={"Authorization": scheme.format(bare(world.tokens["mem"])),
                                                 "Group": "g1"})
    assert r.status_code == 200, r.text


def test_missing_token_401(world):
    r = world.client.simulate_get(LIST, headers={"Group": "g1"})
    assert r.status_code == 401
    assert r.json == {"detail": "Authentication credentials were not provided."}
    assert r.headers["WWW-Authenticate"] == "Jwt"


def _forge(payload: dict, key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


def _claims(world, user="mem"):
    return jwt.decode(bare(world.tokens[user]), SECRET, algorithms=["HS256"])


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_tampered_and_forged_tokens_401(world):
    claims = _claims(world, "mem")
    header, payload, signature = bare(world.tokens["mem"]).split(".")
    tampered = ".".join([header, _b64({**claims, "sub": "admin"}), signature])
    alg_none = ".".join([_b64({"alg": "none", "typ": "JWT"}), _b64({**claims, "sub": "admin"}), ""])
    other_secret = _forge({**claims, "sub": "admin"}, key="another-secret-" + "x" * 40)
    no_exp = _forge({k: v for k, v in claims.items() if k != "exp"})
    for token in (tampered, alg_none, other_secret, no_exp, "garbage", "a.b.c", "Jwt a b"):
        r = world.client.simulate_get(LIST, headers={"Authorization": f"Jwt {token}", "Group": "g1"})
        assert r.status_code == 401, token
        assert r.json == {"detail": "Invalid token."}


def test_expired_token(world):
    claims = _claims(world)
    past = int((datetime.now(timezone.utc) - timedelta(days=1)).timestamp())
    token = _forge({**claims, "exp": past})
    r = world.client.simulate_get(LIST, headers={"Authorization": f"Jwt {token}", "Group": "g1"})
    assert r.status_code == 401 and r.json == {"detail": "Token has expired."}


def test_expiry_follows_the_injected_clock(make_world):
    now = [datetime.now(timezone.utc)]
    w = make_world(clock=lambda: now[0])
    assert w.get(LIST, user="mem").status_code == 200
    now[0] += timedelta(days=31)  # token_days defaults to 30
    r = w.get(LIST, user="mem")
    assert r.status_code == 401 and r.json == {"detail": "Token has expired."}


def test_revoked_token_and_deleted_user(world):
    jti = _claims(world, "mem")["jti"]
    world.ctx.auth.revoke(jti)
    r = world.get(LIST, user="mem")
    assert r.status_code == 401 and r.json == {"detail": "Invalid token."}
    world.ctx.auth.delete_user("priv")
    r = world.get(LIST, user="priv")
    assert r.status_code == 401 and r.json == {"detail": "Invalid token."}
    assert world.get(LIST, user="ga").status_code == 200  # others unaffected


def test_group_header_rules(world):
    c = world.client
    h = {"Authorization": world.tokens["mem"]}
    assert c.simulate_get(LIST, headers=h).status_code == 200  # single group: implied
    assert c.simulate_get(LIST, headers={**h, "X-Group": "g1"}).status_code == 200
    multi = {"Authorization": world.tokens["multi"]}
    r = c.simulate_get(LIST, headers=multi)
    assert r.status_code == 400 and "Group" in r.json["detail"]
    assert c.simulate_get(LIST, headers={**multi, "Group": "g2"}).status_code == 200
    # Group wins over X-Group
    assert c.simulate_get(LIST, headers={**h, "Group": "g1", "X-Group": "g2"}).status_code == 200
    assert c.simulate_get(LIST, headers={**h, "Group": "g2", "X-Group": "g1"}).status_code == 403
    # not a member / not existing / wrong case
    for group in ("g2", "nope", "G1"):
        r = c.simulate_get(LIST, headers={**h, "Group": group})
        assert r.status_code == 403 and r.json == {"detail": "You do not have permission to perform this action."}
    admin = {"Authorization": world.tokens["admin"]}
    assert c.simulate_get(LIST, headers={**admin, "Group": "g3"}).status_code == 200
    assert c.simulate_get(LIST, headers={**admin, "Group": "nope"}).status_code == 403
    assert c.simulate_get(LIST, headers=admin).status_code == 400


def test_order_of_checks(world):
    c = world.client
    big = b"{" + b" " * (2 << 20) + b"}"
    # 401 before anything else
    r = c.simulate_post(LIST, body=big, headers={"Group": "nope", "Content-Type": "text/plain"})
    assert r.status_code == 401
    # then the group
    r = c.simulate_post(LIST, body=big, headers={"Authorization": world.tokens["mem"], "Group": "nope"})
    assert r.status_code == 403
    # then the permission (member cannot add harnesses) before the body
    r = c.simulate_post(LIST, body=big, headers={"Authorization": world.tokens["mem"], "Group": "g1"})
    assert r.status_code == 403
    # then the body: 413, 415, 400
    h = {"Authorization": world.tokens["priv"], "Group": "g1"}
    assert c.simulate_post(LIST, body=big, headers=h).status_code == 413
    r = c.simulate_post(LIST, body="name=x", headers={**h, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "detail" in r.json
    assert c.simulate_post(LIST, body="{", headers={**h, "Content-Type": "application/json"}).status_code == 400


def test_token_cli_shape(world):
    token = world.ctx.auth.issue_token("mem")
    assert token.display.startswith("Jwt ")
    claims = jwt.decode(token.token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "mem" and claims["jti"] == token.jti and claims["exp"] > claims["iat"]
