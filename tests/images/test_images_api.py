"""The image API through falcon.testing, on a real git repository, with the dry-run builder
(checkout, merge and discovery for real; a tar of the build context instead of an image)."""
from __future__ import annotations

import ast
import logging
import re
import tarfile
import threading
from pathlib import Path

from xpresso_env.http.openapi import SCHEMAS

from .conftest import wait_until

WIRE_KEYS = ["credentials", "uuid", "name", "tag", "data", "status", "group", "git_ref", "date_created",
             "date_updated", "container_details", "yaml_content", "worker_meta", "size", "virtual_size",
             "image_id", "jobs", "manifests", "push_url", "pin_version", "is_nfs_storage", "nfs_path",
             "is_deleted", "is_polaris_image", "base_ref", "meta", "type", "custom"]
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LOG_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ")


def _check_schema(record: dict) -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator(SCHEMAS["Image"]).validate(record)


def test_submit_answers_at_once_with_the_xpresso_record(make_image_world):
    w = make_image_world(start=False)  # no worker: the record stays as submitted
    r = w.submit({"name": "polaris-image", "tag": "polaris-tag", "git_ref": "main", "groups": ["g1"]})
    assert r.status_code == 200, r.text
    rec = r.json
    assert list(rec) == WIRE_KEYS
    _check_schema(rec)
    nfs = str(w.root / "g1" / "polaris-image" / "polaris-tag.tar")
    assert rec["status"] == "building" and rec["credentials"] is None and rec["type"] == "genie"
    assert rec["custom"] is True and rec["is_polaris_image"] is True and rec["is_nfs_storage"] is True
    assert rec["group"] == "g1" and rec["nfs_path"] == nfs and rec["base_ref"] is None
    assert (rec["size"], rec["virtual_size"], rec["image_id"]) == (0, 0, "0")
    assert rec["jobs"] is None and rec["manifests"] is None and rec["meta"] is None
    assert rec["pin_version"] is None and rec["push_url"] is None and rec["is_deleted"] is False
    assert TIME_RE.match(rec["date_created"]) and TIME_RE.match(rec["date_updated"])
    data = ast.literal_eval(rec["data"])
    assert data == {"name": "polaris-image", "tag": "polaris-tag", "group": "g1", "git_ref": "main",
                    "retention_day": 6, "submitter": "mem", "is_nfs_storage": True, "nfs_path": nfs,
                    "is_polaris_image": True}
    assert list(data) == ["name", "tag", "group", "git_ref", "retention_day", "submitter", "is_nfs_storage",
                          "nfs_path", "is_polaris_image"]
    assert rec["data"].startswith("{'name': 'polaris-image', 'tag': 'polaris-tag', 'group': 'g1'")
    # base_ref given: in the record and in data
    rec2 = w.submit({"name": "polaris-image", "tag": "t2", "git_ref": "feature", "base_ref": "main"}).json
    assert rec2["base_ref"] == "main" and ast.literal_eval(rec2["data"])["base_ref"] == "main"
    # retrieve and list show the same record; the queue is storage
    assert w.image(rec["uuid"]) == rec
    listed = w.get("/api/v2/images", user="guest")
    assert listed.status_code == 200 and [i["uuid"] for i in listed.json] == [rec["uuid"], rec2["uuid"]]
    assert listed.headers["X-Total-Count"] == "2"


