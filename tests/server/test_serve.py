"""The real `xpresso-env serve` process, spoken to over HTTP."""
from __future__ import annotations

import re

import pytest
import requests

from xpresso_env.testing.server import cli, serve, write_config

pytestmark = pytest.mark.slow  # a real serve process


@pytest.fixture
def running(tmp_path):
    config = write_config(tmp_path, {"storage": {"backend": "sqlite", "path": "db.sqlite3"},
                                     "auth": {"secret_file": "secret"},
                                     "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"}})
    cli(config, "init")
    cli(config, "group", "add", "myGroup")
    cli(config, "user", "add", "alice", "--group", "myGroup:privilege_member")
    token = cli(config, "token", "create", "alice").stdout.strip().splitlines()[-1]
    with serve(config) as server:
        yield server, {"Authorization": token, "Group": "myGroup"}, config


def test_http_round_trip_and_access_log(running):
    server, headers, config = running
    r = requests.post(f"{server.url}/api/v2/harnesses", json={"name": "TestHarness", "path": "/path/to/pyATS"},
                      headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    hid = r.json()["id"]
    r = requests.get(f"{server.url}/api/v2/harnesses", headers=headers, timeout=10)
    assert r.status_code == 200 and [h["id"] for h in r.json()] == [hid]
    assert r.headers["Content-Type"].startswith("application/json") and r.headers["X-Total-Count"] == "1"
    r = requests.get(f"{server.url}/api/v2/harnesses", timeout=10)
    assert r.status_code == 401 and r.json() == {"detail": "Authentication credentials were not provided."}
    r = requests.get(f"{server.url}/nowhere", headers=headers, timeout=10)
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    # a write made by another process (the CLI) is seen at once
    cli(config, "load", str(_fixtures(config)))
    names = {h["name"] for h in requests.get(f"{server.url}/api/v2/harnesses", headers=headers, timeout=10).json()}
    assert names == {"TestHarness", "FromCli"}
    log = server.log()
    assert re.search(r"GET /api/v2/harnesses 200 \d+\.\dms user=alice group=myGroup", log), log
    assert re.search(r"GET /api/v2/harnesses 401 \d+\.\dms user=- group=-", log), log
    assert re.search(r"POST /api/v2/harnesses 201 ", log)
    assert "Traceback" not in log


def _fixtures(config):
    path = config.parent / "more.yaml"
    path.write_text("harnesses: [{group: myGroup, name: FromCli, path: /p}]\n")
    return path


def test_malformed_http_is_answered_not_crashed(running):
    server, headers, _ = running
    r = requests.post(f"{server.url}/api/v2/harnesses", data=b"{" * 10, headers={**headers, "Content-Type": "application/json"},
                      timeout=10)
    assert r.status_code == 400 and "detail" in r.json()
    r = requests.post(f"{server.url}/api/v2/harnesses", data=b"x" * (2 << 20),
                      headers={**headers, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 413
    assert requests.get(f"{server.url}/api/v2/health", timeout=10).json()["status"] == "ok"
