"""Conditional GET (CONTRACT section 14): every GET answer carries an ETag; If-None-Match with the
current one is a 304 with no body; a change anywhere (another process included) is never hidden
behind a stale 304. Runs on every backend (SQLite, PostgreSQL, YAML), through the bare falcon app
and through what `serve` runs (the response cache's frontend before falcon)."""
from __future__ import annotations

import pytest
from falcon.testing import TestClient

from tests.conftest import World
from xpresso_env.app import create_wsgi_app
from xpresso_env.http.conditional import etag_of, matches

LIST = "/api/v2/harnesses"


@pytest.fixture(params=["falcon", "served"])
def front(request, world: World) -> World:
    if request.param == "falcon":
        return world
    return World(ctx=world.ctx, client=TestClient(create_wsgi_app(world.ctx)), tokens=world.tokens)


def _again(w: World, path: str, etag: str, user: str = "mem"):
    return w.client.simulate_get(path, headers=w.headers(user, **{"If-None-Match": etag}))


def test_unchanged_answers_are_304_without_a_body(front: World):
    h = front.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
    for path in (LIST, f"{LIST}/{h['id']}", f"{LIST}?site=", "/api/v2/me", "/api/v2/engines",
                 "/api/v2/resources/harnesses/h"):
        first = front.get(path, user="mem")
        assert first.status_code == 200, (path, first.text)
        etag = first.headers["ETag"]
        assert etag.startswith('"') and etag.endswith('"')
        for _ in range(2):  # a miss then a hit of the response cache: the same tag
            again = _again(front, path, etag)
            assert again.status_code == 304, path
            assert again.content == b"" and again.headers["ETag"] == etag
        assert front.get(path, user="mem").headers["ETag"] == etag


def test_a_change_by_another_process_is_never_a_stale_304(front: World, make_world):
    other = make_world()  # a second app on the same store stands for another process
    other.tokens = front.tokens
    h = front.post(LIST, {"name": "h", "path": "/p"}, user="priv").json
    item = f"{LIST}/{h['id']}"
    list_tag = front.get(LIST, user="mem").headers["ETag"]
    item_tag = front.get(item, user="mem").headers["ETag"]
    assert _again(front, LIST, list_tag).status_code == 304
    other.patch(item, {"site": "NEW"}, user="priv")
    changed = _again(front, LIST, list_tag)
    assert changed.status_code == 200 and changed.json[0]["site"] == "NEW"
    assert changed.headers["ETag"] != list_tag
    changed_item = _again(front, item, item_tag)
    assert changed_item.status_code == 200 and changed_item.json["site"] == "NEW"
    assert _again(front, LIST, changed.headers["ETag"]).status_code == 304
    other.post(LIST, {"name": "h2", "path": "/p"}, user="priv")
    grown = _again(front, LIST, changed.headers["ETag"])
    assert grown.status_code == 200 and len(grown.json) == 2


def test_a_refused_request_is_refused_whatever_it_holds(front: World):
    etag = front.get(LIST, user="mem").headers["ETag"]
    front.ctx.auth.set_role("mem", "g1", None)  # no longer a member: the 304 must not leak that nothing changed
    r = _again(front, LIST, etag)
    assert r.status_code == 403 and "ETag" not in r.headers
    missing = front.client.simulate_get(f"{LIST}/00000000-0000-4000-8000-000000000000",
                                        headers=front.headers("admin", **{"If-None-Match": "*"}))
    assert missing.status_code == 404 and "ETag" not in missing.headers


def test_uncached_reads_are_tagged_too(make_world):
    """Images are read afresh every time (builds change them): the tag comes from the body."""
    w = make_world(images=True)
    for path in ("/api/v2/images", "/api/v2/openapi.json", "/api/v2/plugins"):
        first = w.get(path)
        assert first.status_code == 200 and "ETag" in first.headers, path
        assert _again(w, path, first.headers["ETag"], user="admin").status_code == 304, path


def test_if_none_match_forms():
    tag = etag_of(b"[]")
    assert matches(tag, tag) and matches(f"W/{tag}", tag) and matches(f'"other", {tag}', tag)
    assert matches("*", tag)
    assert not matches(None, tag) and not matches("", tag) and not matches('"other"', tag)
    # the same body with another unpaged count (X-Total-Count) is another answer
    assert etag_of(b"[]", "3") != etag_of(b"[]", "4") != etag_of(b"[]")