def test_successful_dry_run_build(make_image_world, polaris_repo):
    w = make_image_world()
    rec = w.submit({"name": "polaris", "tag": "v1", "git_ref": "main"}).json
    done = w.wait(rec["uuid"])
    assert done["status"] == "successful", w.log(rec["uuid"])
    _check_schema(done)
    tar_path = Path(done["nfs_path"])
    assert tar_path.is_file() and done["size"] == tar_path.stat().st_size > 0
    assert done["image_id"] != "0" and not done["image_id"].startswith("sha256:")
    assert done["jobs"] == ["basic/basic_example_job.py"]
    assert done["manifests"] == ["manifests/basic.tem", "manifests/extra.tem"]
    meta = done["meta"]
    assert meta["builder"] == "dry-run" and meta["dry_run"] is True
    assert meta["commit"] == polaris_repo.rev("main") and meta["merge"] == "none" and meta["base_commit"] is None
    assert {"total_s", "workspace_s", "build_s"} <= set(meta["timings"]) and "error" not in meta
    assert done["date_updated"] > rec["date_updated"] and done["worker_meta"]["worker_id"]
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
    assert "Dockerfile" in names and "basic/basic_example_job.py" in names and not any(".git" in n for n in names)
    assert wait_until(lambda: not list((w.root.parent / "ws").glob("*"))), "the workspace is always removed"
    log = w.log(rec["uuid"])
    lines = log.splitlines()
    assert all(LOG_LINE_RE.match(line) for line in lines), log
    assert "builder: dry-run" in log and polaris_repo.rev("main") in log
    assert "no image was built" in log and "successful" in lines[-1]
    # ?offset: from that byte; at or past the end: empty
    raw = log.encode()
    assert w.log(rec["uuid"], offset=10) == raw[10:].decode()
    assert w.log(rec["uuid"], offset=len(raw)) == "" and w.log(rec["uuid"], offset=len(raw) + 100) == ""
    r = w.get(f"/api/v2/images/{rec['uuid']}/logs")
    assert r.headers["Content-Type"].startswith("text/plain")
    # a finished build's follow answers the whole log and ends
    assert w.log(rec["uuid"], follow="true") == log


def test_merge_success_and_tag_and_commit_refs(make_image_world, polaris_repo):
    w = make_image_world()
    merged = w.submit({"name": "polaris", "tag": "merged", "git_ref": "feature", "base_ref": "main"}).json
    by_tag = w.submit({"name": "polaris", "tag": "tagged", "git_ref": "v1"}).json
    by_id = w.submit({"name": "polaris", "tag": "byid", "git_ref": polaris_repo.rev("v1")[:12]}).json
    done = w.wait(merged["uuid"])
    assert done["status"] == "successful", w.log(merged["uuid"])
    meta = done["meta"]
    assert meta["merge"] == "merged" and meta["commit"] == polaris_repo.rev("feature")
    assert meta["base_commit"] == polaris_repo.rev("main") and len(meta["merged_commit"]) == 40
    # the merged tree holds both sides
    assert done["jobs"] == ["basic/basic_example_job.py", "feature/feature_job.py"]
    assert "manifests/extra.tem" in done["manifests"]
    assert "merge: merged" in w.log(merged["uuid"])
    for rec in (by_tag, by_id):
        d = w.wait(rec["uuid"])
        assert d["status"] == "successful" and d["meta"]["commit"] == polaris_repo.rev("v1")
        assert d["manifests"] == ["manifests/basic.tem"]


def test_merge_conflict_fails_and_the_log_names_the_paths(make_image_world):
    w = make_image_world()
    rec = w.submit({"name": "polaris", "tag": "c", "git_ref": "conflict", "base_ref": "main"}).json
    done = w.wait(rec["uuid"])
    assert done["status"] == "failed"
    assert "merge conflict" in done["meta"]["error"] and "hello.txt" in done["meta"]["error"]
    assert "\n" not in done["meta"]["error"]
    log = w.log(rec["uuid"])
    assert re.search(r"Z   hello\.txt$", log, re.M), log
    assert not Path(done["nfs_path"]).exists() and done["image_id"] == "0"


def test_unknown_ref_fails_the_build(make_image_world):
    w = make_image_world()
    rec = w.submit({"name": "polaris", "tag": "x", "git_ref": "no-such-branch"}).json
    done = w.wait(rec["uuid"])
    assert done["status"] == "failed" and done["meta"]["error"] == "unknown ref: no-such-branch"


