"""Hostile builds: nothing a client sends reaches a path outside the roots or an option of git."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import files_outside

TRAVERSAL_NAMES = ["../etc", "../../tmp/x", "/etc/passwd", "%2e%2e", "%2e%2e/%2e%2e/etc", "a/../../b", "..",
                   "a//b", "a/", "/abs", "name\x00", "na me", "Name", "a/./b", "~root", "a:b"]
TRAVERSAL_TAGS = ["..", "../x", "/etc/passwd", "%2e%2e", "..%2f..%2fetc", "x/../../y", ".hidden", "-rf",
                  "a b", "t\n", "a" * 129, ""]
HOSTILE_REFS = ["--upload-pack=touch /tmp/pwned", "-b", "--output=/tmp/x", "main..feature", "main~1", "main^",
                "HEAD@{1}", "a b", "ref with spaces", "refs/heads/../../x", ".hidden", "x.lock", "x/", "a:b",
                "a\\b", "a?b", "a[b", "a*b", "\tmain", "main\n", "@", "", "a" * 300, "-" * 7]


@pytest.fixture
def hostile(make_image_world, tmp_path):
    w = make_image_world(start=True)
    before = files_outside(tmp_path)
    yield w
    # nothing was built, nothing was written anywhere (the roots may only hold logs of valid builds)
    assert files_outside(tmp_path) == before
    assert w.dump()[5] == []
    assert not Path("/tmp/pwned").exists()


def test_path_traversal_in_name_and_tag(hostile):
    for name in TRAVERSAL_NAMES:
        r = hostile.submit({"name": name, "tag": "1", "git_ref": "main"})
        assert r.status_code == 400 and set(r.json) == {"name"}, (name, r.json)
    for tag in TRAVERSAL_TAGS:
        r = hostile.submit({"name": "polaris", "tag": tag, "git_ref": "main"})
        assert r.status_code == 400 and set(r.json) == {"tag"}, (tag, r.json)
    # a raw body, so nothing but JSON escapes stands between the bytes and the service
    raw = b'{"name": "..\\/..\\/etc", "tag": "..\\u002f..", "git_ref": "main"}'
    r = hostile.client.simulate_post("/api/v2/images/polaris_build", body=raw,
                                     headers={**hostile.headers("mem"), "Content-Type": "application/json"})
    assert r.status_code == 400 and set(r.json) == {"name", "tag"}, r.json


def test_option_injection_and_revision_expressions_in_refs(hostile):
    for field in ("git_ref", "base_ref"):
        for ref in HOSTILE_REFS:
            body = {"name": "polaris", "tag": "1", "git_ref": "main", field: ref}
            r = hostile.submit(body)
            assert r.status_code == 400 and set(r.json) == {field}, (field, ref, r.json)


def test_hostile_group_names(hostile):
    for groups in (["../g2"], ["/etc"], ["g1/../../x"], ["%2e%2e"], [".."]):
        r = hostile.submit({"name": "polaris", "tag": "1", "git_ref": "main", "groups": groups})
        assert r.status_code == 400 and set(r.json) == {"groups"}, (groups, r.json)
    r = hostile.submit({"name": "polaris", "tag": "1", "git_ref": "main"}, user="admin", group="../g1")
    assert r.status_code == 403


def test_a_symlink_in_the_nfs_root_cannot_lead_outside(make_image_world, tmp_path):
    w = make_image_world(start=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (w.root / "g1").mkdir(parents=True)
    os.symlink(outside, w.root / "g1" / "escape")
    r = w.submit({"name": "escape", "tag": "1", "git_ref": "main"})
    assert r.status_code == 400 and "outside images.nfs_root" in r.json["name"][0]
    assert list(outside.iterdir()) == []


def test_hostile_path_ids(make_image_world):
    w = make_image_world(start=False)
    for ident in ("..", "%2e%2e", "../../etc/passwd", "0" * 1000, "00000000-0000-0000-0000-000000000000"):
        assert w.get(f"/api/v2/images/{ident}/logs").status_code == 404
        assert w.get(f"/api/v2/images/{ident}").status_code == 404
