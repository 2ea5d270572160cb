"""A refusal keeps DRF's words for the client and tells the operator's log why (``why``)."""
from __future__ import annotations

import pytest

from tests.conftest import make_settings, seed
from xpresso_env.access.auth import AuthService
from xpresso_env.app import build_context
from xpresso_env.core.errors import PermissionDenied

DRF = "You do not have permission to perform this action."


@pytest.fixture
def ctx(tmp_path):
    ctx = build_context(make_settings(tmp_path, "sqlite"), check_schema=False, images=False)
    ctx.storage.init()
    tokens = seed(ctx)
    yield ctx, tokens
    ctx.close()


def _caller(ctx, tokens, user, group):
    with ctx.storage.read() as tx:
        return ctx.auth.authenticate(tokens[user], group, tx)


def test_missing_permission_names_permission_group_and_user(ctx):
    ctx, tokens = ctx
    guest = _caller(ctx, tokens, "guest", "g1")
    with pytest.raises(PermissionDenied) as info:
        AuthService.require(guest, "add_harness")
    assert info.value.detail == DRF
    assert info.value.why == "missing permission 'add_harness' in group 'g1' for user 'guest'"
    AuthService.require(_caller(ctx, tokens, "priv", "g1"), "add_harness")  # held: no error


@pytest.mark.parametrize("user,group,why", [
    ("mem", "g2", "user 'mem' is not a member of group 'g2'"),
    ("mem", "nope", "group 'nope' does not exist (user 'mem')"),
    ("admin", "nope", "group 'nope' does not exist (user 'admin')"),
    ("mem", "a b", "group 'a b' does not exist (user 'mem')"),
])
def test_group_refusals_say_why(ctx, user, group, why):
    ctx, tokens = ctx
    with pytest.raises(PermissionDenied) as info:
        _caller(ctx, tokens, user, group)
    assert info.value.detail == DRF and info.value.why == why