def test_follow_streams_until_the_build_ends(make_image_world):
    w = make_image_world(start=False)
    rec = w.submit({"name": "polaris", "tag": "f", "git_ref": "main"}).json
    got = {}

    def follow():
        got["r"] = w.get(f"/api/v2/images/{rec['uuid']}/logs", params={"follow": "true"})

    t = threading.Thread(target=follow)
    t.start()
    t.join(0.5)
    assert t.is_alive(), "follow must wait while the build is queued"
    w.ctx.start()
    t.join(30)
    assert not t.is_alive()
    r = got["r"]
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert "queued" in r.text and "successful" in r.text.splitlines()[-1]
    assert r.text == w.log(rec["uuid"])


def test_same_name_tag_building_is_409_then_a_rebuild_replaces_the_tar(make_image_world):
    w = make_image_world(start=False)
    first = w.submit({"name": "polaris", "tag": "v1", "git_ref": "v1"})
    assert first.status_code == 200
    again = w.submit({"name": "polaris", "tag": "v1", "git_ref": "main"})
    assert again.status_code == 409 and "already building" in again.json["detail"]
    # another group, or another tag, is fine
    assert w.submit({"name": "polaris", "tag": "v1", "git_ref": "main"}, user="multi", group="g2").status_code == 200
    assert w.submit({"name": "polaris", "tag": "v2", "git_ref": "main"}).status_code == 200
    w.ctx.start()
    one = w.wait(first.json["uuid"])
    assert one["manifests"] == ["manifests/basic.tem"]
    second = w.submit({"name": "polaris", "tag": "v1", "git_ref": "main"})
    assert second.status_code == 200
    two = w.wait(second.json["uuid"])
    assert two["status"] == "successful" and two["nfs_path"] == one["nfs_path"]
    with tarfile.open(two["nfs_path"]) as tar:
        assert "manifests/extra.tem" in tar.getnames()  # the new build's tar replaced the old one


def test_list_filters_paging_and_unknown_params(make_image_world):
    w = make_image_world(start=False)
    ids = [w.submit({"name": n, "tag": t, "git_ref": "main"}).json["uuid"]
           for n, t in (("a", "1"), ("a", "2"), ("b", "1"))]
    def names(**params):
        r = w.get("/api/v2/images", params=params)
        assert r.status_code == 200, r.text
        return [i["uuid"] for i in r.json]
    assert names(name="a") == ids[:2] and names(tag="1") == [ids[0], ids[2]]
    assert names(status="building", git_ref="main") == ids and names(status="successful") == []
    assert names(limit="1", offset="1") == [ids[1]]
    for params in ({"colour": "red"}, {"status": "done"}, {"limit": "0"}, {"offset": "-1"}):
        assert w.get("/api/v2/images", params=params).status_code == 400
    assert w.get(f"/api/v2/images/{ids[0]}", params={"x": "1"}).status_code == 400
    assert w.get(f"/api/v2/images/{ids[0]}/logs", params={"offset": "x"}).status_code == 400
    assert w.get(f"/api/v2/images/{ids[0]}/logs", params={"follow": "maybe"}).status_code == 400
    assert w.get(f"/api/v2/images/{ids[0]}/logs", params={"tail": "1"}).status_code == 400
    r = w.post("/api/v2/images/polaris_build?x=1", {"name": "c", "tag": "1", "git_ref": "main"})
    assert r.status_code == 400
    # the literal route is not shadowed by /images/{uuid}
    assert w.get("/api/v2/images/polaris_build").status_code == 405
    assert w.get("/api/v2/images/not-a-uuid").status_code == 404


