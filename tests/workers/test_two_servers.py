"""CONTRACT section 11 across real processes: two `xpresso-env serve` processes (builds.enabled:
false, the same auth secret, each its own folder) and one `xpresso-env worker`, sharing one SQLite
file or one PostgreSQL database (and the tar folder, images.nfs_root, as NFS in production).

* an Idempotency-Key used through one server answers the same image through the other, and 422
  for another body there;
* builds.max_queued_per_group counts the group's queued builds whatever server took them: 429
  with Retry-After through the other server;
* the worker builds, both servers show the same log;
* the worker runs the retention sweep (the servers do not build nor sweep): the tar goes, the
  deleted image's log stays readable for the grace after the deletion, then is purged and the
  record says so (meta.log_removed_at).

The dry-run builder stands in for docker/buildah (the image build itself is not the point)."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from xpresso_env.testing.server import cli, serve, write_config

from tests.waiting import wait_for

from .conftest import run_worker
from .test_worker_processes import database

pytestmark = pytest.mark.slow  # real serve and worker processes

LEASE_S = 3.0  # the worker's: a deleted image's log is purged 2 x lease_s after its deletion


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_servers_and_a_worker_share_keys_quota_logs_and_the_sweep(tmp_path: Path, polaris, kind: str):
    nfs = tmp_path / "nfs"
    with database(kind, tmp_path) as storage:
        (tmp_path / "shared").mkdir(exist_ok=True)
        paths = {"nfs_root": str(nfs), "logs_root": "logs", "workspace_root": "ws"}
        api = {"storage": storage, "auth": {"secret": "the-api-servers-secret-" * 2},
               # retention_days is recorded on each image at submit: the API servers' setting
               "images": {**paths, "retention_days": 0},
               "builds": {"enabled": False, "max_queued_per_group": 1}}
        api1, api2 = write_config(tmp_path / "api1", api), write_config(tmp_path / "api2", api)
        worker = write_config(tmp_path / "worker", {
            "storage": storage, "auth": {"secret": "the-worker-reads-one-too-" * 2},
            "images": {**paths, "sweep_interval_s": 0.3}, "polaris": {"repo": str(polaris.path)},
            "builder": {"backend": "dry-run"}, "builds": {"lease_s": LEASE_S}})
        token = cli(api1, "init", "--group", "myGroup", "--admin", "root").stdout.strip().splitlines()[-1]
        headers = {"Authorization": token, "Group": "myGroup"}
        body = {"name": "polaris", "tag": "v1", "git_ref": "main"}
        for name in ("cwd-api1", "cwd-api2"):
            (tmp_path / name).mkdir()

        with serve(api1, cwd=tmp_path / "cwd-api1") as s1, serve(api2, cwd=tmp_path / "cwd-api2") as s2:
            def post(srv, payload, key=None):
                extra = {"Idempotency-Key": key} if key else {}
                return requests.post(f"{srv.url}/api/v2/images/polaris_build", json=payload, timeout=30,
                                     headers={**headers, **extra})

            def get(srv, path: str):
                r = requests.get(f"{srv.url}/api/v2/images/{image_id}{path}", headers=headers, timeout=30)
                assert r.status_code == 200, r.text
                return r

            first = post(s1, body, key="nightly-1")
            assert first.status_code == 200, first.text
            image_id = first.json()["uuid"]
            again = post(s2, {"git_ref": "main", "tag": "v1", "name": "polaris"}, key="nightly-1")
            assert again.status_code == 200 and again.json()["uuid"] == image_id, again.text
            other = post(s2, {**body, "tag": "v2"}, key="nightly-1")
            assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"], other.text
            full = post(s2, {**body, "tag": "v2"})
            assert full.status_code == 429 and int(full.headers["Retry-After"]) > 0, full.text
            assert "max_queued_per_group" in full.json()["detail"]
            assert get(s1, "").json()["status"] == "building"  # no server builds

            with run_worker(worker, tmp_path / "cwd-worker") as w:
                built = wait_for(lambda: get(s2, "").json()["status"] != "building" and get(s2, "").json(),
                                 what=f"the build: {w.log()}")
                assert built["status"] == "successful", get(s2, "/logs").text
                # The worker's sweep (retention_day 0): the tar goes, the log stays for the grace.
                gone = wait_for(lambda: get(s1, "").json()["is_deleted"] and get(s1, "").json(),
                                what=f"the worker's sweep: {w.log()}")
                assert gone["meta"]["retention"]["reason"].startswith("built ")
                assert not Path(built["nfs_path"]).exists()
                log1, log2 = get(s1, "/logs").text, get(s2, "/logs").text
                assert log1 == log2 and "successful: polaris:v1" in log1, log1
                assert "log_removed_at" not in get(s2, "").json()["meta"]
                purged = wait_for(lambda: "log_removed_at" in get(s2, "").json()["meta"], timeout_s=30,
                                  what=f"the log purge: {w.log()}")
                assert purged and get(s1, "/logs").text == "" and get(s2, "/logs").text == ""
                # The build ended: the group's queue has room again, through either server.
                assert post(s1, {**body, "tag": "v2"}).status_code == 200
                assert "Traceback" not in w.log()
            assert "Traceback" not in s1.log() + s2.log()
        # The servers never built: no workspace of theirs.
        for name in ("api1", "api2", "cwd-api1", "cwd-api2"):
            assert not (tmp_path / name / "ws").exists(), name
