"""One assembly, three roles: what each runs in the background (``AppContext.loops``), started in
order and stopped in reverse; the settings are the same for every role."""
from __future__ import annotations

import pytest

from tests.conftest import make_settings
from xpresso_env.app import Role, build_context
from xpresso_env.runtime.loop import Loop, Step

ALL_ON = {"server": {"access_log": True}, "probes": {"enabled": True}, "builder": {"backend": "dry-run"}}


def _names(ctx) -> list[str]:
    return [loop.name for loop in ctx.loops]


@pytest.fixture
def contexts():
    made = []

    def make(tmp_path, role, extra=None, **kwargs):
        ctx = build_context(make_settings(tmp_path, extra=extra), check_schema=False, role=role, **kwargs)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def test_serve_runs_every_loop_the_settings_turn_on_consumers_first(tmp_path, contexts):
    ctx = contexts(tmp_path, Role.SERVE, ALL_ON)
    assert _names(ctx) == ["xpresso-access-log", "history-sweep", "delivery-sweep", "audit-sweep", "webhook-dispatch",
                           "builder check", "xpresso-build-heartbeat", "xpresso-build", "xpresso-retention",
                           "probe hooks", "xpresso-probe-scheduler"]
    assert all(isinstance(loop, (Loop, Step)) for loop in ctx.loops)  # one abstraction for every loop
    off = contexts(tmp_path / "off", Role.SERVE, {"builds": {"enabled": False}})
    # no access log, builds or probes here
    assert _names(off) == ["history-sweep", "delivery-sweep", "audit-sweep", "webhook-dispatch"]
    assert off.settings.builds.enabled is False and off.images is not None  # the API still answers


def test_events_deliver_false_leaves_fan_out_and_deliveries_to_the_worker(tmp_path, contexts):
    serve = contexts(tmp_path / "serve", Role.SERVE, {"events": {"deliver": False}, "builds": {"enabled": False}})
    assert _names(serve) == ["history-sweep", "delivery-sweep", "audit-sweep"]  # journals events, sweeps, delivers nothing
    worker = contexts(tmp_path / "worker", Role.WORKER, {"events": {"deliver": False}, "builds": {"enabled": False}})
    assert "webhook-dispatch" in _names(worker)


def test_the_worker_builds_whatever_builds_enabled_says_and_runs_no_probes_nor_access_log(tmp_path, contexts):
    extra = {**ALL_ON, "builds": {"enabled": False, "max_concurrent": 2}}
    ctx = contexts(tmp_path, Role.WORKER, extra, build_threads=3)
    assert _names(ctx) == ["history-sweep", "delivery-sweep", "audit-sweep", "webhook-dispatch", "builder check",
                           "xpresso-build-heartbeat", "xpresso-build", "xpresso-retention"]
    assert ctx.access_log is None
    # the settings are not rewritten: only this process's queue runs three threads
    assert ctx.settings.builds.enabled is False and ctx.settings.builds.max_concurrent == 2
    assert ctx.settings.probes.enabled is True
    assert ctx.images.queue.workers.size == 3


def test_an_admin_command_runs_nothing_in_the_background(tmp_path, contexts):
    assert contexts(tmp_path, Role.ADMIN, ALL_ON).loops == []
    assert contexts(tmp_path / "s", "admin").role is Role.ADMIN  # the CLI's name for it works too


class Recorder:
    def __init__(self, name: str, calls: list, fail: bool = False):
        self.name, self.calls, self.fail = name, calls, fail

    def start(self) -> None:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        self.calls.append(("start", self.name))

    def stop(self) -> None:
        self.calls.append(("stop", self.name))


def test_the_loops_start_in_order_and_stop_in_reverse_once(tmp_path, contexts):
    calls: list = []
    ctx = contexts(tmp_path, Role.SERVE)
    ctx.storage.init()
    ctx.loops = [Recorder("a", calls), Recorder("b", calls), Recorder("c", calls)]
    ctx.start()
    ctx.start()
    assert calls == [("start", "a"), ("start", "b"), ("start", "c")]
    calls.clear()
    ctx.stop()
    assert calls == [("stop", "c"), ("stop", "b"), ("stop", "a")] and not ctx.started
    ctx.start()  # a stopped context starts again
    assert ctx.started and calls[-3:] == [("start", "a"), ("start", "b"), ("start", "c")]


def test_a_loop_that_cannot_start_stops_those_started_before_it(tmp_path, contexts):
    calls: list = []
    ctx = contexts(tmp_path, Role.SERVE)
    ctx.loops = [Recorder("a", calls), Recorder("b", calls), Recorder("c", calls, fail=True)]
    with pytest.raises(RuntimeError, match="c cannot start"):
        ctx.start()
    assert calls == [("start", "a"), ("start", "b"), ("stop", "b"), ("stop", "a")] and not ctx.started


def test_probe_hooks_are_registered_while_probes_run(tmp_path, contexts):
    ctx = contexts(tmp_path, Role.SERVE, {"probes": {"enabled": True}})
    ctx.storage.init()
    ctx.start()
    assert ctx.pm.is_registered(ctx.probes.hooks)
    ctx.stop()
    assert not ctx.pm.is_registered(ctx.probes.hooks)


def test_the_worker_runs_its_own_thread_count_and_its_stop_ends_every_thread(tmp_path, contexts):
    import threading

    ctx = contexts(tmp_path, Role.WORKER, ALL_ON, build_threads=3)
    ctx.storage.init()
    ctx.start()
    try:
        names = {t.name for t in threading.enumerate()}
        assert {"xpresso-build-0", "xpresso-build-1", "xpresso-build-2", "xpresso-build-heartbeat",
                "webhook-dispatch", "history-sweep", "xpresso-retention"} <= names
        assert "xpresso-build-3" not in names and "xpresso-probe-scheduler" not in names
    finally:
        ctx.stop()
    left = [t.name for t in threading.enumerate() if t.name.startswith(("xpresso-build", "webhook-dispatch"))]
    assert left == [] and ctx.images.queue.stopping