def test_permissions_and_order_of_checks(make_image_world):
    w = make_image_world(start=False)
    body = {"name": "p", "tag": "1", "git_ref": "main"}
    assert w.client.simulate_post("/api/v2/images/polaris_build", json=body).status_code == 401
    assert w.submit(body, user="guest").status_code == 403
    assert w.submit(body, user="other", group="g1").status_code == 403  # not a member of g1
    assert w.submit({"bad": 1}, user="guest").status_code == 403  # permission before body
    assert w.client.simulate_post("/api/v2/images/polaris_build", body="{", headers={
        **w.headers("mem"), "Content-Type": "application/json"}).status_code == 400
    assert w.client.simulate_post("/api/v2/images/polaris_build", body="x", headers={
        **w.headers("mem"), "Content-Type": "text/plain"}).status_code == 415
    rec = w.submit(body, user="mem").json
    path = f"/api/v2/images/{rec['uuid']}"
    assert w.delete(path, user="mem").status_code == 403  # delete_docker_image: privilege_member
    assert w.patch(path, {"pin_version": True}, user="guest").status_code == 403
    assert w.post(f"{path}/cancel", user="guest").status_code == 403
    # permission before anything else the request carries: 403, not a 400 about the query
    assert w.delete(f"{path}?bogus=1", user="mem").status_code == 403
    assert w.post(f"{path}/cancel?bogus=1", user="guest").status_code == 403
    assert w.delete(f"{path}?bogus=1", user="priv").status_code == 400  # allowed: then the query
    assert w.post(f"{path}/cancel?bogus=1", user="mem").status_code == 400
    assert w.get(path, user="guest").status_code == 200
    assert w.get(f"{path}/logs", user="guest").status_code == 200


def test_body_validation_field_errors(make_image_world):
    w = make_image_world(start=False)
    r = w.submit({})
    assert r.status_code == 400 and set(r.json) == {"name", "tag", "git_ref"}
    r = w.submit({"name": "p", "tag": "1", "git_ref": "main", "status": "successful", "uuid": "x",
                  "nfs_path": "/etc/passwd", "colour": "red"})
    assert r.status_code == 400
    assert r.json["status"] == ["This field is read-only."] and r.json["colour"] == ["Unknown field."]
    assert "nfs_path" in r.json and "uuid" in r.json
    for bad in ({"name": "Polaris"}, {"name": ""}, {"tag": ".hidden"}, {"tag": "-x"}, {"tag": "a" * 129},
                {"git_ref": ""}, {"git_ref": 5}, {"base_ref": ""}, {"groups": "g2"}, {"groups": [1]}):
        body = {"name": "p", "tag": "1", "git_ref": "main", **bad}
        r = w.submit(body)
        assert r.status_code == 400 and set(r.json) == set(bad), (bad, r.json)
    r = w.submit({"name": "p", "tag": "1", "git_ref": "main", "groups": ["nope"]})
    assert r.status_code == 400 and r.json == {"groups": ["Group 'nope' does not exist."]}
    r = w.submit({"name": "p", "tag": "1", "git_ref": "main", "groups": ["g2"]})  # mem is not in g2
    assert r.status_code == 400 and r.json == {"groups": ["You are not a member of group 'g2'."]}
    # a system administrator may share with any existing group
    assert w.submit({"name": "p", "tag": "1", "git_ref": "main", "groups": ["g2", "g3"]}, user="admin").status_code == 200
    assert w.dump()[5] and len(w.dump()[5]) == 1


def test_sharing_via_groups(make_image_world):
    w = make_image_world()
    rec = w.submit({"name": "shared", "tag": "1", "git_ref": "main", "groups": ["g2"]}, user="multi").json
    path = f"/api/v2/images/{rec['uuid']}"
    done = w.wait(rec["uuid"])
    assert done["status"] == "successful"
    # visible (list, retrieve, logs) from g2; not from g3
    assert [i["uuid"] for i in w.get("/api/v2/images", user="other", group="g2").json] == [rec["uuid"]]
    assert w.get(path, user="other", group="g2").json["group"] == "g1"
    assert w.get(f"{path}/logs", user="other", group="g2").status_code == 200
    assert w.get(path, user="admin", group="g3").status_code == 404
    assert w.get("/api/v2/images", user="admin", group="g3").json == []
    # changed only through the owning group: 403 from the group it is shared with
    assert w.patch(path, {"pin_version": True}, user="other", group="g2").status_code == 403
    assert w.delete(path, user="other", group="g2").status_code == 403
    assert w.post(f"{path}/cancel", user="other", group="g2").status_code == 403
    assert w.patch(path, {"pin_version": True}, user="admin", group="g3").status_code == 404
    assert w.image(rec["uuid"])["is_deleted"] is False


