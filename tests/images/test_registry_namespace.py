"""registry.namespace through the service (CONTRACT section 11, issue 9 "Bad input"): a template
valid at start-up that renders to an invalid repository name for one group fails that group's
builds with the reason, before anything is built, pushed or published; other groups build.
The dry-run builder (it pushes nothing) is enough: the push target is worked out before the
builder runs. registry.url points at a loopback port nothing listens on, and is never reached."""
from __future__ import annotations

from pathlib import Path


def test_a_group_whose_namespace_renders_invalid_fails_its_builds(make_image_world):
    config = {"registry": {"url": "http://127.0.0.1:9", "insecure": True, "namespace": "ci/{group}"}}
    w = make_image_world(config=config)
    w.ctx.auth.add_group("Lab_")  # a valid group name; "ci/lab_" is not a valid repository path
    w.ctx.auth.add_user("labber", roles={"Lab_": "member"})
    w.tokens["labber"] = w.ctx.auth.issue_token("labber").display

    bad = w.submit({"name": "polaris", "tag": "v1", "git_ref": "main"}, user="labber", group="Lab_")
    assert bad.status_code == 200, bad.text
    rec = w.wait(bad.json["uuid"], group="Lab_")
    assert rec["status"] == "failed" and rec["push_url"] is None
    error = rec["meta"]["error"]
    assert error.startswith("push failed: registry.namespace 'ci/{group}' renders to 'ci/lab_' for group 'Lab_'"), error
    assert "\n" not in error and "not a valid repository path" in error
    assert not Path(rec["nfs_path"]).exists() and not list(Path(rec["nfs_path"]).parent.glob(".*"))
    log = w.log(rec["uuid"], group="Lab_")
    assert "building polaris:v1" not in log and error in log

    ok = w.wait(w.submit({"name": "polaris", "tag": "v1", "git_ref": "main"}).json["uuid"])
    assert ok["status"] == "successful" and ok["push_url"] is None  # dry-run: nothing pushed
    assert ok["meta"]["push"].startswith("skipped (dry-run)") and "127.0.0.1:9/ci/g1/polaris:v1" in ok["meta"]["push"]
