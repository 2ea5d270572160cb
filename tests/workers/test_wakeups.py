"""Issue 19 (CONTRACT section 15), for real: wake-ups across processes on PostgreSQL, and what a
worker tells its operator.

A `serve` process (``builds.enabled: false``) and `xpresso-env worker` processes share one
PostgreSQL database. The workers poll for builds every 30 s (``builds.poll_s``), so a build
claimed within a few seconds of its submission (or of its hand-over) was claimed because the
commit woke the worker (LISTEN/NOTIFY), not because of a poll. The listening connections are then
killed (``pg_terminate_backend``): they reconnect, and the next submission still wakes the worker.
The dry-run builder stands in for docker/buildah; a `git` wrapper on the first worker's PATH holds
its clone back, as a big repository would, so the build is still running when that worker is
stopped with Ctrl-C (SIGINT)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.git_repo import slow_clone_env
from tests.images.conftest import processes_running
from tests.waiting import wait_for
from xpresso_env.core.timeutil import parse_time
from xpresso_env.testing.server import cli, serve, write_config

from .conftest import run_worker
from .test_worker_processes import database

pytestmark = pytest.mark.slow  # real serve and worker processes, a real PostgreSQL

CLONE_SLEEP = ["sleep", "59"]  # a length no other test uses
POLL_S = 30.0  # the workers' poll: far longer than any wake-up this test accepts
WOKEN_S = 5.0  # "at once", with room for a busy machine


def _listeners(dsn: str) -> list[int]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name = 'xpresso-env-notices'").fetchall()
    return [r[0] for r in rows]


def _terminate(dsn: str, pids: list[int]) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_commit_wakes_the_worker_of_another_process_and_the_worker_says_what_it_does(tmp_path: Path, polaris):
    try:
        with database("postgres", tmp_path) as storage:
            dsn = storage["dsn"]
            paths = {"nfs_root": str(tmp_path / "nfs"), "logs_root": "logs", "workspace_root": "ws"}

            def config(name: str, extra: dict) -> Path:
                return write_config(tmp_path / name, {"storage": storage, "auth": {"secret": f"{name}-secret-" * 4},
                                                      "images": paths, **extra})

            server_cfg = config("server", {"builds": {"enabled": False}})
            worker_cfg = {"polaris": {"repo": str(polaris.path)}, "builder": {"backend": "dry-run"},
                          "builds": {"poll_s": POLL_S, "max_concurrent": 1}}
            w1_cfg, w2_cfg = config("worker1", worker_cfg), config("worker2", worker_cfg)
            token = cli(server_cfg, "init", "--group", "myGroup", "--admin", "root").stdout.strip().splitlines()[-1]
            headers = {"Authorization": token, "Group": "myGroup"}

            with serve(server_cfg, cwd=tmp_path) as srv:
                def submit(tag: str) -> str:
                    r = requests.post(f"{srv.url}/api/v2/images/polaris_build", headers=headers, timeout=30,
                                      json={"name": "wake", "tag": tag, "git_ref": "main"})
                    assert r.status_code == 200, r.text
                    return r.json()["uuid"]

                def image(image_id: str) -> dict:
                    return requests.get(f"{srv.url}/api/v2/images/{image_id}", headers=headers, timeout=30).json()

                def log_of(image_id: str) -> str:
                    return requests.get(f"{srv.url}/api/v2/images/{image_id}/logs", headers=headers, timeout=30).text

                def started(worker) -> None:
                    wait_for(lambda: "build thread(s)" in worker.log(), what=f"the worker's start: {worker.log()}")
                    time.sleep(1.0)  # its first look for builds (at start) is over: only a wake-up is left

                with run_worker(w1_cfg, tmp_path / "cwd-worker1", env=slow_clone_env(tmp_path, CLONE_SLEEP)) as w1:
                    started(w1)
                    first = submit("a")
                    rec = wait_for(lambda: image(first)["worker_meta"], timeout_s=WOKEN_S,
                                   what=f"worker 1 claims the build at once: {w1.log()}")
                    waited = parse_time(rec["claimed_at"]) - parse_time(image(first)["date_created"])
                    assert waited.total_seconds() < WOKEN_S < POLL_S
                    wait_for(lambda: processes_running(CLONE_SLEEP), what="worker 1's held-back clone")

                    with run_worker(w2_cfg, tmp_path / "cwd-worker2") as w2:
                        started(w2)
                        # Ctrl-C on worker 1: its build goes back to the queue, and worker 2 is woken.
                        os.kill(w1.pid, signal.SIGINT)
                        w1.proc.wait(30)
                        handed = time.monotonic()
                        wait_for(lambda: (image(first)["worker_meta"] or {}).get("worker_id") not in
                                 (None, rec["worker_id"]), timeout_s=WOKEN_S,
                                 what=f"worker 2 takes the build at once: {w2.log()}")
                        assert time.monotonic() - handed < WOKEN_S
                        wait_for(lambda: image(first)["status"] == "successful", what=f"the build: {w2.log()}")

                        # What worker 1 said: the builder, the claim, the hand-over, each with the image id.
                        text = w1.log()
                        assert "this worker builds images with the dry-run builder, 1 build thread(s)" in text, text
                        assert f"build {first} (wake:a, group myGroup): claimed by " in text, text
                        assert f"build {first} (wake:a, group myGroup): handed back to the queue, " \
                               "the worker is stopping" in text, text
                        assert "interrupted: the worker is stopping; the build goes back to the queue" in log_of(first)
                        assert "the server is stopping" not in log_of(first)
                        # And worker 2: the claim and the finish, with the built image's id.
                        built = image(first)["image_id"]
                        text = w2.log()
                        assert f"build {first} (wake:a, group myGroup): claimed by " in text, text
                        assert f"build {first} (wake:a, group myGroup): successful, image_id {built} after " in text

                        # The listening connections killed: they reconnect, and still wake the worker.
                        before = _listeners(dsn)
                        assert len(before) == 2, before  # the server's and worker 2's
                        _terminate(dsn, before)
                        wait_for(lambda: len(set(_listeners(dsn)) - set(before)) == 2,
                                 what=f"both listeners connected again: {w2.log()}")
                        assert "change notices: the listening connection was lost" in w2.log()
                        second = submit("b")
                        wait_for(lambda: image(second)["worker_meta"], timeout_s=WOKEN_S,
                                 what=f"worker 2 claims the next build at once: {w2.log()}")
                        wait_for(lambda: image(second)["status"] == "successful", what="the second build")
                        assert "Traceback" not in w2.log() and "Traceback" not in srv.log()
                assert "Traceback" not in w1.log()
    finally:
        for pid in processes_running(CLONE_SLEEP):
            os.kill(pid, signal.SIGKILL)