def test_pin_version_patch(make_image_world):
    w = make_image_world(start=False)
    rec = w.submit({"name": "p", "tag": "1", "git_ref": "main"}).json
    path = f"/api/v2/images/{rec['uuid']}"
    r = w.patch(path, {"pin_version": True}, user="mem")
    assert r.status_code == 200 and r.json["pin_version"] is True and r.json["date_updated"] > rec["date_updated"]
    assert w.image(rec["uuid"])["pin_version"] is True
    assert w.patch(path, {"pin_version": "yes"}, user="mem").status_code == 400
    assert w.patch(path, {"tag": "2"}, user="mem").json == {"tag": ["This field is read-only."],
                                                            "pin_version": ["This field is required."]}
    assert w.patch(path, {}, user="mem").json == {"pin_version": ["This field is required."]}


def test_cancel_a_queued_build_and_409_on_a_finished_one(make_image_world):
    w = make_image_world(start=False)
    rec = w.submit({"name": "p", "tag": "1", "git_ref": "main"}).json
    r = w.post(f"/api/v2/images/{rec['uuid']}/cancel", user="mem")
    assert r.status_code == 200 and r.json["status"] == "cancelled" and "cancelled by mem" in r.json["meta"]["error"]
    w.ctx.start()
    other = w.submit({"name": "p", "tag": "2", "git_ref": "main"}).json
    assert w.wait(other["uuid"])["status"] == "successful"
    assert w.image(rec["uuid"])["status"] == "cancelled"  # never picked up
    assert not Path(rec["nfs_path"]).exists()
    r = w.post(f"/api/v2/images/{rec['uuid']}/cancel", user="mem")
    assert r.status_code == 409 and "already ended" in r.json["detail"]
    assert w.post(f"/api/v2/images/{other['uuid']}/cancel", user="mem").status_code == 409


def test_delete_removes_the_tar_and_marks_is_deleted(make_image_world):
    w = make_image_world()
    rec = w.submit({"name": "p", "tag": "1", "git_ref": "main"}).json
    done = w.wait(rec["uuid"])
    assert Path(done["nfs_path"]).is_file()
    assert w.delete(f"/api/v2/images/{rec['uuid']}", user="priv").status_code == 204
    assert not Path(done["nfs_path"]).exists()
    gone = w.image(rec["uuid"])
    assert gone["is_deleted"] is True and gone["status"] == "successful"
    assert w.get("/api/v2/images").json == []
    assert [i["uuid"] for i in w.get("/api/v2/images", params={"deleted": "true"}).json] == [rec["uuid"]]
    assert w.delete(f"/api/v2/images/{rec['uuid']}", user="priv").status_code == 204  # twice: no change
    # a deleted image cannot be pinned: 409, nothing changed
    r = w.patch(f"/api/v2/images/{rec['uuid']}", {"pin_version": True}, user="mem")
    assert r.status_code == 409 and "deleted" in r.json["detail"]
    assert w.image(rec["uuid"])["pin_version"] == gone["pin_version"]
    # deleting a queued build cancels it
    queued_world = w
    q = queued_world.submit({"name": "p", "tag": "2", "git_ref": "no-such-ref-but-deleted-first"}).json
    assert w.delete(f"/api/v2/images/{q['uuid']}", user="priv").status_code == 204
    after = w.image(q["uuid"])
    assert after["is_deleted"] is True and after["status"] in ("cancelled", "failed")


def test_503_without_a_repository_or_a_builder(make_image_world, tmp_path):
    w = make_image_world(config={"polaris": {"repo": None}}, start=False)
    r = w.submit({"name": "p", "tag": "1", "git_ref": "main"})
    assert r.status_code == 503 and "polaris.repo is not configured" in r.json["detail"]
    assert w.client.simulate_get("/api/v2/health").json["builder_problem"] == "polaris.repo is not configured"


