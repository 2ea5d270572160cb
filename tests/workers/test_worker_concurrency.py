"""`xpresso-env worker --concurrency N` runs N builds at once, for real: a worker process with
--concurrency 2 and three queued builds whose git clones are held back (a `git` wrapper first on
its PATH sleeps before cloning) has exactly two clones running, and the third build stays queued
(unclaimed) meanwhile. Two workers racing on one SQLite file / one PostgreSQL database run each
build exactly once. The dry-run builder stands in for docker/buildah."""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import requests

from tests.git_repo import slow_clone_env
from tests.images.conftest import processes_running
from xpresso_env.testing.server import cli, serve, write_config

from tests.waiting import wait_for

from .conftest import run_worker
from .test_worker_processes import database

pytestmark = pytest.mark.slow  # real serve and worker processes

CLONE_SLEEP = ["sleep", "53"]  # a length no other test uses


def test_worker_concurrency_runs_that_many_builds_at_once(tmp_path: Path, polaris):
    slow_git = slow_clone_env(tmp_path, CLONE_SLEEP)
    storage = {"backend": "sqlite", "path": str(tmp_path / "db.sqlite3")}
    paths = {"nfs_root": str(tmp_path / "nfs"), "logs_root": "logs", "workspace_root": "ws"}
    api = write_config(tmp_path / "api", {"storage": storage, "auth": {"secret": "api-secret-" * 4},
                                          "images": paths, "builds": {"enabled": False}})
    worker = write_config(tmp_path / "worker", {
        "storage": storage, "auth": {"secret": "worker-secret-" * 4}, "images": paths,
        "polaris": {"repo": str(polaris.path)}, "builder": {"backend": "dry-run"},
        "builds": {"max_concurrent": 1}})  # --concurrency overrides it
    token = cli(api, "init", "--group", "myGroup", "--admin", "root").stdout.strip().splitlines()[-1]
    headers = {"Authorization": token, "Group": "myGroup"}
    try:
        with serve(api) as srv:
            ids = []
            for tag in ("a", "b", "c"):
                r = requests.post(f"{srv.url}/api/v2/images/polaris_build", headers=headers, timeout=30,
                                  json={"name": "polaris", "tag": tag, "git_ref": "main"})
                assert r.status_code == 200, r.text
                ids.append(r.json()["uuid"])

            def claimed() -> list[str]:
                out = []
                for image_id in ids:
                    rec = requests.get(f"{srv.url}/api/v2/images/{image_id}", headers=headers, timeout=30).json()
                    if rec["worker_meta"] is not None:
                        out.append(image_id)
                return out

            with run_worker(worker, tmp_path / "cwd-worker", env=slow_git,
                            concurrency=2) as w:
                wait_for(lambda: len(processes_running(CLONE_SLEEP)) == 2, what=f"two clones at once: {w.log()}")
                assert len(claimed()) == 2  # and the third waits: both build threads are busy
                assert "2 build threads" in w.log()
                assert len(processes_running(CLONE_SLEEP)) == 2
                w.kill()
    finally:
        for pid in processes_running(CLONE_SLEEP):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_workers_at_once_run_each_build_exactly_once(tmp_path: Path, polaris, kind: str):
    """Two worker processes (2 build threads each) on one database, racing for six queued
    builds: every build succeeds on its first attempt, claimed by exactly one worker."""
    with database(kind, tmp_path) as storage:
        (tmp_path / "shared").mkdir(exist_ok=True)
        paths = {"nfs_root": str(tmp_path / "nfs"), "logs_root": "logs", "workspace_root": "ws"}
        api = write_config(tmp_path / "api", {"storage": storage, "auth": {"secret": "api-secret-" * 4},
                                              "images": paths, "builds": {"enabled": False}})
        token = cli(api, "init", "--group", "myGroup", "--admin", "root").stdout.strip().splitlines()[-1]
        headers = {"Authorization": token, "Group": "myGroup"}

        def worker_config(name: str) -> Path:
            return write_config(tmp_path / name, {
                "storage": storage, "auth": {"secret": "worker-secret-" * 4}, "images": paths,
                "polaris": {"repo": str(polaris.path)}, "builder": {"backend": "dry-run"}})

        with serve(api) as srv:
            ids = []
            for i in range(6):
                r = requests.post(f"{srv.url}/api/v2/images/polaris_build", headers=headers, timeout=30,
                                  json={"name": "polaris", "tag": f"t{i}", "git_ref": "main"})
                assert r.status_code == 200, r.text
                ids.append(r.json()["uuid"])

            def records() -> list[dict]:
                return [requests.get(f"{srv.url}/api/v2/images/{i}", headers=headers, timeout=30).json()
                        for i in ids]

            with run_worker(worker_config("w1"), tmp_path / "cwd-w1", concurrency=2) as w1, \
                    run_worker(worker_config("w2"), tmp_path / "cwd-w2", concurrency=2) as w2:
                wait_for(lambda: all(r["status"] != "building" for r in records()), timeout_s=90,
                         what=f"six builds: {w1.log()} {w2.log()}")
                pids = {str(w1.pid), str(w2.pid)}
                for rec in records():
                    assert rec["status"] == "successful" and rec["meta"]["attempt"] == 1, rec
                    log = requests.get(f"{srv.url}/api/v2/images/{rec['uuid']}/logs", headers=headers,
                                       timeout=30).text
                    attempts = re.findall(r"attempt (\d) of 3: worker \S+ \(host \S+, pid (\d+)\)", log)
                    assert len(attempts) == 1 and attempts[0][0] == "1" and attempts[0][1] in pids, log
                    assert log.count("successful: polaris:") == 1, log
                assert "Traceback" not in w1.log() + w2.log()
