"""The probe service: hysteresis, DISABLED, cloud engines, re-probe on edit, the journal, and
several processes sharing the work through claims (explicit probe rounds on a fake clock; the
background loop where the test is about it). Engines are probed against the Jenkins STAND-IN on
loopback (tests/probes/jenkins_standin.py: Jenkins cannot be installed here)."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from tests import waiting
from tests.probes.conftest import fake_install
from xpresso_env.hookspecs import hookimpl
from xpresso_env.journal.journal import HISTORY_KIND
from xpresso_env.plugin import make_plugin_manager
from xpresso_env.probes.protocol import ProbeResult, ProberInfo
from xpresso_env.probes.state import STATE_KIND, judge

CREDS = {"username": "jenkins-user", "api_token": "api-token-1"}


def probed(outcomes) -> list[str]:
    return sorted(o.name for o in outcomes if o.result is not None)


# Poll until the background loop's work shows up in storage.
wait_for = partial(waiting.wait_for, timeout_s=15.0, what="the probe service did not get there", interval_s=0.02)


def history(world, record_id: str) -> list[dict]:
    with world.ctx.storage.read() as tx:
        return [d.body for d in tx.query(HISTORY_KIND, record_id) if d.body["event"] == "state"]


# -- the rule itself ------------------------------------------------------------------------

@pytest.mark.parametrize("current, restart, ok, failures, successes, expected", [
    ("UNKNOWN", False, True, 0, 0, "ONLINE"),  # from UNKNOWN: at once
    ("UNKNOWN", False, False, 0, 0, "OFFLINE"),
    ("ONLINE", True, False, 0, 5, "OFFLINE"),  # a restart (new target) is UNKNOWN
    ("ONLINE", False, False, 0, 5, "ONLINE"),  # 1st failure
    ("ONLINE", False, False, 1, 0, "ONLINE"),  # 2nd
    ("ONLINE", False, False, 2, 0, "OFFLINE"),  # 3rd: fail_after
    ("OFFLINE", False, True, 4, 0, "OFFLINE"),  # 1st success
    ("OFFLINE", False, True, 0, 1, "ONLINE"),  # 2nd: ok_after
])
def test_hysteresis_rule(current, restart, ok, failures, successes, expected):
    verdict = judge(current, restart, ok, "why", failures, successes, fail_after=3, ok_after=2, reason=None)
    assert verdict.state == expected and verdict.changed == (expected != current)


# -- rounds on a fake clock -----------------------------------------------------------------

def test_hysteresis_through_probe_rounds(probe_world, clock, tmp_path: Path):
    w = probe_world(clock=clock, interval_s=10)
    root = fake_install(tmp_path / "inst", "24.3")
    hid = w.harness("h1", str(root))
    created = w.record("harnesses", hid)

    def round_(expect_state: str):
        clock.advance(16)  # past the next due time (half to one and a half intervals)
        assert probed(w.ctx.probes.run_due()) == ["h1"]
        assert w.record("harnesses", hid)["operational_state"] == expect_state
        return w.state("harnesses", hid)

    assert probed(w.ctx.probes.run_due()) == ["h1"]  # new: probed at once
    state = w.state("harnesses", hid)
    assert state["operational_state"] == "ONLINE" and state["reason"] == "pyATS 24.3"
    assert state["last_probe"]["ok"] is True and state["last_probe"]["version"] == "24.3"
    assert probed(w.ctx.probes.run_due()) == []  # not due again yet

    (root / "bin" / "python").chmod(0o644)
    assert round_("ONLINE")["consecutive_failures"] == 1
    assert round_("ONLINE")["consecutive_failures"] == 2
    state = round_("OFFLINE")
    assert state["reason"] == "bin/python is not executable" and state["consecutive_failures"] == 3
    (root / "bin" / "python").chmod(0o755)
    assert round_("OFFLINE")["consecutive_successes"] == 1
    assert round_("ONLINE")["reason"] == "pyATS 24.3"

    assert w.record("harnesses", hid)["date_modified"] == created["date_modified"]  # probes are not edits
    rows = history(w, hid)
    assert [(r["changes"], r["by"], r["reason"]) for r in rows] == [
        ({"operational_state": ["UNKNOWN", "ONLINE"]}, None, "pyATS 24.3"),
        ({"operational_state": ["ONLINE", "OFFLINE"]}, None, "bin/python is not executable"),
        ({"operational_state": ["OFFLINE", "ONLINE"]}, None, "pyATS 24.3"),
    ]


def test_support_liveview_follows_the_last_successful_probe(probe_world, clock, tmp_path: Path):
    w = probe_world(clock=clock, interval_s=10)
    root = fake_install(tmp_path / "inst", "20.1")
    hid = w.harness("h1", str(root))
    w.ctx.probes.run_due()
    assert w.record("harnesses", hid, version=1)["support_liveview"] is False
    site = next(root.glob("lib/python3*/site-packages"))
    (site / "pyats-20.1.dist-info").rename(site / "pyats-24.3.dist-info")
    clock.advance(16)
    w.ctx.probes.run_due()
    v1 = w.record("harnesses", hid, version=1)
    assert (v1["oper_state"], v1["support_liveview"]) == ("ONLINE", True)
    (site / "pyats-24.3.dist-info").rename(site / "pyats-18.1.dist-info")  # a failure keeps the last success's
    clock.advance(16)
    w.ctx.probes.run_due()
    assert w.record("harnesses", hid, version=1)["support_liveview"] is True


def test_engines_online_offline_and_cloud_unknown(probe_world, clock, jenkins, refused_url):
    w = probe_world(clock=clock)
    good = w.engine("good", f"{jenkins.url}/jenkins", **CREDS)
    bad = w.engine("bad", refused_url)
    cloud = w.engine("cloud", "https://cloud.invalid", type="cloud")
    outcomes = {o.name: o for o in w.ctx.probes.run_due()}
    assert outcomes["good"].line() == "g1 engine good: ONLINE (Jenkins 2.452.3)"
    assert outcomes["bad"].line() == "g1 engine bad: OFFLINE: connection refused"
    assert "cloud" not in outcomes  # no prober: never probed
    assert w.record("engines", good)["operational_state"] == "ONLINE"
    assert w.state("engines", bad)["reason"] == "connection refused"
    state = w.state("engines", cloud)
    assert (state["operational_state"], state["last_probe"]) == ("UNKNOWN", None)
    assert state["reason"] == "no prober for engines of type cloud"


def test_disabled_is_not_probed_and_shows_unknown(probe_world, clock, jenkins):
    w = probe_world(clock=clock)
    eid = w.engine("e1", f"{jenkins.url}/jenkins", **CREDS)
    w.ctx.probes.run_due()
    assert w.record("engines", eid)["operational_state"] == "ONLINE"
    r = w.patch(f"/api/v2/engines/{eid}", {"configuration_state": "DISABLED"})
    assert r.json["operational_state"] == "UNKNOWN"
    hits = jenkins.hits["/jenkins/api/json"]
    for _ in range(3):
        clock.advance(60)
        w.ctx.probes.run_due()
    assert jenkins.hits["/jenkins/api/json"] == hits
    assert w.state("engines", eid)["reason"] == "DISABLED: not probed"
    # a DISABLED record stored as ONLINE (an import, a fixture) is set to UNKNOWN, not probed
    with w.ctx.storage.write() as tx:
        doc = tx.get("engine", eid)
        tx.update(doc.__class__(**{**doc.__dict__, "body": {**doc.body, "operational_state": "ONLINE"}}))
    w.ctx.probes.run_due()
    assert w.record("engines", eid)["operational_state"] == "UNKNOWN"
    assert jenkins.hits["/jenkins/api/json"] == hits
    w.patch(f"/api/v2/engines/{eid}", {"configuration_state": "ENABLED"})
    assert probed(w.ctx.probes.run_due()) == ["e1"]  # enabled again: probed at once
    assert w.record("engines", eid)["operational_state"] == "ONLINE"


def test_an_edit_restarts_from_unknown(probe_world, clock, jenkins, refused_url):
    w = probe_world(clock=clock)
    eid = w.engine("e1", f"{jenkins.url}/jenkins", **CREDS)
    w.ctx.probes.run_due()
    r = w.patch(f"/api/v2/engines/{eid}", {"base_url": refused_url})
    assert r.json["operational_state"] == "UNKNOWN"
    state = w.state("engines", eid)
    assert state["last_probe"] is None and state["consecutive_successes"] == 0
    assert probed(w.ctx.probes.run_due()) == ["e1"]  # the new target is due at once, and from
    assert w.record("engines", eid)["operational_state"] == "OFFLINE"  # UNKNOWN one failure is enough
    w.patch(f"/api/v2/engines/{eid}", {"base_url": f"{jenkins.url}/jenkins", "api_token": "wrong"})
    w.ctx.probes.run_due()
    assert w.state("engines", eid)["reason"] == "HTTP 401: credentials refused"
    w.patch(f"/api/v2/engines/{eid}", {"site": "OTT"})  # not a target: no restart
    assert w.record("engines", eid)["operational_state"] == "OFFLINE"


def test_two_services_share_the_work_and_take_over_a_dead_ones(probe_world, clock, jenkins):
    a = probe_world(clock=clock, interval_s=30, lease_s=20)
    b = probe_world(clock=clock, interval_s=30, lease_s=20)
    names = [f"e{i}" for i in range(6)]
    for name in names:
        a.engine(name, f"{jenkins.url}/jenkins/{name}", **CREDS)
    assert probed(a.ctx.probes.run_due()) == names
    assert probed(b.ctx.probes.run_due()) == []  # probed this interval already, by the other
    clock.advance(46)
    assert probed(b.ctx.probes.run_due()) == names
    assert probed(a.ctx.probes.run_due()) == []
    assert all(jenkins.hits[f"/jenkins/{n}/api/json"] == 2 for n in names)
    # a claims every due record, then dies before writing a result (a kill -9 mid-probe)
    clock.advance(46)
    a.ctx.probes._sync()
    step = a.ctx.probes._transact([], sorted(a.ctx.probes._schedule), clock(), force=False)
    assert len(step.jobs) == 6
    assert probed(b.ctx.probes.run_due()) == []  # claimed, the lease still runs
    clock.advance(21)  # past the lease
    assert probed(b.ctx.probes.run_due()) == names
    assert all(jenkins.hits[f"/jenkins/{n}/api/json"] == 3 for n in names)


class CloudProber:
    name = "test-cloud"

    def probe(self, target):
        if target.record["name"] == "boom":
            raise RuntimeError("a prober's bug")
        return ProbeResult(ok=True, detail="cloud answers", version="1.0")


class CloudPlugin:
    @hookimpl
    def xpresso_probers(self):
        return [ProberInfo(name="test-cloud", description="probes cloud engines", kind="engine",
                           types=("cloud",), factory=lambda settings: CloudProber())]


def test_a_plugin_prober_probes_cloud_engines_and_its_bugs_are_failures(tmp_path, clock):
    from falcon.testing import TestClient

    from tests.conftest import make_settings, seed
    from tests.probes.conftest import ProbeWorld
    from xpresso_env.app import build_context, create_app

    s = make_settings(tmp_path, "sqlite", extra={"probes": {"enabled": True}})
    ctx = build_context(s, pm=make_plugin_manager(extra_plugins=[CloudPlugin()]), check_schema=False,
                        images=False, clock=clock)
    ctx.storage.init()
    try:
        w = ProbeWorld(ctx=ctx, client=TestClient(create_app(ctx)), tokens=seed(ctx))
        ok = w.engine("ok", "https://cloud.invalid", type="cloud")
        boom = w.engine("boom", "https://cloud.invalid", type="cloud")
        lines = sorted(o.line() for o in ctx.probes.run_due())
        assert lines == ["g1 engine boom: OFFLINE: probe error: RuntimeError", "g1 engine ok: ONLINE (cloud answers)"]
        assert w.record("engines", ok)["operational_state"] == "ONLINE"
        assert w.record("engines", boom)["operational_state"] == "OFFLINE"
    finally:
        ctx.close()


# -- the background loop --------------------------------------------------------------------

def test_the_running_service_probes_and_reprobes_an_edit_at_once(probe_world, jenkins, refused_url):
    w = probe_world(interval_s=3600, sync_s=3600)  # only the first probe and the edit's can happen
    eid = w.engine("e1", f"{jenkins.url}/jenkins", **CREDS)
    w.ctx.start()
    wait_for(lambda: w.record("engines", eid)["operational_state"] == "ONLINE")
    r = w.patch(f"/api/v2/engines/{eid}", {"base_url": refused_url})
    assert r.json["operational_state"] == "UNKNOWN"
    wait_for(lambda: w.record("engines", eid)["operational_state"] == "OFFLINE")
    assert w.state("engines", eid)["reason"] == "connection refused"
    assert w.get("/api/v2/health").json["probes"]["running"] is True


def test_an_edit_through_another_process_is_noticed_by_the_sync(probe_world, jenkins, refused_url):
    runner = probe_world(interval_s=3600, sync_s=0.1)
    other = probe_world(enabled=False)
    eid = runner.engine("e1", f"{jenkins.url}/jenkins", **CREDS)
    runner.ctx.start()
    wait_for(lambda: runner.record("engines", eid)["operational_state"] == "ONLINE")
    other.patch(f"/api/v2/engines/{eid}", {"base_url": refused_url})
    wait_for(lambda: runner.record("engines", eid)["operational_state"] == "OFFLINE")


def test_stop_releases_claims_and_the_state_documents_are_per_record(probe_world, clock, jenkins):
    w = probe_world(clock=clock)
    eid = w.engine("e1", f"{jenkins.url}/jenkins", **CREDS)
    w.ctx.probes.run_due()
    with w.ctx.storage.read() as tx:
        doc = tx.get(STATE_KIND, eid)
    assert doc.group == "g1" and doc.body["claimed_by"] is None
    assert "api-token-1" not in str(doc.body)  # the credentials are only in the record


def test_each_probe_is_reported_to_metrics(probe_world, clock, jenkins, refused_url):
    class Recorder:
        def __init__(self):
            self.calls = []

        def probe_finished(self, kind, seconds, ok):
            self.calls.append((kind, ok, seconds >= 0))

    w = probe_world(clock=clock)
    w.ctx.probes.metrics = recorder = Recorder()
    w.engine("good", f"{jenkins.url}/jenkins", **CREDS)
    w.engine("bad", refused_url)
    w.ctx.probes.run_due()
    assert sorted(recorder.calls) == [("engine", False, True), ("engine", True, True)]


def test_health_says_why_probing_is_down(probe_world):
    """A store that refuses the scheduler's transactions shows up in /api/v2/health's probes part."""
    from contextlib import contextmanager

    from xpresso_env.core.errors import StorageUnavailable
    from xpresso_env.probes.scheduler import ProbeService

    class DeadStore:
        name = "dead"

        @contextmanager
        def read(self):
            raise StorageUnavailable("database is on fire")
            yield

        write = read

    w = probe_world()
    real = w.ctx.probes
    service = ProbeService(DeadStore(), real.settings, real.probers, w.ctx.journal, real.events, owner="dead-store")
    service.scheduler.start()
    try:
        problem = wait_for(service.problem)
        assert problem == "storage: database is on fire"
        assert service.status()["problem"] == problem
        # ...and the health answer names the part that is down and why (CONTRACT §10)
        import falcon
        from falcon.testing import TestClient

        from xpresso_env.http.resources.meta import Health

        def health(storage):
            app = falcon.App()
            app.add_route("/health", Health(w.ctx.pm, storage, {"response_cache": "on"}, None, service))
            return TestClient(app).simulate_get("/health")

        res = health(w.ctx.storage)  # storage answers: 200, but probing is down
        assert res.status_code == 200
        assert res.json["probes_problem"] == problem and res.json["down"] == {"probes": problem}
        res = health(DeadStore())
        assert res.status_code == 503
        assert res.json["down"] == {"storage": "database is on fire", "probes": problem}
    finally:
        service.scheduler.stop()
    assert w.client.simulate_get("/api/v2/health").json["down"] == {}  # the app's own service is fine


def test_an_undecodable_folder_name_is_stored_escaped(probe_world, clock, tmp_path: Path):
    """A dist-info name with bytes that are not UTF-8 (Python gives them as lone surrogates) must
    not make the result unwritable, nor block the other records' results in the same batch."""
    import os

    root = fake_install(tmp_path / "odd", None)
    site = os.fsencode(root / "lib" / "python3.11" / "site-packages")
    os.mkdir(site + b"/pyats-24.3\xff.dist-info")
    w = probe_world(clock=clock)
    odd = w.harness("odd", str(root))
    fine = w.harness("fine", str(fake_install(tmp_path / "fine", "24.3")))
    w.ctx.probes.run_due()
    assert w.state("harnesses", odd)["reason"] == "pyATS 24.3\\udcff"
    assert w.record("harnesses", fine)["operational_state"] == "ONLINE"


