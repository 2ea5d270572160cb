"""Identity is not a name (CONTRACT section 16, issue 18): a token binds to the user it was issued
to, not to the name; deleting a user revokes their tokens for good."""
from __future__ import annotations

import jwt

from tests.conftest import SECRET

LIST = "/api/v2/harnesses"


def _get(world, token: str, group: str = "g1"):
    return world.client.simulate_get(LIST, headers={"Authorization": token, "Group": group})


def test_a_deleted_users_tokens_stay_dead_when_the_name_is_added_again(world):
    auth = world.ctx.auth
    auth.add_user("bob", roles={"g1": "group_admin"})
    old = auth.issue_token("bob")
    assert _get(world, old.display).status_code == 200
    auth.delete_user("bob")
    assert _get(world, old.display).status_code == 401
    auth.add_user("bob", roles={"g1": "guest"})
    r = _get(world, old.display)
    assert r.status_code == 401 and r.json == {"detail": "Invalid token."}
    listed = {t.jti: t for t in auth.list_tokens("bob")}
    assert listed[old.jti].revoked  # `token list bob` says so
    new = auth.issue_token("bob")
    assert _get(world, new.display).status_code == 200
    assert not {t.jti: t for t in auth.list_tokens("bob")}[new.jti].revoked


def test_a_token_names_its_user_by_uid(world):
    claims = jwt.decode(world.tokens["mem"].split()[1], SECRET, algorithms=["HS256"])
    users = {u.name: u for u in world.ctx.auth.list_users()}
    assert claims["uid"] == users["mem"].uid and claims["typ"] == "api"
    # A token signed for the right name but another identity is refused.
    forged = jwt.encode({**claims, "uid": "someone-else"}, SECRET, algorithm="HS256")
    assert _get(world, f"Jwt {forged}").status_code == 401


def test_a_token_from_before_uids_is_judged_by_its_issue_time(world):
    auth = world.ctx.auth
    auth.add_user("carl", roles={"g1": "member"})
    carl = {u.name: u for u in auth.list_users()}["carl"]
    claims = jwt.decode(auth.issue_token("carl").token, SECRET, algorithms=["HS256"])
    legacy = {k: v for k, v in claims.items() if k not in ("uid", "typ")}
    assert _get(world, "Jwt " + jwt.encode(legacy, SECRET, algorithm="HS256")).status_code == 200
    before = {**legacy, "iat": int(carl.date_created.timestamp()) - 60}
    assert _get(world, "Jwt " + jwt.encode(before, SECRET, algorithm="HS256")).status_code == 401


def test_the_command_lines_changes_are_audited(world):
    auth = world.ctx.auth
    issued = auth.issue_token("mem")
    auth.revoke(issued.jti)
    auth.set_role("mem", "g2", "guest")
    rows = [(r.event, r.by, r.detail) for r in world.ctx.audit.entries(user="mem")]
    assert rows[:3] == [("role_changed", "(cli)", "g2: none -> guest"), ("token_revoked", "(cli)", issued.jti),
                        ("token_created", "(cli)", issued.jti)]


def test_deleting_a_user_revokes_their_tokens_recorded_before_uids_and_no_one_elses(world):
    from datetime import timedelta

    from xpresso_env.core.codec import to_doc
    from xpresso_env.core.models import TokenRecord

    now = world.ctx.clock()
    with world.ctx.storage.write() as tx:  # as an import of an older export leaves them
        for jti, user in (("01d0000000", "mem"), ("02d0000000", "priv")):
            tx.insert(to_doc(TokenRecord(id=jti, user=user, date_created=now, expires=now + timedelta(days=1))))
    world.ctx.auth.delete_user("mem")
    revoked = {t.jti for t in world.ctx.auth.list_tokens() if t.revoked}
    assert "01d0000000" in revoked and "02d0000000" not in revoked
