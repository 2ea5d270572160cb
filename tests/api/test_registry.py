"""Harness and engine registries through the API (CONTRACT section 3), on every backend."""
from __future__ import annotations

import uuid

import pytest

HARNESS_KEYS = ["id", "name", "harness", "path", "supporting_path", "configuration_state", "operational_state",
                "site", "bldg", "created_by", "date_created", "date_modified", "deleted"]
ENGINE_KEYS = ["id", "name", "type", "base_url", "configuration_state", "operational_state", "site", "bldg",
               "created_by", "date_created", "date_modified", "deleted"]


def new_harness(world, name="H1", user="priv", group="g1", **extra):
    r = world.post("/api/v2/harnesses", {"name": name, "path": "/opt/pyats", "harness": "pyATS",
                                         "site": "OTT", "bldg": "ALL", **extra}, user=user, group=group)
    assert r.status_code == 201, r.text
    return r.json


def new_engine(world, name="E1", user="priv", group="g1", **extra):
    r = world.post("/api/v2/engines", {"name": name, "type": "jenkins", "base_url": "https://jenkins.example.com",
                                       "site": "OTT", "bldg": "ALL", "username": "jenkins-user",
                                       "api_token": "s3cr3t-token", **extra}, user=user, group=group)
    assert r.status_code == 201, r.text
    return r.json


def test_harness_create_retrieve_list(world):
    h = new_harness(world)
    assert list(h) == HARNESS_KEYS
    assert h["created_by"] == "priv" and h["configuration_state"] == "ENABLED" and h["deleted"] is False
    assert h["operational_state"] == "UNKNOWN"
    uuid.UUID(h["id"])
    r = world.get(f"/api/v2/harnesses/{h['id']}", user="guest")
    assert r.status_code == 200 and r.json == h
    r = world.get("/api/v2/harnesses", user="guest")
    assert r.json == [h] and r.headers["X-Total-Count"] == "1"


def test_engine_credentials_are_write_only(world):
    e = new_engine(world)
    assert list(e) == ENGINE_KEYS
    for r in (world.get(f"/api/v2/engines/{e['id']}"), world.get("/api/v2/engines"),
              world.get(f"/api/v1/engines/{e['id']}"), world.get("/api/v2/resouces/engines/E1"),
              world.patch(f"/api/v2/engines/{e['id']}", {"api_token": "new-secret"}, user="priv")):
        assert r.status_code == 200
        assert "s3cr3t" not in r.text and "new-secret" not in r.text and "jenkins-user" not in r.text
    with world.ctx.storage.read() as tx:  # stored all the same
        assert tx.get("engine", e["id"]).body["api_token"] == "new-secret"


def test_patch_moves_date_modified_and_keeps_the_rest(world):
    h = new_harness(world)
    r = world.patch(f"/api/v2/harnesses/{h['id']}", {"configuration_state": "MAINTENANCE", "site": "SJC"}, user="priv")
    assert r.status_code == 200, r.text
    assert r.json["configuration_state"] == "MAINTENANCE" and r.json["site"] == "SJC"
    assert r.json["date_modified"] > h["date_modified"] and r.json["date_created"] == h["date_created"]
    assert r.json["name"] == h["name"] and r.json["path"] == h["path"]


def test_soft_delete(world):
    h = new_harness(world)
    assert world.delete(f"/api/v2/harnesses/{h['id']}", user="ga").status_code == 204
    assert world.get("/api/v2/harnesses").json == []
    listed = world.get("/api/v2/harnesses?deleted=true").json
    assert [x["id"] for x in listed] == [h["id"]] and listed[0]["deleted"] is True
    assert world.get(f"/api/v2/harnesses/{h['id']}").json["deleted"] is True
    assert world.get("/api/v2/resouces/harnesses/H1").status_code == 404
    # the name is free again
    assert world.post("/api/v2/harnesses", {"name": "H1", "path": "/x"}, user="priv").status_code == 201


def test_duplicate_name_is_409_and_other_group_may_reuse(world):
    new_harness(world)
    r = world.post("/api/v2/harnesses", {"name": "H1", "path": "/other"}, user="priv")
    assert r.status_code == 409 and "detail" in r.json
    new_harness(world, user="other", group="g2")
    h2 = new_harness(world, name="H2")
    r = world.patch(f"/api/v2/harnesses/{h2['id']}", {"name": "H1"}, user="priv")
    assert r.status_code == 409


def test_group_isolation_404_no_leak(world):
    h = new_harness(world)
    r = world.get(f"/api/v2/harnesses/{h['id']}", user="other", group="g2")
    assert r.status_code == 404 and r.json == {"detail": "Not Found"}
    assert world.get("/api/v2/harnesses", user="other", group="g2").json == []
    assert world.patch(f"/api/v2/harnesses/{h['id']}", {"site": "X"}, user="other", group="g2").status_code == 404
    assert world.delete(f"/api/v2/harnesses/{h['id']}", user="other", group="g2").status_code == 404
    assert world.get("/api/v2/resouces/harnesses/H1", user="other", group="g2").status_code == 404


