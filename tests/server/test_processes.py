"""CONTRACT section 15 with real processes, on SQLite and PostgreSQL: `serve` with
server.processes 2 (a supervisor and two serving processes on one port).

* one process killed: replaced; health and /metrics say how many serve; a write made through one
  process is read through every connection (each process's response cache follows the storage's
  change counters); SIGTERM stops them all;
* SIGHUP under continuous load (keep-alive clients and a new connection per request, reads and
  writes): no request fails and none is refused, and new processes serve afterwards;
* a configuration that no longer loads (bad YAML; a storage backend that does not exist) is
  refused on SIGHUP with its one-line error, and the old processes keep serving;
* a build running in an old process at a reload is handed over through its lease (not killed
  with its process): a new process runs it to the end (the dry-run builder stands in for
  docker/buildah; a `git` wrapper makes the first clone slow so the reload finds it running).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml

from xpresso_env.testing.server import cli, serve, write_config

from tests.git_repo import GitRepo, hello_polaris, slow_clone_env
from tests.waiting import wait_for
from tests.workers.test_worker_processes import database

pytestmark = pytest.mark.slow  # real serve processes

START_S = 90.0  # two interpreters starting on a busy 2-core machine


def children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # it ended (and was reaped) since the kill above: ESRCH or ENOENT
        return False
    return not stat.split(") ")[-1].startswith("Z")


def health(url: str) -> dict:
    r = requests.get(f"{url}/api/v2/health", timeout=10, headers={"Connection": "close"})
    assert r.status_code == 200, r.text
    return r.json()["processes"]


def serving(url: str, generation: int = 1, count: int = 2) -> bool:
    try:
        status = health(url)
    except requests.RequestException:
        return False
    return status["serving"] == count and status["generation"] == generation


@contextmanager
def two_processes(tmp_path: Path, kind: str, env: dict | None = None, **extra) -> Iterator[tuple]:
    with database(kind, tmp_path) as storage:
        settings = {"storage": storage, "auth": {"secret_file": "secret"},
                    "server": {"processes": 2, "threads": 8, "drain_s": 10},
                    "probes": {"enabled": False},
                    "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"}, **extra}
        config = write_config(tmp_path / "conf", settings)
        token = cli(config, "init", "--group", "myGroup", "--admin", "root").stdout.strip().splitlines()[-1]
        with serve(config, env=env) as server:
            wait_for(lambda: serving(server.url), timeout_s=START_S, what=f"two processes serving: {server.log()}")
            yield server, config, settings, {"Authorization": token, "Group": "myGroup"}


def names(url: str, headers: dict) -> set[str]:
    r = requests.get(f"{url}/api/v2/harnesses", headers={**headers, "Connection": "close"}, timeout=10)
    assert r.status_code == 200, r.text
    return {h["name"] for h in r.json()}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_killed_process_is_replaced_and_both_read_every_write(tmp_path, kind):
    with two_processes(tmp_path, kind) as (server, _, _, headers):
        first = children(server.pid)
        assert len(first) == 2 and server.pid not in first
        # server.threads (8) is the whole server's: each of the two processes runs half of them
        assert "with 2 processes" in server.log() and "4 threads each" in server.log(), server.log()
        # every connection is a new one: the kernel hands them to both processes
        seen = {requests.get(f"{server.url}/api/v2/health", headers={"Connection": "close"},
                             timeout=10).json()["processes"]["pid"] for _ in range(40)}
        assert seen <= first and len(seen) >= 1
        assert all(names(server.url, headers) == set() for _ in range(10))  # both caches hold the empty list
        r = requests.post(f"{server.url}/api/v2/harnesses", json={"name": "h1", "path": "/p"}, headers=headers,
                          timeout=10)
        assert r.status_code == 201, r.text
        assert all(names(server.url, headers) == {"h1"} for _ in range(10))

        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(children(server.pid) - first) == 1 and len(children(server.pid)) == 2,
                 timeout_s=START_S, what=f"a replacement: {server.log()}")
        wait_for(lambda: serving(server.url), timeout_s=START_S, what=f"two serving again: {server.log()}")
        assert f"process {victim} exited with status -9" in server.log()
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert "xpresso_server_processes 2.0" in metrics and "xpresso_server_processes_configured 2.0" in metrics
        assert all(names(server.url, headers) == {"h1"} for _ in range(10))

        now = children(server.pid)
        server.stop()  # SIGTERM: every process drains and exits
        assert server.proc.returncode == 0, server.log()
        assert not any(alive(pid) for pid in now)
        assert "Traceback" not in server.log()


class Load:
    """Clients that send requests without a pause until stopped: keep-alive sessions and a new
    connection per request, GET lists and one POST in ten. Every failure is kept."""

    def __init__(self, url: str, headers: dict, sessions: int = 3, fresh: int = 2):
        self.url, self.headers = url, headers
        self.stop = threading.Event()
        self.done = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(True,), daemon=True) for _ in range(sessions)]
        self.threads += [threading.Thread(target=self._run, args=(False,), daemon=True) for _ in range(fresh)]

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, keep_alive: bool) -> None:
        session = requests.Session() if keep_alive else None
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                if n % 10 == 0:
                    r = (session or requests).post(f"{self.url}/api/v2/harnesses", headers=self.headers, timeout=30,
                                                   json={"name": f"h-{uuid.uuid4().hex[:10]}", "path": "/p"})
                    ok = r.status_code == 201
                else:
                    r = (session or requests).get(f"{self.url}/api/v2/harnesses", headers=self.headers, timeout=30)
                    ok = r.status_code == 200
                with self._lock:
                    self.done += 1
                    if not ok:
                        self.failures.append(f"{r.request.method} {r.status_code} {r.text[:200]}")
            except requests.RequestException as exc:
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
        if session is not None:
            session.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_reload_under_continuous_load_fails_and_refuses_no_request(tmp_path, kind):
    with two_processes(tmp_path, kind) as (server, _, _, headers):
        old = children(server.pid)
        with Load(server.url, headers) as load:
            wait_for(lambda: load.done >= 30, what="load running")
            before = load.done
            os.kill(server.pid, signal.SIGHUP)
            wait_for(lambda: serving(server.url, generation=2), timeout_s=START_S,
                     what=f"the new processes serving: {server.log()}")
            wait_for(lambda: not any(alive(pid) for pid in old), timeout_s=60, what="the old processes ended")
            during = load.done - before
            time.sleep(1.0)
        assert load.failures == [], load.failures[:5]
        assert during > 20 and load.done > before + during
        new = children(server.pid)
        assert len(new) == 2 and not new & old
        log = server.log()
        assert "reloaded: 2 new process(es) serve (generation 2" in log, log
        assert "Traceback" not in log


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_configuration_that_no_longer_loads_is_refused_and_the_old_processes_keep_serving(tmp_path, kind):
    with two_processes(tmp_path, kind) as (server, config, settings, headers):
        old = children(server.pid)
        good = config.read_text()

        config.write_text(good + "server: [\n")  # no longer YAML
        os.kill(server.pid, signal.SIGHUP)
        wait_for(lambda: "reload refused" in server.log(), what=f"the refusal: {server.log()}")
        refusal = [line for line in server.log().splitlines() if "reload refused" in line]
        assert len(refusal) == 1 and "not valid YAML" in refusal[0] and str(config) in refusal[0], refusal
        assert refusal[0].endswith("the old processes keep serving")

        # loads, but a new process cannot start with it: refused the same way
        config.write_text(yaml.safe_dump({**settings, "storage": {"backend": "nosuch"}}))
        os.kill(server.pid, signal.SIGHUP)
        wait_for(lambda: server.log().count("reload refused") == 2, timeout_s=START_S,
                 what=f"the second refusal: {server.log()}")
        log = server.log()
        assert "unknown storage backend 'nosuch'" in log
        assert "reload refused: a new process" in log and "exited with status 1 before it served" in log

        assert children(server.pid) == old and health(server.url)["generation"] == 1
        assert names(server.url, headers) == set()

        config.write_text(good)  # fixed: the next reload goes through
        os.kill(server.pid, signal.SIGHUP)
        wait_for(lambda: serving(server.url, generation=2), timeout_s=START_S, what=f"the reload: {server.log()}")
        assert "Traceback" not in server.log()


def test_one_process_says_it_cannot_reload_and_goes_on_serving(tmp_path):
    config = write_config(tmp_path, {"storage": {"backend": "sqlite", "path": "db.sqlite3"},
                                     "auth": {"secret_file": "secret"}, "probes": {"enabled": False},
                                     "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"}})
    cli(config, "init")
    with serve(config) as server:
        wait_for(lambda: "serving on" in server.log(), what=server.log())
        os.kill(server.pid, signal.SIGHUP)
        wait_for(lambda: "SIGHUP: reloading needs server.processes of 2 or more" in server.log(), what=server.log())
        assert health(server.url) == {"configured": 1, "serving": 1, "generation": 1, "pid": server.pid,
                                      "supervisor": None}
        server.stop()
        assert server.proc.returncode == 0


@pytest.fixture
def polaris(tmp_path: Path) -> GitRepo:
    return hello_polaris(tmp_path / "polaris", {"basic/basic_example_job.py": "# a pyATS job\n",
                                                "manifests/basic.tem": "manifest: basic\n"})


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_build_running_at_a_reload_is_handed_over_and_finished_by_a_new_process(tmp_path, kind, polaris):
    extra = {"builder": {"backend": "dry-run"}, "polaris": {"repo": str(polaris.path)},
             "builds": {"lease_s": 30.0, "max_concurrent": 1}}
    slow = slow_clone_env(tmp_path, ["sleep", "20"], first_only=True)
    with two_processes(tmp_path, kind, env=slow, **extra) as (server, _, _, headers):
        old = children(server.pid)
        r = requests.post(f"{server.url}/api/v2/images/polaris_build", headers=headers, timeout=30,
                          json={"name": "polaris", "tag": "v1", "git_ref": "main"})
        assert r.status_code == 200, r.text
        image = f"{server.url}/api/v2/images/{r.json()['uuid']}"

        def log() -> str:
            return requests.get(f"{image}/logs", headers=headers, timeout=30).text

        wait_for(lambda: "$ git clone" in log(), timeout_s=60, what=f"the slow clone: {server.log()}")
        os.kill(server.pid, signal.SIGHUP)
        wait_for(lambda: serving(server.url, generation=2), timeout_s=START_S, what=f"the reload: {server.log()}")
        done = wait_for(lambda: (rec := requests.get(image, headers=headers, timeout=30).json())["status"] != "building"
                        and rec, timeout_s=90, what=f"the build's end: {log()}")
        text = log()
        assert done["status"] == "successful" and done["meta"]["attempt"] == 2, text
        # Handed back by the old process (well before its lease ran out), run again by a new one.
        assert "the server is stopping; the build goes back to the queue" in text, text
        pids = [int(p) for p in re.findall(r"attempt \d of 3: worker \S+ \(host \S+, pid (\d+)\)", text)]
        assert len(pids) == 2 and pids[0] in old and pids[1] in children(server.pid), (pids, old, text)
        assert "Traceback" not in server.log()


def test_a_port_in_use_stops_the_supervisor_with_one_line(tmp_path):
    config = write_config(tmp_path, {"storage": {"backend": "sqlite", "path": "db.sqlite3"},
                                     "auth": {"secret_file": "secret"}})
    cli(config, "init")  # only init creates a store: serve looks for one first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = cli(config, "serve", "--port", str(port), "--processes", "2", check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"xpresso-env: error: cannot listen on 127.0.0.1:{port}: the address is already "
                                   f"in use; choose another port with --port (or address with --host)")
