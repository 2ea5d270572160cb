"""Several real `xpresso-env serve` processes on one store share the probing: each record is probed
by one of them, and the claims of a process killed with SIGKILL are taken over when their lease
ends. Engines point at the Jenkins STAND-IN on loopback (tests/probes/jenkins_standin.py: Jenkins
cannot be installed here)."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import yaml

from tests import waiting
from xpresso_env.app import build_context
from xpresso_env.config import load_settings
from xpresso_env.probes.state import STATE_KIND
from xpresso_env.testing.server import cli, serve, write_config

pytestmark = pytest.mark.slow  # real serve processes

N = 12


def setup_store(tmp_path: Path, jenkins, mode: str) -> Path:
    base = {"storage": {"backend": "sqlite", "path": str(tmp_path / "db.sqlite3")},
            "auth": {"secret_file": str(tmp_path / "secret")}, "server": {"access_log": False}}
    config = write_config(tmp_path / "setup", {**base, "probes": {"enabled": False}})
    fixtures = tmp_path / "fixtures.yaml"
    fixtures.write_text(yaml.safe_dump({"groups": ["lab"], "engines": [
        {"group": "lab", "name": f"e{i}", "type": "jenkins", "base_url": f"{jenkins.url}/{mode}/e{i}"}
        for i in range(N)]}))
    cli(config, "init")
    cli(config, "load", str(fixtures))
    return config


def process_config(tmp_path: Path, name: str, setup: Path, **probes) -> Path:
    data = yaml.safe_load(setup.read_text())
    data["probes"] = {"enabled": True, "interval_s": 3600.0, "sync_s": 0.2, **probes}
    return write_config(tmp_path / name, data)


def states(config: Path) -> dict:
    ctx = build_context(load_settings(config), check_schema=False, images=False)
    try:
        with ctx.storage.read() as tx:
            return {d.id: d.body for d in tx.query(STATE_KIND)}
    finally:
        ctx.close()


wait_for = partial(waiting.wait_for, timeout_s=30.0, what="the serve processes did not get there", interval_s=0.1)


def test_two_serve_processes_probe_each_record_once(tmp_path: Path, jenkins):
    setup = setup_store(tmp_path, jenkins, "jenkins")
    a = process_config(tmp_path, "a", setup, concurrency=2)
    b = process_config(tmp_path, "b", setup, concurrency=2)
    with serve(a), serve(b):
        done = wait_for(lambda: (s := states(a)) and len(s) == N
                        and all(v["last_probe"] for v in s.values()) and s)
    assert all(jenkins.hits[f"/jenkins/e{i}/api/json"] == 1 for i in range(N)), jenkins.hits
    assert all(v["operational_state"] == "OFFLINE" for v in done.values())  # no credentials: 401
    assert {v["reason"] for v in done.values()} == {"HTTP 401: credentials refused"}


def test_a_killed_process_claims_are_taken_over_after_the_lease(tmp_path: Path, jenkins):
    setup = setup_store(tmp_path, jenkins, "stall")  # answers never end: probes last timeout_s
    slow = process_config(tmp_path, "slow", setup, timeout_s=60.0, lease_s=2.0)
    quick = process_config(tmp_path, "quick", setup, timeout_s=0.5, lease_s=2.0)
    with serve(slow) as first:
        claimed = wait_for(lambda: (s := states(slow)) and len(s) == N
                           and all(v["claimed_by"] for v in s.values()) and s)
        wait_for(lambda: all(jenkins.hits[f"/stall/e{i}/api/json"] == 1 for i in range(N)))  # all asked
        first.kill()  # SIGKILL mid-probe: its claims stay behind
    owner = {v["claimed_by"] for v in claimed.values()}
    assert len(owner) == 1
    with serve(quick):
        done = wait_for(lambda: (s := states(quick)) and all(v["last_probe"] for v in s.values()) and s)
    assert {v["reason"] for v in done.values()} == {"timed out after 0.5 s"}
    assert all(v["claimed_by"] is None for v in done.values())
    assert all(jenkins.hits[f"/stall/e{i}/api/json"] == 2 for i in range(N))  # the dead one's, then the taker's
