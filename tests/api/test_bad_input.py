"""Bad input: a clear 4xx with a body, and nothing changes in storage (issue 2's list)."""
from __future__ import annotations

import json

import pytest

H = "/api/v2/harnesses"
E = "/api/v2/engines"

BAD_HARNESS_BODIES = [
    {"name": "x", "path": "relative/path"},
    {"name": "", "path": "/p"},
    {"name": "x" * 10_000, "path": "/p"},
    {"name": 5, "path": "/p"},
    {"name": None, "path": "/p"},
    {"name": ["x"], "path": "/p"},
    {"name": "x", "path": "/p", "harness": "pytest"},
    {"name": "x", "path": "/p", "configuration_state": "enabled"},
    {"name": "x", "path": "/p", "operational_state": "ONLINE"},
    {"name": "x", "path": "/p", "id": "94f03015-5f0d-4c2e-a6e6-49ca71442a36"},
    {"name": "x", "path": "/p", "created_by": "admin"},
    {"name": "x", "path": "/p", "deleted": True},
    {"name": "x", "path": "/p", "date_created": "2019-05-30T17:22:12.733397Z"},
    {"name": "x", "path": "/p", "unknown_field": 1},
    {"name": "x", "path": "/p", "support_liveview": "yes"},
    {"name": "x\u0000y", "path": "/p"},
    {"name": " x", "path": "/p"},
    {"path": "/p"},
    {"name": "x"},
    {"name": "x", "path": "/p", "site": "s" * 65},
]
BAD_ENGINE_URLS = ["file:///etc/passwd", "javascript:alert(1)", "ftp://x.example.com", "http://", "//x.example.com",
                   "not a url", "http://exa mple.com", "https://x.example.com:99999/", 42, ""]


@pytest.mark.parametrize("body", BAD_HARNESS_BODIES, ids=range(len(BAD_HARNESS_BODIES)))
def test_bad_harness_bodies(world, body):
    before = world.dump()
    r = world.post(H, body, user="priv")
    assert r.status_code == 400, r.text
    assert isinstance(r.json, dict) and r.json
    assert world.dump() == before


@pytest.mark.parametrize("url", BAD_ENGINE_URLS)
def test_bad_engine_urls(world, url):
    before = world.dump()
    r = world.post(E, {"name": "e", "base_url": url}, user="priv")
    assert r.status_code == 400 and "base_url" in r.json, r.text
    assert world.dump() == before


@pytest.mark.parametrize("raw", ["{bad json", "[1, 2]", '"a string"', "42", "null", "", "\xff\xfe"])
def test_non_object_bodies(world, raw):
    before = world.dump()
    r = world.client.simulate_post(H, body=raw.encode("latin-1"),
                                   headers={**world.headers("priv"), "Content-Type": "application/json"})
    assert r.status_code == 400 and "detail" in r.json
    assert world.dump() == before


def test_patch_cannot_set_read_only_fields(world):
    h = world.post(H, {"name": "x", "path": "/p"}, user="priv").json
    before = world.dump()
    for body in ({"operational_state": "ONLINE"}, {"id": "x"}, {"created_by": "x"}, {"deleted": True},
                 {"path": "rel"}, [], {"date_modified": "2020-01-01T00:00:00.000000Z"}):
        r = world.patch(f"{H}/{h['id']}", body, user="priv")
        assert r.status_code == 400, body
    assert world.dump() == before


@pytest.mark.parametrize("rid", ["not-a-uuid", "1", "94f03015", "%2e%2e", "..", "' OR 1=1 --",
                                 "94f03015-5f0d-4c2e-a6e6-49ca71442a3g", "x" * 5000])
def test_non_uuid_ids_are_404(world, rid):
    for call in (world.get, world.delete):
        r = call(f"{H}/{rid}")
        assert r.status_code == 404 and r.json == {"detail": "Not Found"}
    r = world.patch(f"{H}/{rid}", {"site": "x"})
    assert r.status_code == 404


def test_body_over_the_limit_is_413(world):
    before = world.dump()
    r = world.post(H, {"name": "x", "path": "/p", "site": "s" * (1 << 20)}, user="priv")
    assert r.status_code == 413 and "detail" in r.json
    assert world.dump() == before


def test_json_with_huge_nesting_is_a_400_not_a_crash(world):
    body = "[" * 100_000 + "]" * 100_000
    r = world.client.simulate_post(H, body=body, headers={**world.headers("priv"), "Content-Type": "application/json"})
    assert r.status_code in (400, 413)
    assert json.loads(r.text)["detail"]
