"""At least once, nothing lost: a real `xpresso-env serve` killed with SIGKILL right after it
answered 201 still delivers the event once it is started again (the outbox is written in the
change's own transaction). The receiver is down until after the crash, so the event cannot have
been delivered before it. SQLite, PostgreSQL (a database of the test's own) and YAML."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import pytest
import requests

from xpresso_env.testing import require
from xpresso_env.testing.postgres import postgres_available, temp_database
from xpresso_env.testing.server import cli, free_port, serve, write_config

from .receiver import Receiver

pytestmark = pytest.mark.slow  # real serve processes, killed

SECRET = "sigkill-test-secret-0123456789"


@contextlib.contextmanager
def _store(backend: str) -> Iterator[dict]:
    """The storage section of a config for ``backend`` (PostgreSQL: a database of the test's own)."""
    if backend == "postgres":
        require(postgres_available(), "PostgreSQL is not available")
        with temp_database() as dsn:
            yield {"backend": "postgres", "dsn": dsn}
    else:
        yield {"backend": backend, "path": "store.yaml" if backend == "yaml" else "db.sqlite3"}


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "yaml"])
def test_sigkill_right_after_201_still_delivers(tmp_path, backend):
    """The event is stored with the change, and fanned out and delivered after the restart."""
    with _store(backend) as storage:
        _sigkill_right_after_201_still_delivers(tmp_path, storage)


def _sigkill_right_after_201_still_delivers(tmp_path, storage: dict) -> None:
    config = write_config(tmp_path, {
        "storage": storage, "auth": {"secret_file": "secret"},
        "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"},
        "events": {"retry_base_s": 0.2, "poll_s": 0.05, "timeout_s": 1.0, "lease_s": 1.0},
    })
    cli(config, "init")
    cli(config, "group", "add", "myGroup")
    cli(config, "user", "add", "alice", "--group", "myGroup:group_admin")
    token = cli(config, "token", "create", "alice").stdout.strip().splitlines()[-1]
    headers = {"Authorization": token, "Group": "myGroup"}
    port = free_port()  # nothing listens there yet: every attempt before the crash is refused
    with serve(config) as server:
        res = requests.post(f"{server.url}/api/v2/webhooks", headers=headers, timeout=10,
                            json={"url": f"http://127.0.0.1:{port}/hook", "events": ["harness.*"], "secret": SECRET})
        assert res.status_code == 201, res.text
        hook_id = res.json()["id"]
        res = requests.post(f"{server.url}/api/v2/harnesses", headers=headers, timeout=10,
                            json={"name": "survivor", "path": "/opt/pyats"})
        assert res.status_code == 201, res.text
        server.kill()
        assert server.proc.returncode == -9
    with Receiver(port) as receiver, serve(config) as server:
        got = receiver.wait_for(1, timeout=60)[0]  # (probes may add harness.state events after it)
        assert got.signed_with(SECRET)
        assert got.json["event"] == "harness.created" and got.json["data"]["name"] == "survivor"
        listed = requests.get(f"{server.url}/api/v2/webhooks/{hook_id}/deliveries", headers=headers, timeout=10).json()
        created = [d for d in listed if d["event"] == "harness.created"]
        assert [d["id"] for d in created] == [got.json["id"]]


def test_two_serve_processes_deliver_each_event_once_and_in_order(tmp_path):
    """Two real `serve` processes on one store: each outbox entry is claimed by one of them."""
    config = write_config(tmp_path, {
        "storage": {"backend": "sqlite", "path": "db.sqlite3"}, "auth": {"secret_file": "secret"},
        "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"},
        "events": {"poll_s": 0.05}, "probes": {"enabled": False},
    })
    cli(config, "init")
    cli(config, "group", "add", "myGroup")
    cli(config, "user", "add", "alice", "--group", "myGroup:group_admin")
    token = cli(config, "token", "create", "alice").stdout.strip().splitlines()[-1]
    headers = {"Authorization": token, "Group": "myGroup"}
    with Receiver() as receiver, serve(config) as one, serve(config) as two:
        res = requests.post(f"{one.url}/api/v2/webhooks", headers=headers, timeout=10,
                            json={"url": receiver.url, "events": ["harness.created"], "secret": SECRET})
        assert res.status_code == 201, res.text
        hook_id = res.json()["id"]
        for n in range(30):  # writes through both processes
            server = (one, two)[n % 2]
            res = requests.post(f"{server.url}/api/v2/harnesses", headers=headers, timeout=10,
                                json={"name": f"h{n:02d}", "path": "/opt/pyats"})
            assert res.status_code == 201, res.text
        got = receiver.wait_for(30, timeout=60)
        deadline = time.monotonic() + 60
        while True:  # until both processes have recorded every outcome
            listed = requests.get(f"{two.url}/api/v2/webhooks/{hook_id}/deliveries", headers=headers,
                                  timeout=10).json()
            if all(d["status"] == "delivered" for d in listed) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(listed) == 30 and all(d["status"] == "delivered" and d["attempts"] == 1 for d in listed)
        ids = [r.headers["X-Xpresso-Delivery"] for r in receiver.received]
        assert len(ids) == len(set(ids)) == 30
        assert [r.json["data"]["name"] for r in got[:30]] == [f"h{n:02d}" for n in range(30)]
