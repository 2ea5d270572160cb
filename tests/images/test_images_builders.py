"""The whole flow through the API with the real builders: a private dockerd and a buildah store.

Success (the tar loads back with `docker load` and runs), a 3-way merge, a failing RUN, cancel of
a build that sleeps (the process really stops, no tar is left), timeout, delete (tar and the
builder's image removed), two concurrent builds plus a queued third, a cancel made through
another service sharing the database, and a graceful stop that hands the build to the next one.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from xpresso_env.core.timeutil import parse_time

from .conftest import SLEEP_S, builder_config, processes_running, wait_until

BUILDERS = ["docker", "buildah"]


@pytest.fixture(params=BUILDERS)
def real(request, make_image_world):
    """(builder name, an app building with it)."""
    name = request.param
    config = builder_config(name, request)
    config.setdefault("builds", {}).update({"max_concurrent": 2})

    def make(**more):
        merged = {k: dict(v) for k, v in config.items()}
        for section, values in more.pop("config", {}).items():
            merged.setdefault(section, {}).update(values)
        return make_image_world(builder=name, config=merged, **more)

    return name, make


def _docker_load_and_run(docker_api, tar: Path, ref: str) -> str:
    with open(tar, "rb") as fh:
        loaded = list(docker_api.load_image(fh.read()))
    assert any(ref in str(item) for item in loaded), loaded
    container = docker_api.create_container(ref, network_disabled=True)
    try:
        docker_api.start(container)
        assert docker_api.wait(container, timeout=60)["StatusCode"] == 0
        return docker_api.logs(container).decode()
    finally:
        docker_api.remove_container(container, force=True)
        docker_api.remove_image(ref, force=True)


def _builder_has_image(name: str, request, ref: str) -> bool:
    if name == "docker":
        import docker

        try:
            request.getfixturevalue("docker_api").inspect_image(ref)
            return True
        except docker.errors.NotFound:
            return False
    store = request.getfixturevalue("buildah_store")
    from xpresso_env_plugins.builder_buildah import normalize_ref

    return store.buildah("inspect", "--type", "image", normalize_ref(ref)).returncode == 0


def test_success_merge_failing_run_load_run_delete(real, request, polaris_repo):
    name, make = real
    w = make()
    ref_name = f"polaris-{name}"
    runnable = w.submit({"name": ref_name, "tag": "run", "git_ref": "runnable"}).json
    merged = w.submit({"name": ref_name, "tag": "merged", "git_ref": "feature", "base_ref": "main"}).json
    broken = w.submit({"name": ref_name, "tag": "broken", "git_ref": "broken"}).json

    done = w.wait(runnable["uuid"], timeout_s=120)
    assert done["status"] == "successful", w.log(runnable["uuid"])
    assert done["image_id"].startswith("sha256:") and done["meta"]["builder"] == name
    assert done["meta"]["dry_run"] is False
    tar = Path(done["nfs_path"])
    assert done["size"] == tar.stat().st_size > 0 and done["virtual_size"] > 0
    log = w.log(runnable["uuid"])
    assert f"builder: {name}" in log and polaris_repo.rev("runnable") in log and "no image was built" not in log

    m = w.wait(merged["uuid"], timeout_s=120)
    assert m["status"] == "successful", w.log(merged["uuid"])
    assert m["meta"]["merge"] == "merged" and m["jobs"] == ["basic/basic_example_job.py", "feature/feature_job.py"]

    b = w.wait(broken["uuid"], timeout_s=120)
    assert b["status"] == "failed" and b["meta"]["error"] and "\n" not in b["meta"]["error"]
    assert "about to fail" in w.log(broken["uuid"]) and not Path(b["nfs_path"]).exists()
    assert not list(tar.parent.glob(".*.part")), "no partial tar is left"

    # the tar loads back into a Docker daemon and runs
    require_docker = request.getfixturevalue("docker_api")
    out = _docker_load_and_run(require_docker, tar, f"{ref_name}:run")
    assert out.strip() == "hello from main"

    # delete: the tar and the builder's image go
    assert _builder_has_image(name, request, f"{ref_name}:merged")
    assert w.delete(f"/api/v2/images/{merged['uuid']}", user="priv").status_code == 204
    assert not Path(m["nfs_path"]).exists()
    assert not _builder_has_image(name, request, f"{ref_name}:merged")


def test_cancel_a_build_that_sleeps(real):
    name, make = real
    w = make()
    rec = w.submit({"name": f"polaris-{name}", "tag": "sleepy", "git_ref": "sleepy"}).json
    w.wait_log(rec["uuid"], f"sleep {SLEEP_S}", timeout_s=120)
    assert wait_until(lambda: processes_running(["sleep", str(SLEEP_S)]), 30), "the RUN step never started"
    t0 = time.monotonic()
    r = w.post(f"/api/v2/images/{rec['uuid']}/cancel", user="mem")
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    assert wait_until(lambda: not processes_running(["sleep", str(SLEEP_S)]), 15), "the build process still runs"
    assert time.monotonic() - t0 < 20
    nfs = Path(rec["nfs_path"])
    assert not nfs.exists() and not list(nfs.parent.glob(".*.part"))
    final = w.wait(rec["uuid"])
    assert final["status"] == "cancelled" and final["meta"]["error"] == "cancelled by mem"
    assert wait_until(lambda: "cancelled" in w.log(rec["uuid"]).splitlines()[-1], 10)
    assert w.post(f"/api/v2/images/{rec['uuid']}/cancel", user="mem").status_code == 409

    # DELETE of a running build cancels it first
    rec = w.submit({"name": f"polaris-{name}", "tag": "sleepy2", "git_ref": "sleepy"}).json
    assert wait_until(lambda: processes_running(["sleep", str(SLEEP_S)]), 60), "the RUN step never started"
    assert w.delete(f"/api/v2/images/{rec['uuid']}", user="priv").status_code == 204
    assert wait_until(lambda: not processes_running(["sleep", str(SLEEP_S)]), 15), "the build process still runs"
    gone = w.image(rec["uuid"])
    assert gone["is_deleted"] is True and gone["status"] == "cancelled" and "deleted by priv" in gone["meta"]["error"]
    assert not Path(rec["nfs_path"]).exists() and not list(nfs.parent.glob(".*.part"))


def test_timeout(real):
    name, make = real
    w = make(config={"builds": {"timeout_s": 4.0}})
    rec = w.submit({"name": f"polaris-{name}", "tag": "slow", "git_ref": "sleepy"}).json
    done = w.wait(rec["uuid"], timeout_s=90)
    assert done["status"] == "failed" and done["meta"]["error"] == "timed out after 4 s", w.log(rec["uuid"])
    assert wait_until(lambda: not processes_running(["sleep", str(SLEEP_S)]), 15)
    assert not Path(rec["nfs_path"]).exists()


def test_two_concurrent_builds_and_a_queued_third(real, polaris_repo):
    name, make = real
    polaris_repo.sleeping_branch("concurrent", 3)
    w = make()
    ids = [w.submit({"name": f"polaris-{name}", "tag": f"c{n}", "git_ref": "concurrent"}).json["uuid"]
           for n in range(3)]
    # while the first two run, the third waits in the queue, unclaimed
    assert wait_until(lambda: sum(w.image(i)["worker_meta"] is not None for i in ids) == 2, 60)
    queued = [i for i in ids if w.image(i)["worker_meta"] is None]
    assert queued == [ids[2]], "builds are taken in submission order"
    assert w.image(ids[2])["status"] == "building"
    done = [w.wait(i, timeout_s=120) for i in ids]
    assert [d["status"] for d in done] == ["successful"] * 3, [w.log(i) for i in ids]
    first_end = min(parse_time(d["meta"]["finished_at"]) for d in done[:2])
    assert parse_time(done[2]["worker_meta"]["claimed_at"]) >= first_end.replace(microsecond=0)
    starts = [parse_time(d["meta"]["started_at"]) for d in done[:2]]
    ends = [parse_time(d["meta"]["finished_at"]) for d in done[:2]]
    assert max(starts) < min(ends), "the first two ran at the same time"


def test_cancel_through_another_service_and_graceful_hand_over(real, polaris_repo):
    """Two services on one SQLite file, as two `serve` processes would be."""
    name, make = real
    command = polaris_repo.sleeping_branch("handover", 3)
    runner = make()
    other = make(start=False)  # shares runner's database: make_world seeded it once
    other.world.tokens.update(runner.world.tokens)
    rec = other.submit({"name": f"polaris-{name}", "tag": "remote", "git_ref": "sleepy"}).json
    runner.wait_log(rec["uuid"], f"sleep {SLEEP_S}", timeout_s=120)
    assert wait_until(lambda: processes_running(["sleep", str(SLEEP_S)]), 30)
    r = other.post(f"/api/v2/images/{rec['uuid']}/cancel", user="mem")
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    # the runner notices on its next heartbeat (every lease_s / 3 = 2 s here) and stops the build
    assert wait_until(lambda: not processes_running(["sleep", str(SLEEP_S)]), 20), "the remote build still runs"
    assert wait_until(lambda: not runner.ctx.images.queue.running, 20)
    assert runner.image(rec["uuid"])["status"] == "cancelled" and not Path(rec["nfs_path"]).exists()

    # a graceful stop gives an interrupted build back to the queue; the other service finishes it
    rec = other.submit({"name": f"polaris-{name}", "tag": "handover", "git_ref": "handover"}).json
    runner.wait_log(rec["uuid"], command, timeout_s=120)
    runner.ctx.stop()  # its loops: the build goes back to the queue
    stored = other.image(rec["uuid"])
    assert stored["status"] == "building" and "goes back to the queue" in other.log(rec["uuid"])
    other.ctx.start()
    done = other.wait(rec["uuid"], timeout_s=120)
    assert done["status"] == "successful" and done["meta"]["attempt"] == 2
