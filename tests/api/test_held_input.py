"""Input held to its rules (CONTRACT section 16): an engine's ``base_url`` carries no credentials,
and every integer in a query string is ASCII digits. Every storage backend (the ``world`` fixture)."""
from __future__ import annotations

import uuid

import pytest
import yaml

from xpresso_env.admin.fixtures import load_fixtures
from xpresso_env.admin.transfer import import_file
from xpresso_env.builds.files import ImagePaths
from xpresso_env.core.errors import BadRequest

ENGINE = {"name": "e1", "base_url": "https://jenkins.example.com/"}
WITH_CREDENTIALS = ["https://user:pass@jenkins.example.com/", "http://urluser:urlpass@127.0.0.1:18901/job",
                    "http://127.0.0.1:18901@evil.example/", "https://token@jenkins.example.com/",
                    "http://@jenkins.example.com/", "HTTPS://a%40b:c@jenkins.example.com"]


# -- credentials only where they belong -------------------------------------------------------------

@pytest.mark.parametrize("url", WITH_CREDENTIALS)
def test_a_base_url_with_user_information_is_a_field_error_on_create_and_update(world, url):
    before = world.dump()
    res = world.post("/api/v2/engines", {**ENGINE, "base_url": url})
    assert res.status_code == 400, res.text
    assert list(res.json) == ["base_url"] and "username and api_token" in res.json["base_url"][0]
    assert world.dump() == before
    engine = world.post("/api/v2/engines", ENGINE).json
    before = world.dump()
    res = world.patch(f"/api/v2/engines/{engine['id']}", {"base_url": url})
    assert res.status_code == 400 and list(res.json) == ["base_url"], res.text
    assert world.dump() == before
    assert world.get(f"/api/v2/engines/{engine['id']}", user="guest").json["base_url"] == ENGINE["base_url"]


def test_credentials_go_in_username_and_api_token_which_stay_write_only(world):
    res = world.post("/api/v2/engines", {**ENGINE, "username": "urluser", "api_token": "urlpass"})
    assert res.status_code == 201, res.text
    shown = world.get(f"/api/v2/engines/{res.json['id']}", user="guest")
    assert "urlpass" not in shown.text and "api_token" not in shown.json
    for url in ("https://jenkins.example.com/job/a@b", "https://jenkins.example.com/?who=a@b"):  # not user info
        assert world.patch(f"/api/v2/engines/{res.json['id']}", {"base_url": url}).status_code == 200


def test_fixtures_and_import_refuse_credentials_in_a_base_url(world, settings, tmp_path):
    data = {"groups": ["g9"], "engines": [{"group": "g9", **ENGINE, "base_url": WITH_CREDENTIALS[1]}]}
    with pytest.raises(BadRequest, match="base_url"):
        load_fixtures(world.ctx.storage, data, world.ctx.clock)
    doc = {"id": str(uuid.uuid4()), "group": "g1", "name": "e9", "created": "2026-01-01T00:00:00.000000Z",
           "body": {"name": "e9", "base_url": WITH_CREDENTIALS[2]}}
    export = {"format": "xpresso-env-export", "version": 1, "kinds": {"engine": [doc]}}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(export), encoding="utf-8")
    with pytest.raises(BadRequest, match="base_url"):
        import_file(world.ctx.storage, tmp_path / "x.yaml", ImagePaths.from_settings(settings))
    with world.ctx.storage.read() as tx:
        assert tx.query("engine") == [] and tx.get("group", "g9") is None


# -- integers are ASCII digits ----------------------------------------------------------------------

NOT_ASCII_DIGITS = ["%D9%A3", "%EF%BC%93", "%DB%B3", "%E0%A5%A9", "+3", "%203", "3%20", "1_0", "0x3", "3.0", ""]


@pytest.fixture
def routes(world):
    """A list route of every kind that pages, and the harness whose history is listed."""
    harness = world.post("/api/v2/harnesses", {"name": "h1", "path": "/opt/pyats"}).json["id"]
    hook = world.post("/api/v2/webhooks", {"url": "http://127.0.0.1:9/x", "events": ["*"],
                                           "secret": "a-secret-of-24-characters"}, user="ga").json["id"]
    return ["/api/v2/harnesses", "/api/v2/engines", f"/api/v2/harnesses/{harness}/history", "/api/v2/webhooks",
            f"/api/v2/webhooks/{hook}/deliveries"]


@pytest.mark.parametrize("raw", NOT_ASCII_DIGITS)
@pytest.mark.parametrize("name", ["limit", "offset"])
def test_limit_and_offset_take_ascii_digits_only(world, routes, name, raw):
    for path in routes:
        res = world.get(path, user="ga", query_string=f"{name}={raw}")
        assert res.status_code == 400, (path, raw, res.text)
        assert list(res.json) == [name], (path, raw, res.text)


def test_ascii_digits_still_work_and_a_huge_offset_is_past_the_end(world, routes):
    for path in routes:
        assert world.get(path, user="ga", query_string="limit=3&offset=0").status_code == 200, path
        res = world.get(path, user="ga", query_string="offset=" + "9" * 5000)
        assert res.status_code == 200 and res.json == [], (path, res.text)
        assert world.get(path, user="ga", query_string="limit=" + "1" * 5000).status_code == 400


@pytest.mark.parametrize("raw", ["%D9%A3", "%EF%BC%93", "+3", "%203", "1_0"])
def test_a_build_log_offset_takes_ascii_digits_only(make_world, raw):
    world = make_world(images=True)
    res = world.get(f"/api/v2/images/{uuid.uuid4()}/logs", query_string=f"offset={raw}")
    assert res.status_code == 400 and list(res.json) == ["offset"], res.text
    assert world.get(f"/api/v2/images/{uuid.uuid4()}/logs", query_string="offset=" + "9" * 5000).status_code == 404
