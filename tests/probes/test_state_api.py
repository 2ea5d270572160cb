"""GET /api/v2/{harnesses,engines}/{id}/state on every storage backend, /api/v2/health's probes
part, and `xpresso-env probe` run as a real process. Engines are probed against the Jenkins
STAND-IN on loopback (tests/probes/jenkins_standin.py: Jenkins cannot be installed here)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.probes.conftest import fake_install

CREDS = {"username": "jenkins-user", "api_token": "api-token-1"}
STATE_KEYS = {"operational_state", "since", "reason", "last_probe", "consecutive_failures",
              "consecutive_successes"}


def test_state_route_on_every_backend(world, jenkins, refused_url, tmp_path: Path):
    root = fake_install(tmp_path / "inst", "24.3")
    hid = world.post("/api/v2/harnesses", {"name": "h1", "path": str(root)}).json["id"]
    good = world.post("/api/v2/engines", {"name": "good", "base_url": f"{jenkins.url}/jenkins", **CREDS}).json["id"]
    bad = world.post("/api/v2/engines", {"name": "bad", "base_url": refused_url}).json["id"]

    before = world.get(f"/api/v2/harnesses/{hid}/state", user="guest")  # members (any role) may read
    assert before.status_code == 200 and set(before.json) == STATE_KEYS
    assert before.json["operational_state"] == "UNKNOWN" and before.json["last_probe"] is None
    assert before.json["reason"] == "not probed yet"

    world.ctx.probes.run_due()
    h = world.get(f"/api/v2/harnesses/{hid}/state").json
    assert (h["operational_state"], h["reason"], h["consecutive_successes"]) == ("ONLINE", "pyATS 24.3", 1)
    assert set(h["last_probe"]) == {"at", "ok", "latency_ms", "detail", "version"}
    assert h["last_probe"]["version"] == "24.3" and h["last_probe"]["latency_ms"] >= 0
    assert h["since"].endswith("Z")
    assert world.get(f"/api/v2/engines/{good}/state").json["reason"] == "Jenkins 2.452.3"
    e = world.get(f"/api/v2/engines/{bad}/state").json
    assert (e["operational_state"], e["reason"], e["consecutive_failures"]) == ("OFFLINE", "connection refused", 1)
    assert world.get(f"/api/v1/harnesses/{hid}").json["support_liveview"] is True
    # the probe's state change left its history row (by: null, the probe's reason) on this backend too
    rows = world.get(f"/api/v2/engines/{bad}/history").json
    assert [r["event"] for r in rows] == ["created", "state"]
    assert rows[1] == {"at": rows[1]["at"], "event": "state", "by": None,
                       "changes": {"operational_state": ["UNKNOWN", "OFFLINE"]}, "reason": "connection refused"}

    # another group's record is not found, nor is a harness id asked for as an engine
    assert world.get(f"/api/v2/harnesses/{hid}/state", user="other", group="g2").status_code == 404
    assert world.get(f"/api/v2/engines/{hid}/state").status_code == 404
    assert world.get("/api/v2/engines/not-a-uuid/state").status_code in (400, 404)
    assert world.get(f"/api/v2/engines/{good}/state?x=1").status_code == 400
    assert world.client.simulate_get(f"/api/v2/engines/{good}/state").status_code == 401


def test_a_probed_state_change_and_its_history_row_commit_together(world, refused_url):
    """On every backend: a journal that fails while a probe result is written rolls the state
    change back with it (no state without its history row); the next round writes both."""
    eid = world.post("/api/v2/engines", {"name": "bad", "base_url": refused_url}).json["id"]
    journal = world.ctx.journal

    def broken(*args, **kwargs):
        raise RuntimeError("journal down")

    journal.record = broken  # the instance attribute shadows the method, for this context only
    with pytest.raises(RuntimeError, match="journal down"):
        world.ctx.probes.run_due()
    assert world.get(f"/api/v2/engines/{eid}").json["operational_state"] == "UNKNOWN"
    assert [r["event"] for r in world.get(f"/api/v2/engines/{eid}/history").json] == ["created"]
    assert world.get(f"/api/v2/engines/{eid}/state").json["last_probe"] is None
    del journal.record
    world.ctx.probes.run_due()  # the claim is this service's own: it probes again at once
    assert world.get(f"/api/v2/engines/{eid}").json["operational_state"] == "OFFLINE"
    assert [r["event"] for r in world.get(f"/api/v2/engines/{eid}/history").json] == ["created", "state"]


def test_the_services_own_state_changes_do_not_look_like_edits(world, refused_url):
    """On every backend: a round that changes records' states moves the change counters the
    scheduler watches; on a backend with a counter per (kind, group) the service accounts for its
    own bumps, so it does not re-read every record at its next look (the cost of a first round at
    scale), while an edit by anyone else still tells it to. A store-wide counter (yaml) cannot
    tell them apart: there every change is an edit."""
    probes = world.ctx.probes
    ids = [world.post("/api/v2/engines", {"name": f"bad{i}", "base_url": refused_url}).json["id"] for i in range(3)]
    world.post("/api/v2/engines", {"name": "other-group", "base_url": refused_url}, group="g2")
    assert sorted(o.state for o in probes.run_due()) == ["OFFLINE"] * 4  # UNKNOWN -> OFFLINE: records written
    assert all(world.get(f"/api/v2/engines/{i}").json["operational_state"] == "OFFLINE" for i in ids)
    store_wide = probes._counters.versions_store_wide
    assert probes._moved() == (None if store_wide else frozenset())  # None: every record is read again
    world.patch(f"/api/v2/engines/{ids[0]}", {"site": "OTT"})  # an edit (not a target: no restart)
    assert probes._moved() == (None if store_wide else {("engine", "g1")})
    probes.run_due()  # re-reads (nothing due, nothing written): the edit is known
    assert probes._moved() == frozenset()


def test_an_edit_re_reads_the_records_of_its_group_only(world, refused_url):
    """Issue 19 (mixed load): each PATCH moved a counter, and every sync_s the scheduler re-read
    all 10,000 records and their states. Now it re-reads only the (kind, group)s whose counter
    moved, and still learns of records added, edited (a new target) and deleted; a group added or
    deleted, or a store-wide counter (yaml), re-reads everything."""
    probes = world.ctx.probes
    g1 = [world.post("/api/v2/engines", {"name": f"e{i}", "base_url": refused_url}).json["id"] for i in range(3)]
    g2 = world.post("/api/v2/engines", {"name": "far", "base_url": refused_url}, group="g2").json["id"]
    probes.run_due()  # every record probed once: each is due an interval from now
    assert probes._moved() == (None if probes._counters.versions_store_wide else frozenset())
    before = dict(probes._schedule)
    assert world.patch(f"/api/v2/engines/{g1[0]}", {"base_url": refused_url + "/jenkins"}).status_code == 200
    assert world.delete(f"/api/v2/engines/{g1[1]}").status_code == 204
    added = world.post("/api/v2/engines", {"name": "new", "base_url": refused_url}).json["id"]
    moved = probes._moved()
    if probes._counters.versions_store_wide:
        assert moved is None
        return
    assert moved == {("engine", "g1")}
    probes._sync(moved)
    schedule = probes._schedule
    assert schedule[g2] is before[g2]  # g2 was not read again
    assert schedule[g1[0]].target != before[g1[0]].target and schedule[g1[0]].due < before[g1[0]].due
    assert g1[1] not in schedule and added in schedule and schedule[g1[2]].due == before[g1[2]].due
    assert probes._moved() == frozenset()  # the counters read are taken as of that read
    world.ctx.auth.add_group("g9")
    assert probes._moved() is None  # a new group: every record is read again


def test_health_has_a_probes_part(world):
    body = world.client.simulate_get("/api/v2/health").json
    assert body["probes"]["enabled"] is False and body["probes_problem"] is None


@pytest.mark.slow
def test_cli_probe_prints_one_line_per_record(tmp_path: Path, jenkins, refused_url):
    root = fake_install(tmp_path / "inst", "24.3")
    cfg = tmp_path / "xpresso.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"backend": "sqlite", "path": "db.sqlite3"},
                                   "auth": {"secret_file": "secret"}, "server": {"access_log": False}}))
    fixtures = tmp_path / "fixtures.yaml"
    fixtures.write_text(yaml.safe_dump({
        "groups": ["lab", "other"],
        "harnesses": [{"group": "lab", "name": "h1", "harness": "pyATS", "path": str(root)},
                      {"group": "lab", "name": "off", "harness": "pyATS", "path": str(root),
                       "configuration_state": "DISABLED"},
                      {"group": "other", "name": "h2", "harness": "Tcl-ATS", "path": "/nonexistent"}],
        "engines": [{"group": "lab", "name": "e1", "type": "jenkins", "base_url": f"{jenkins.url}/jenkins", **CREDS},
                    {"group": "lab", "name": "e2", "type": "jenkins", "base_url": refused_url},
                    {"group": "lab", "name": "c1", "type": "cloud", "base_url": "https://cloud.invalid"}],
    }))

    def run(*args: str) -> list[str]:
        p = subprocess.run([sys.executable, "-m", "xpresso_env.cli", "--config", str(cfg), *args],
                           capture_output=True, text=True, timeout=120, env=dict(os.environ))
        assert p.returncode == 0, p.stderr
        return p.stdout.strip().splitlines()

    run("init")
    run("load", str(fixtures))
    assert run("probe") == [
        "lab harness h1: ONLINE (pyATS 24.3)",
        "lab harness off: UNKNOWN: DISABLED: not probed",
        "other harness h2: OFFLINE: /nonexistent: does not exist",
        "lab engine e1: ONLINE (Jenkins 2.452.3)",
        "lab engine e2: OFFLINE: connection refused",
        "lab engine c1: UNKNOWN: no prober for engines of type cloud",
    ]
    assert run("probe", "--kind", "engines", "--group", "lab", "e2") == ["lab engine e2: OFFLINE: connection refused"]
    assert run("probe", "--group", "other") == ["other harness h2: OFFLINE: /nonexistent: does not exist"]