def test_an_edit_through_another_process_wakes_the_scheduler_on_postgres(probe_world, jenkins, refused_url,
                                                                         tmp_path, pg_database):
    """Issue 19: with change notices the edit is read at once, with no re-read for an hour (sync_s)."""
    from tests.conftest import make_settings
    from xpresso_env.testing import require
    from xpresso_env.testing.postgres import reset_database

    require(pg_database is not None, "PostgreSQL is not among XPRESSO_TEST_BACKENDS")
    reset_database(pg_database)

    def settings(**probes):
        return make_settings(tmp_path, "postgres", pg_database,
                             extra={"probes": {"enabled": True, "timeout_s": 2.0, **probes}})

    runner = probe_world(settings=settings(interval_s=3600, sync_s=3600))
    other = probe_world(settings=settings(enabled=False))
    eid = runner.engine("e1", f"{jenkins.url}/jenkins", **CREDS)
    runner.ctx.start()
    wait_for(lambda: runner.record("engines", eid)["operational_state"] == "ONLINE")
    other.patch(f"/api/v2/engines/{eid}", {"base_url": refused_url})
    wait_for(lambda: runner.record("engines", eid)["operational_state"] == "OFFLINE", timeout_s=10)
    assert runner.state("engines", eid)["reason"] == "connection refused"