def test_503_when_the_builder_is_unreachable(make_image_world, tmp_path):
    w = make_image_world(builder="docker", config={"builder": {"docker": {"base_url": f"unix://{tmp_path}/none.sock"}}},
                         start=False)
    r = w.submit({"name": "p", "tag": "1", "git_ref": "main"})
    assert r.status_code == 503 and "docker daemon not reachable" in r.json["detail"]
    health = w.client.simulate_get("/api/v2/health").json
    assert health["builder"] == "docker" and "not reachable" in health["builder_problem"]
    assert w.dump()[5] == []


def test_auto_says_why_it_skipped_docker(make_image_world, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")  # no daemon behind it
    caplog.set_level(logging.INFO, logger="xpresso_env")
    w = make_image_world(builder="auto")  # started: the builder is chosen at start-up
    skipped = w.client.simulate_get("/api/v2/health").json["builder_skipped"]
    assert list(skipped) == ["docker"]
    assert skipped["docker"] == f"docker daemon not reachable at unix://{tmp_path}/none.sock: No such file or directory"
    assert f"builder.backend auto: skipped docker: {skipped['docker']}" in caplog.text
    assert caplog.text.count("skipped docker") == 1
    health = w.client.simulate_get("/api/v2/health").json
    if health["builder"] is None:  # no buildah here either: the reasons are in builder_problem too
        assert skipped["docker"] in health["builder_problem"]
    else:
        assert health["builder"] == "buildah" and "builder.backend auto: building with buildah" in caplog.text
    # a builder named explicitly skips nothing
    named = make_image_world(builder="dry-run")
    assert named.client.simulate_get("/api/v2/health").json["builder_skipped"] == {}


def test_a_log_offset_at_or_past_the_end_is_an_empty_200(make_image_world):
    w = make_image_world()
    rec = w.submit({"name": "polaris", "tag": "o", "git_ref": "main"}).json
    w.wait(rec["uuid"])
    size = len(w.log(rec["uuid"]).encode())
    assert size > 3 and w.log(rec["uuid"], offset=str(size - 3)).endswith("\n")
    # past 16 TiB (ext4's largest file) seek() fails, at 2**63 it overflows: neither may be a 500
    for offset in (size, size + 1, 2 ** 44, 2 ** 44 + 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64, "9" * 5000):
        for params in ({"offset": str(offset)}, {"offset": str(offset), "follow": "true"}):
            r = w.get(f"/api/v2/images/{rec['uuid']}/logs", params=params)
            assert (r.status_code, r.text) == (200, ""), params
    for bad in ("-1", "-" + "9" * 5000, "1.5", "1e3", "", "0x10"):
        r = w.get(f"/api/v2/images/{rec['uuid']}/logs", params={"offset": bad})
        assert r.status_code == 400 and "offset" in r.json, bad


def test_openapi_documents_every_image_route_and_validates(make_image_world):
    import falcon.inspect
    from openapi_spec_validator import validate

    from xpresso_env.app import create_app

    w = make_image_world(start=False)
    doc = w.client.simulate_get("/api/v2/openapi.json").json
    validate(doc)
    norm = lambda p: re.sub(r"\{[^}]+\}", "{}", p)  # noqa: E731
    mounted = {(norm(r.path), m.method.lower()) for r in falcon.inspect.inspect_routes(create_app(w.ctx))
               for m in r.methods if not m.internal and m.method not in ("OPTIONS", "HEAD")
               and r.path.startswith("/api/v2/images")}
    documented = {(norm(p), m) for p, item in doc["paths"].items() if p.startswith("/api/v2/images")
                  for m in item if m in ("get", "post", "patch", "delete")}
    assert mounted == documented
    assert set(doc["paths"]["/api/v2/images/{uuid}"]) >= {"get", "patch", "delete"}
