"""The background loop every service's thread is: start, wake, stop (sleeping or mid-round), a
failing round, a pool of threads, the hooks around its threads."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from xpresso_env.core.errors import StorageUnavailable
from xpresso_env.runtime.loop import Loop, Step

LONG = 60.0  # an interval no test waits out: a round that runs before it was woken


def _wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Counter:
    def __init__(self, returns=None):
        self.rounds = 0
        self.threads: set[str] = set()
        self.returns = returns

    def __call__(self):
        self.rounds += 1
        self.threads.add(threading.current_thread().name)
        return self.returns


def test_start_runs_a_first_round_at_once_then_every_interval():
    body = Counter()
    loop = Loop("test-loop", body, 0.05)
    loop.start()
    try:
        assert _wait_for(lambda: body.rounds >= 3)
        assert body.threads == {"test-loop"} and loop.running
    finally:
        loop.stop()
    assert not loop.running and loop.stopping


def test_starting_twice_starts_one_thread():
    body = Counter()
    loop = Loop("test-once", body, LONG)
    loop.start()
    loop.start()
    try:
        assert _wait_for(lambda: body.rounds == 1)
        assert [t.name for t in threading.enumerate()].count("test-once") == 1
    finally:
        loop.stop()


def test_wait_first_pauses_before_the_first_round():
    body = Counter()
    loop = Loop("test-wait-first", body, LONG, wait_first=True)
    loop.start()
    try:
        time.sleep(0.1)
        assert body.rounds == 0
        loop.wake()
        assert _wait_for(lambda: body.rounds == 1)
    finally:
        loop.stop()


def test_wake_runs_a_round_early():
    body = Counter()
    loop = Loop("test-wake", body, LONG)
    loop.start()
    try:
        assert _wait_for(lambda: body.rounds == 1)
        time.sleep(0.05)
        assert body.rounds == 1, "the interval is long: no second round unless woken"
        loop.wake()
        assert _wait_for(lambda: body.rounds == 2)
    finally:
        loop.stop()


def test_a_wake_during_a_round_is_not_lost():
    entered, release = threading.Event(), threading.Event()
    rounds = []

    def body():
        rounds.append(1)
        if len(rounds) == 1:
            entered.set()
            release.wait(5)

    loop = Loop("test-wake-busy", body, LONG)
    loop.start()
    try:
        assert entered.wait(5)
        loop.wake()  # the thread is busy, not waiting: the wake must still count
        release.set()
        assert _wait_for(lambda: len(rounds) == 2)
    finally:
        loop.stop()


def test_the_body_chooses_its_next_delay():
    body = Counter(returns=0.0)  # "at once", as a worker after a build
    loop = Loop("test-delay", body, LONG)
    loop.start()
    try:
        assert _wait_for(lambda: body.rounds >= 20)
    finally:
        loop.stop()


def test_stop_while_sleeping_ends_at_once():
    body = Counter()
    loop = Loop("test-stop-sleeping", body, LONG, join_s=10)
    loop.start()
    assert _wait_for(lambda: body.rounds == 1)
    started = time.monotonic()
    loop.stop()
    assert time.monotonic() - started < 2
    assert "test-stop-sleeping" not in [t.name for t in threading.enumerate()]
    assert body.rounds == 1


def test_stop_while_the_body_runs_waits_for_the_round_then_no_other_starts():
    entered, release = threading.Event(), threading.Event()
    rounds = []

    def body():
        rounds.append(1)
        entered.set()
        release.wait(5)

    loop = Loop("test-stop-busy", body, 0.01, join_s=5, interrupt=release.set)
    loop.start()
    assert entered.wait(5)
    loop.stop()  # the interrupt ends the round; stop joins the thread
    assert "test-stop-busy" not in [t.name for t in threading.enumerate()]
    assert rounds == [1]


def test_stop_waits_for_a_round_that_ends_within_the_join():
    entered = threading.Event()
    ended = []

    def body():
        entered.set()
        time.sleep(0.2)
        ended.append(1)

    loop = Loop("test-stop-round", body, 0.01, join_s=5)
    loop.start()
    assert entered.wait(5)
    loop.stop()
    assert ended == [1] and "test-stop-round" not in [t.name for t in threading.enumerate()]


def test_stop_is_bounded_when_a_round_does_not_end(caplog):
    entered, release = threading.Event(), threading.Event()
    rounds = []

    def body():
        rounds.append(1)
        entered.set()
        release.wait(10)

    loop = Loop("test-stop-stuck", body, 0.01, join_s=0.2)
    loop.start()
    assert entered.wait(5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="xpresso_env.loop"):
        loop.stop()
    assert time.monotonic() - started < 2
    assert any("test-stop-stuck" in r.getMessage() and "still running" in r.getMessage() for r in caplog.records)
    assert not loop.running
    release.set()  # the round ends on its own; the stopped loop runs no other
    assert _wait_for(lambda: "test-stop-stuck" not in [t.name for t in threading.enumerate()])
    assert rounds == [1]


def test_stop_is_idempotent_and_a_never_started_loop_stops():
    body = Counter()
    Loop("test-never", body, LONG).stop()
    loop = Loop("test-twice", body, LONG)
    loop.start()
    loop.stop()
    loop.stop()
    assert not loop.running


def test_a_stopped_loop_starts_again():
    body = Counter()
    loop = Loop("test-restart", body, LONG)
    loop.start()
    assert _wait_for(lambda: body.rounds == 1)
    loop.stop()
    assert loop.stopping and not loop.running
    loop.start()
    try:
        assert not loop.stopping and _wait_for(lambda: body.rounds == 2)
    finally:
        loop.stop()


def test_a_raising_body_is_logged_once_per_round_and_the_loop_goes_on(caplog):
    rounds = []

    def body():
        rounds.append(1)
        if len(rounds) == 1:
            raise RuntimeError("boom")
        if len(rounds) == 2:
            raise StorageUnavailable("the database is restarting")

    logger = logging.getLogger("xpresso_env.test-loop")
    loop = Loop("test-raise", body, 0.02, logger=logger)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        loop.start()
        try:
            assert _wait_for(lambda: len(rounds) >= 4)
        finally:
            loop.stop()
    mine = [r for r in caplog.records if r.name == logger.name]
    assert len(mine) == 2
    assert mine[0].levelno == logging.ERROR and "test-raise failed" in mine[0].getMessage() and mine[0].exc_info
    assert mine[1].levelno == logging.WARNING and mine[1].getMessage() == "test-raise: the database is restarting"


def test_a_pool_runs_each_body_on_its_own_thread_and_wakes_them_all():
    bodies = [Counter(), Counter(), Counter()]
    loop = Loop.pool("test-pool", bodies, LONG)
    assert loop.size == 3
    loop.start()
    try:
        assert _wait_for(lambda: all(b.rounds == 1 for b in bodies))
        assert [b.threads for b in bodies] == [{"test-pool-0"}, {"test-pool-1"}, {"test-pool-2"}]
        loop.wake()
        assert _wait_for(lambda: all(b.rounds == 2 for b in bodies))
    finally:
        loop.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("test-pool")]
    with pytest.raises(ValueError):
        Loop.pool("test-empty", [], LONG)


def test_the_start_and_stop_hooks_run_around_the_threads():
    calls = []
    body = Counter()
    loop = Loop("test-hooks", lambda: calls.append("round") or body(), LONG, wait_first=True,
                on_start=lambda: calls.append("on_start"), interrupt=lambda: calls.append("interrupt"),
                on_stop=lambda: calls.append(("on_stop", threading.current_thread().name)))
    loop.start()
    loop.start()  # running: no second on_start
    loop.stop()
    loop.stop()  # stopped: no second interrupt or on_stop
    assert calls == ["on_start", "interrupt", ("on_stop", threading.current_thread().name)]


def test_a_failing_on_stop_is_logged_and_the_loop_still_stops(caplog):
    def broken():
        raise RuntimeError("no")

    loop = Loop("test-broken-stop", Counter(), LONG, on_stop=broken)
    loop.start()
    with caplog.at_level(logging.ERROR, logger="xpresso_env.loop"):
        loop.stop()
    assert not loop.running and "test-broken-stop: the work after its stop failed" in caplog.text


def test_a_step_runs_its_start_and_stop():
    calls = []
    step = Step("hooks", lambda: calls.append("start"), lambda: calls.append("stop"))
    step.start()
    step.stop()
    assert calls == ["start", "stop"]
    Step("no undo", lambda: calls.append("once")).stop()
    assert calls == ["start", "stop"]