@pytest.mark.parametrize("user,create,change,delete", [
    ("guest", 403, 403, 403), ("mem", 403, 403, 403), ("priv", 201, 200, 403), ("ga", 201, 200, 204),
    ("admin", 201, 200, 204)])
def test_role_permissions(world, user, create, change, delete):
    for plural, body in (("harnesses", {"name": "X", "path": "/x"}),
                         ("engines", {"name": "X", "base_url": "http://j.example.com:8080/"})):
        r = world.post(f"/api/v2/{plural}", body, user=user)
        assert r.status_code == create, (plural, r.text)
        target = r.json["id"] if create == 201 else world.post(f"/api/v2/{plural}", body, user="admin").json["id"]
        assert world.patch(f"/api/v2/{plural}/{target}", {"site": "S"}, user=user).status_code == change
        assert world.delete(f"/api/v2/{plural}/{target}", user=user).status_code == delete
        if create == 403:
            assert world.get(f"/api/v2/{plural}", user=user).status_code == 200


def test_filters_paging_and_order(world):
    made = [new_harness(world, name=f"H{i}", site="OTT" if i % 2 else "SJC") for i in range(7)]
    r = world.get("/api/v2/harnesses?site=OTT")
    assert [h["name"] for h in r.json] == ["H1", "H3", "H5"] and r.headers["X-Total-Count"] == "3"
    r = world.get("/api/v2/harnesses?limit=2&offset=3")
    assert [h["id"] for h in r.json] == [h["id"] for h in made[3:5]] and r.headers["X-Total-Count"] == "7"
    r = world.get("/api/v2/harnesses?site=OTT&configuration_state=ENABLED&harness=pyATS&limit=1")
    assert [h["name"] for h in r.json] == ["H1"] and r.headers["X-Total-Count"] == "3"
    assert world.get("/api/v2/harnesses?name=H4").json[0]["id"] == made[4]["id"]
    assert world.get("/api/v2/harnesses?operational_state=ONLINE").json == []
    assert world.get("/api/v2/harnesses?offset=100").json == []


@pytest.mark.parametrize("query", ["color=red", "limit=0", "limit=1001", "limit=x", "offset=-1", "offset=1.5",
                                   "configuration_state=ON", "deleted=maybe", "site=a&site=b"])
def test_bad_list_queries(world, query):
    r = world.get(f"/api/v2/harnesses?{query}")
    assert r.status_code == 400 and r.json


def test_v1_shapes(world):
    h = new_harness(world, support_liveview=True)
    e = new_engine(world)
    r = world.get("/api/v1/harnesses")
    assert r.status_code == 200
    v1 = r.json[0]
    assert list(v1) == ["uuid", "name", "harness", "path", "supporting_path", "config_state", "oper_state", "site",
                        "bldg", "support_liveview", "created_by", "date_created", "date_modified", "deleted"]
    assert v1["uuid"] == h["id"] and v1["support_liveview"] is True and v1["config_state"] == "ENABLED"
    assert world.get(f"/api/v1/harnesses/{h['id']}").json == v1
    ev1 = world.get(f"/api/v1/engines/{e['id']}").json
    assert ev1 == {{"id": "uuid", "configuration_state": "config_state",
                    "operational_state": "oper_state"}.get(k, k): v for k, v in e.items()}
    assert world.post("/api/v1/harnesses", {"name": "X", "path": "/x"}).status_code == 405
    assert world.delete(f"/api/v1/harnesses/{h['id']}").status_code == 405


def test_name_lookup_both_spellings_and_versions(world):
    h = new_harness(world)
    e = new_engine(world, user="ga")
    for spelling in ("resouces", "resources"):
        r = world.get(f"/api/v2/{spelling}/harnesses/H1", user="guest")
        assert r.json == {"id": h["id"], "name": "H1", "group": "g1", "category": "harnesses", "owner": "priv",
                          "date_created": h["date_created"], "deleted": False}
        r = world.get(f"/api/v2/{spelling}/engines/E1")
        assert r.json["id"] == e["id"] and r.json["owner"] == "ga" and r.json["category"] == "engines"
    assert world.get("/api/v1/resouces/harnesses/H1").json["uuid"] == h["id"]
    assert world.get("/api/v2/resouces/harnesses/nope").json == {"detail": "Not Found"}
    assert world.get("/api/v2/resouces/jobs/H1").status_code == 404


def test_records_from_another_process_are_seen_at_once(world, make_world):
    """Two apps on one store stand for two processes: no stale cache."""
    second = make_world()
    second.tokens = world.tokens
    h = new_harness(world)
    assert second.get(f"/api/v2/harnesses/{h['id']}").json == h
    world.patch(f"/api/v2/harnesses/{h['id']}", {"site": "NEW"}, user="priv")
    assert second.get(f"/api/v2/harnesses/{h['id']}").json["site"] == "NEW"
    world.delete(f"/api/v2/harnesses/{h['id']}", user="ga")
    assert second.get("/api/v2/harnesses").json == []
