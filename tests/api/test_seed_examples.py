"""The XPRESSO documentation's example records round-trip exactly (loaded, then served back)."""
from __future__ import annotations

import json

import yaml

from xpresso_env.admin.fixtures import load_fixtures

# Verbatim from ../shared/reference/environment-rest-apis.txt
HARNESS_EXAMPLE = json.loads("""{ "id": "94f03015-5f0d-4c2e-a6e6-49ca71442a36", "name": "TestHarness", "harness": "pyATS",
 "path": "/path/to/pyATS", "supporting_path": "", "configuration_state": "ENABLED", "operational_state": "ONLINE",
 "site": "OTT", "bldg": "ALL", "created_by": "test_user", "date_created": "2019-05-30T17:22:12.733397Z",
 "date_modified": "2019-05-30T20:41:35.288635Z", "deleted": false }""")
ENGINE_EXAMPLE = json.loads("""{ "type": "jenkins", "created_by": "test_user", "id": "421be594-34fa-4ea6-922a-678f3ca404f1",
 "configuration_state": "ENABLED", "base_url": "https://my-jenkins.mycompany.com", "site": "OTT", "bldg": "ALL",
 "deleted": false, "date_created": "2019-05-30T18:39:28.606540Z", "date_modified": "2019-05-31T18:48:26.498353Z",
 "operational_state": "ONLINE", "name": "ExecEngine" }""")


def test_examples_round_trip_byte_for_byte(world, tmp_path):
    fixtures = {"groups": ["myGroup"],
                "users": [{"name": "reader", "groups": {"myGroup": "guest"}}],
                "harnesses": [{"group": "myGroup", **HARNESS_EXAMPLE}],
                "engines": [{"group": "myGroup", **ENGINE_EXAMPLE, "username": "jenkins-user", "api_token": "secret"}]}
    path = tmp_path / "fixtures.yaml"
    path.write_text(yaml.safe_dump(fixtures))
    from xpresso_env.admin.fixtures import read_fixtures

    load_fixtures(world.ctx.storage, read_fixtures(path), world.ctx.clock)
    world.tokens["reader"] = world.ctx.auth.issue_token("reader").display
    harnesses = world.get("/api/v2/harnesses", user="reader", group="myGroup")
    assert harnesses.status_code == 200
    assert harnesses.json == [HARNESS_EXAMPLE]
    one = world.get(f"/api/v2/harnesses/{HARNESS_EXAMPLE['id']}", user="reader", group="myGroup")
    for key, value in HARNESS_EXAMPLE.items():
        assert json.dumps(one.json[key]) == json.dumps(value), key
    engines = world.get("/api/v2/engines", user="reader", group="myGroup").json
    assert engines == [ENGINE_EXAMPLE]
    one = world.get(f"/api/v2/engines/{ENGINE_EXAMPLE['id']}", user="reader", group="myGroup").json
    for key, value in ENGINE_EXAMPLE.items():
        assert json.dumps(one[key]) == json.dumps(value), key
    assert "secret" not in json.dumps(engines)


def test_loading_twice_is_an_upsert(world, tmp_path):
    data = {"groups": ["myGroup"], "harnesses": [{"group": "myGroup", **HARNESS_EXAMPLE}]}
    load_fixtures(world.ctx.storage, data, world.ctx.clock)
    changed = {"groups": ["myGroup"], "harnesses": [{"group": "myGroup", **HARNESS_EXAMPLE, "site": "SJC"}]}
    load_fixtures(world.ctx.storage, changed, world.ctx.clock)
    r = world.get("/api/v2/harnesses", group="myGroup")
    assert [h["site"] for h in r.json] == ["SJC"]


def test_a_bad_record_loads_nothing(world):
    import pytest

    from xpresso_env.core.errors import BadRequest

    before = world.dump()
    data = {"groups": ["newGroup"], "harnesses": [{"group": "newGroup", "name": "ok", "path": "/p"},
                                                  {"group": "newGroup", "name": "bad", "path": "relative"}]}
    with pytest.raises(BadRequest, match="harnesses\\[1\\].*path"):
        load_fixtures(world.ctx.storage, data, world.ctx.clock)
    assert world.dump() == before
