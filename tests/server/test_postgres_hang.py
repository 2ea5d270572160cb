"""A hung or stopped PostgreSQL is an outage, not a freeze (CONTRACT §16), with the real `serve`.

Each test owns a private PostgreSQL cluster (the ``private_postgres`` fixture), never the shared
server: it is hung with SIGSTOP (as a hung host or a network partition behaves), resumed with
SIGCONT, stopped and started again.
"""
from __future__ import annotations

import re
import threading
import time

import pytest
import requests

from xpresso_env.testing.server import cli, serve, write_config

pytestmark = pytest.mark.slow  # a private PostgreSQL and a real serve process

THREADS = 4  # server.threads; more clients than that hit storage at once
CLIENTS = 10
STATEMENT_S = 1.5  # storage.statement_timeout_s
CONNECT_S = 2.0  # storage.connect_timeout_s (libpq's least)
# What a request that needs storage may take, seen by its client, while the database hangs: the
# longer of the two bounds (a statement is cut 0.5 s after its timeout) for its own statement,
# once more for the wait for a thread that another request holds (CLIENTS > THREADS; a statement
# begun just before the first cut opened the breaker runs to its bound), and a busy machine's
# margin. Without the bounds these requests hang as long as the database does.
BOUND_S = 2 * max(STATEMENT_S + 0.5, CONNECT_S) + 1.0
AT_ONCE_S = 1.0  # a storage-free route; /metrics waits for its gauges at most 1 s more
FAST_S = 0.5  # the first 503 of an outage, as fast as the rest
RECOVER_S = 15.0


@pytest.fixture
def cluster(private_postgres):
    return private_postgres


def _config(tmp_path, dsn: str):
    return write_config(tmp_path, {
        "storage": {"backend": "postgres", "dsn": dsn, "busy_timeout_s": 1.0,
                    "statement_timeout_s": STATEMENT_S, "connect_timeout_s": CONNECT_S},
        "auth": {"secret_file": "secret"}, "probes": {"enabled": False},
        "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"}})


@pytest.fixture
def setup(cluster, tmp_path):
    config = _config(tmp_path, cluster.create_database("xpresso"))
    cli(config, "init")
    cli(config, "group", "add", "g1")
    cli(config, "user", "add", "alice", "--group", "g1:privilege_member")
    token = cli(config, "token", "create", "alice").stdout.strip().splitlines()[-1]
    return config, {"Authorization": token, "Group": "g1"}


def timed(url: str, **kw) -> tuple[float, requests.Response]:
    t0 = time.monotonic()
    r = requests.get(url, timeout=60, **kw)
    return time.monotonic() - t0, r


def storage_free_routes(server) -> list[str]:
    return [f"{server.url}/api/v2/openapi.json", f"{server.url}/", f"{server.url}/metrics"]


def wait_for(url: str, headers: dict, status: int = 200, limit: float = RECOVER_S) -> float:
    t0 = time.monotonic()
    while True:
        r = requests.get(url, headers=headers, timeout=30)
        if r.status_code == status:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < limit, f"{r.status_code} {r.text}"
        time.sleep(0.1)


def test_hung_database_answers_503_within_the_bound_and_storage_free_routes_at_once(cluster, setup):
    config, headers = setup
    with serve(config, threads=THREADS) as server:
        harnesses = f"{server.url}/api/v2/harnesses"
        assert requests.get(harnesses, headers=headers, timeout=10).status_code == 200
        cluster.pause()
        try:
            answers: list[tuple[float, int, dict]] = []
            lock = threading.Lock()

            def client() -> None:
                for _ in range(3):
                    took, r = timed(harnesses, headers=headers)
                    with lock:
                        answers.append((took, r.status_code, r.json()))

            clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
            for c in clients:
                c.start()
            time.sleep(0.2)  # every waitress thread is now held by a request that needs storage
            free: list[tuple[str, float, int]] = []
            while any(c.is_alive() for c in clients):
                for url in storage_free_routes(server):
                    took, r = timed(url)
                    free.append((url, took, r.status_code))
                time.sleep(0.1)
            for c in clients:
                c.join()
            # every request that needed the database: a 503 with a detail, within the bound
            assert len(answers) == 3 * CLIENTS
            assert all(status == 503 and body.get("detail") for _, status, body in answers), answers
            assert max(took for took, _, _ in answers) < BOUND_S, sorted(took for took, _, _ in answers)
            # the routes that need none answered at once meanwhile, however many clients waited
            assert len(free) >= 3 and all(status == 200 for _, _, status in free), free
            slowest = {url: max(took for u, took, _ in free if u == url) for url in storage_free_routes(server)}
            assert slowest[f"{server.url}/api/v2/openapi.json"] < AT_ONCE_S, slowest
            assert slowest[f"{server.url}/"] < AT_ONCE_S, slowest
            assert slowest[f"{server.url}/metrics"] < AT_ONCE_S + 1.0, slowest
            metrics = requests.get(f"{server.url}/metrics", timeout=10).text
            assert "xpresso_metrics_storage_up 0.0" in metrics
        finally:
            cluster.resume()
        took = wait_for(harnesses, headers)
        print(f"served again {took:.2f}s after SIGCONT")
        log = server.log()
        assert "PostgreSQL unreachable" in log and "PostgreSQL reachable again" in log, log
        assert "Traceback" not in log


def test_stopped_database_first_503_is_fast(cluster, setup):
    config, headers = setup
    with serve(config, threads=THREADS) as server:
        harnesses = f"{server.url}/api/v2/harnesses"
        assert requests.get(harnesses, headers=headers, timeout=10).status_code == 200
        cluster.stop()
        tooks = []
        for _ in range(5):
            took, r = timed(harnesses, headers=headers)
            assert r.status_code == 503 and r.json()["detail"], r.text
            tooks.append(took)
        assert max(tooks) < FAST_S, tooks  # the first one included: no wait on a refused connection
        cluster.start()
        wait_for(harnesses, headers)
        assert "Traceback" not in server.log()


def test_serve_started_while_the_database_is_down_answers_503_and_logs_each_retry(cluster, setup):
    config, headers = setup
    cluster.stop()
    with serve(config, threads=THREADS) as server:
        # serve() returned once the port accepted: it answers at once, never silence
        took, r = timed(f"{server.url}/api/v2/harnesses", headers=headers)
        assert r.status_code == 503 and r.json()["detail"] and took < AT_ONCE_S, (took, r.text)
        took, r = timed(f"{server.url}/api/v2/health")
        assert r.status_code == 503 and took < AT_ONCE_S, (took, r.text)
        assert timed(f"{server.url}/api/v2/openapi.json")[1].status_code == 200
        time.sleep(5.5)
        retries = re.findall(r"storage postgres at .* not reachable \(.*\): retrying in 2 s", server.log())
        assert 2 <= len(retries) <= 4, server.log()  # one every 2 s, as README says
        assert "serving on" not in server.log()
        cluster.start()
        took = wait_for(f"{server.url}/api/v2/harnesses", headers)
        print(f"served {took:.2f}s after the database started")
        log = server.log()
        assert "serving on" in log and "Traceback" not in log, log
