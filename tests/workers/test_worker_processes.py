"""CONTRACT section 11, for real: a `xpresso-env serve` with `builds.enabled: false` and
`xpresso-env worker` processes that share nothing but the database (each its own configuration
folder, logs_root, workspace_root and working directory; only the tar folder, images.nfs_root,
is common, as it is NFS in production). On one SQLite file and on one PostgreSQL database.

The server never builds; the worker does; the server shows the build's log and follows it live
over HTTP while the worker writes it; the worker is killed with SIGKILL in the middle of the
build (its git clone held back by a `git` wrapper on its PATH, as a big repository would), and a
second worker takes the build over and finishes it, the follower on the server seeing it all.
The dry-run builder stands in for docker/buildah (the image build itself is not the point)."""
from __future__ import annotations

import os
import re
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.git_repo import slow_clone_env
from tests.images.conftest import processes_running
from xpresso_env.testing.server import cli, serve, write_config

from tests.waiting import wait_for

from .conftest import run_worker

pytestmark = pytest.mark.slow  # real serve and worker processes

CLONE_SLEEP = ["sleep", "47"]  # a length no other test uses


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[dict]:
    if kind == "sqlite":
        yield {"backend": "sqlite", "path": str(tmp_path / "shared" / "db.sqlite3")}
        return
    from xpresso_env.testing.postgres import temp_database

    with temp_database() as dsn:
        yield {"backend": "postgres", "dsn": dsn}


class Follower(threading.Thread):
    """GET .../logs?follow=true on a server, collecting what arrives as it arrives."""

    def __init__(self, url: str, headers: dict):
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.data = b""
        self.status = None
        self.error = None

    def run(self) -> None:
        try:
            with requests.get(self.url, headers=self.headers, params={"follow": "true"}, stream=True,
                              timeout=120) as r:
                self.status = r.status_code
                for chunk in r.iter_content(chunk_size=None):
                    self.data += chunk
        except Exception as exc:  # reported by the test
            self.error = exc

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_workers_build_and_servers_show_and_follow_the_log(tmp_path: Path, polaris, kind: str):
    nfs = tmp_path / "nfs"
    try:
        with database(kind, tmp_path) as storage:
            (tmp_path / "shared").mkdir(exist_ok=True)

            def config(name: str, extra: dict) -> Path:
                return write_config(tmp_path / name, {
                    "storage": storage, "auth": {"secret": f"{name}-secret-" * 4},
                    "images": {"nfs_root": str(nfs), "logs_root": "logs", "workspace_root": "ws"},
                    "builder": {"backend": "dry-run"}, **extra})

            # The API server: no builds, no polaris.repo (only the workers need it), no builder.
            server_cfg = config("server", {"builds": {"enabled": False}})
            worker_cfg = {"polaris": {"repo": str(polaris.path)}, "builds": {"lease_s": 2.0}}
            w1_cfg, w2_cfg = config("worker1", worker_cfg), config("worker2", worker_cfg)
            token = cli(server_cfg, "init", "--group", "myGroup", "--admin", "root").stdout.strip().splitlines()[-1]
            headers = {"Authorization": token, "Group": "myGroup"}

            (tmp_path / "cwd-server").mkdir()
            with serve(server_cfg, cwd=tmp_path / "cwd-server") as srv:
                def image() -> dict:
                    r = requests.get(f"{srv.url}/api/v2/images/{image_id}", headers=headers, timeout=30)
                    assert r.status_code == 200, r.text
                    return r.json()

                health = requests.get(f"{srv.url}/api/v2/health", timeout=30).json()
                assert health["builder"] is None and health["builder_problem"] is None  # it does not build
                # Accepted with no worker running (and no polaris.repo here): it waits in the queue.
                r = requests.post(f"{srv.url}/api/v2/images/polaris_build", headers=headers, timeout=30,
                                  json={"name": "polaris", "tag": "v1", "git_ref": "main"})
                assert r.status_code == 200, r.text
                image_id = r.json()["uuid"]
                follower = Follower(f"{srv.url}/api/v2/images/{image_id}/logs", headers)
                follower.start()
                wait_for(lambda: "queued: polaris:v1" in follower.text, what="the queued line, followed")

                with run_worker(w1_cfg, tmp_path / "cwd-worker1", env=slow_clone_env(tmp_path, CLONE_SLEEP)) as w1:
                    wait_for(lambda: processes_running(CLONE_SLEEP), what=f"worker 1's clone: {w1.log()}")
                    # Followed live through the server while the worker builds.
                    wait_for(lambda: "$ git clone" in follower.text, what="the clone line, followed live")
                    rec = image()
                    assert rec["status"] == "building"
                    [sleeper] = processes_running(CLONE_SLEEP)
                    group = os.getpgid(sleeper)
                    w1.kill()
                    assert follower.is_alive()  # the build goes on, so does the follow
                assert processes_running(CLONE_SLEEP) == [sleeper], "the clone outlives its worker"

                with run_worker(w2_cfg, tmp_path / "cwd-worker2") as w2:
                    follower.join(90)
                    assert not follower.is_alive() and follower.error is None and follower.status == 200
                    text = follower.text
                    rec = image()
                    assert rec["status"] == "successful" and rec["meta"]["attempt"] == 2, text
                    assert rec["meta"]["dry_run"] is True and Path(rec["nfs_path"]).is_file()
                    # Each attempt ran in a worker, never in the server (builds.enabled: false).
                    attempts = re.findall(r"attempt (\d) of 3: worker \S+ \(host \S+, pid (\d+)\)", text)
                    assert attempts == [("1", str(w1.pid)), ("2", str(w2.pid))], text
                    assert f"killed process group {group}, left running by attempt 1" in text
                    assert "successful: polaris:v1" in text.splitlines()[-1]
                    # The whole log, and any part of it by byte offset, from the server.
                    whole = requests.get(f"{srv.url}/api/v2/images/{image_id}/logs", headers=headers, timeout=30)
                    assert whole.content == follower.data
                    for offset in (0, 1, 100, len(follower.data) - 1, len(follower.data)):
                        part = requests.get(f"{srv.url}/api/v2/images/{image_id}/logs", headers=headers,
                                            params={"offset": offset}, timeout=30)
                        assert part.content == follower.data[offset:]
                    assert "Traceback" not in w2.log() and "Traceback" not in srv.log()
                    wait_for(lambda: not processes_running(CLONE_SLEEP), what="the old clone ended")

            # Logs live in the database only: no process wrote a log file; the server had no workspace.
            for name in ("server", "worker1", "worker2", "cwd-server", "cwd-worker1", "cwd-worker2"):
                assert not (tmp_path / name / "logs").exists(), name
            assert not (tmp_path / "server" / "ws").exists()
    finally:
        for pid in processes_running(CLONE_SLEEP):
            os.kill(pid, signal.SIGKILL)


def test_worker_command_line(tmp_path: Path):
    cfg = write_config(tmp_path / "w", {"storage": {"backend": "sqlite"}, "auth": {"secret": "k" * 40}})
    p = cli(cfg, "worker", "--concurrency", "0", check=False)
    assert p.returncode != 0 and "positive integer" in p.stderr
    p = cli(cfg, "worker", "--help")
    assert "--concurrency" in p.stdout and "without serving HTTP" in p.stdout
