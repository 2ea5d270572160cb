"""procrun: real subprocesses in their own process group, streamed, killed as a group."""
from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from xpresso_env.builds.sdk.builder import BuildCancelled, BuildFailed, BuildTimedOut
from xpresso_env.builds.sdk.procrun import end_group, group_members, run, start_time

from .conftest import SLEEP_S, processes_running, wait_until

SLEEP = ["sleep", str(SLEEP_S)]


def test_streams_lines_and_returns_the_status(tmp_path):
    log: list[str] = []
    res = run(["sh", "-c", "echo one; echo two >&2; printf 'no newline'; exit 3"], log.append,
              threading.Event(), 10, cwd=tmp_path)
    assert res.returncode == 3
    assert log == ["one", "two", "no newline"]
    assert res.last_line() == "no newline"


def test_capture_stdout_keeps_stdout_out_of_the_log():
    log: list[str] = []
    res = run(["sh", "-c", "echo value; echo warning >&2"], log.append, threading.Event(), 10,
              capture_stdout=True)
    assert res.returncode == 0 and res.stdout == ["value"] and log == ["warning"]


def test_env_and_cwd_are_passed(tmp_path):
    log: list[str] = []
    run(["sh", "-c", 'echo "$FOO $(pwd)"'], log.append, threading.Event(), 10, cwd=tmp_path,
        env={"FOO": "bar", "PATH": os.environ["PATH"]})
    assert log == [f"bar {tmp_path}"]


def test_lines_are_streamed_while_the_process_runs():
    seen = threading.Event()
    log_times: list[float] = []

    def log(line: str) -> None:
        log_times.append(time.monotonic())
        seen.set()

    started = time.monotonic()
    run(["sh", "-c", "echo early; sleep 1; echo late"], log, threading.Event(), 10)
    assert log_times[0] - started < 0.8 and log_times[1] - started >= 0.9


def test_missing_program_is_a_build_failure():
    with pytest.raises(BuildFailed, match="cannot run no-such-program-xyz"):
        run(["no-such-program-xyz"], lambda line: None, threading.Event(), 10)


def test_cancel_kills_the_whole_group():
    cancel = threading.Event()
    started = threading.Event()

    def log(line: str) -> None:
        if line == "started":
            started.set()

    # The leader runs two sleeps: one in the background, one in the foreground.
    threading.Thread(target=lambda: started.wait(10) and cancel.set(), daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(BuildCancelled):
        run(["sh", "-c", f"{' '.join(SLEEP)} & echo started; {' '.join(SLEEP)}; wait"], log, cancel, 60)
    assert time.monotonic() - t0 < 3
    assert wait_until(lambda: not processes_running(SLEEP), 2)


def test_timeout_kills_the_group():
    t0 = time.monotonic()
    with pytest.raises(BuildTimedOut, match="timed out"):
        run(["sh", "-c", f"{' '.join(SLEEP)}"], lambda line: None, threading.Event(), 0.5)
    assert time.monotonic() - t0 < 2.5
    assert wait_until(lambda: not processes_running(SLEEP), 2)


def test_sigterm_grace_lets_the_program_clean_up(tmp_path):
    marker = tmp_path / "cleaned"
    script = f"trap 'touch {marker}; exit 1' TERM; echo ready; while :; do sleep 0.1; done"
    cancel = threading.Event()

    def log(line: str) -> None:
        if line == "ready":
            cancel.set()

    with pytest.raises(BuildCancelled):
        run(["sh", "-c", script], log, cancel, 30, term_grace_s=3)
    assert marker.exists()


def test_stray_children_do_not_outlive_the_leader():
    # The leader exits at once but leaves a background sleep holding its output pipe.
    t0 = time.monotonic()
    res = run(["sh", "-c", f"({' '.join(SLEEP)} &); echo done"], lambda line: None, threading.Event(), 30)
    assert res.returncode == 0
    assert time.monotonic() - t0 < 3
    assert wait_until(lambda: not processes_running(SLEEP), 2)


def test_children_stop_mode_lets_the_leader_finish(tmp_path):
    # The leader is never signalled: its steps are killed until it gives up by itself.
    marker = tmp_path / "leader-cleaned-up"
    script = (f"echo step1; {' '.join(SLEEP)}; echo step1-status-$?; "
              f"{' '.join(SLEEP)}; : > {marker}; echo leader-done")  # builtins only: children die
    cancel = threading.Event()
    log: list[str] = []

    def sink(line: str) -> None:
        log.append(line)
        if line == "step1":
            cancel.set()

    t0 = time.monotonic()
    with pytest.raises(BuildCancelled):
        run(["sh", "-c", script], sink, cancel, 60, term_grace_s=20, stop_mode="children")
    assert time.monotonic() - t0 < 3
    assert "step1-status-137" in log and "leader-done" in log and marker.exists()
    assert wait_until(lambda: not processes_running(SLEEP), 2)


def test_children_stop_mode_falls_back_to_killing_the_group():
    # A leader that never finishes is killed with its group once the grace is over.
    cancel = threading.Event()
    cancel.set()
    t0 = time.monotonic()
    with pytest.raises(BuildCancelled):
        run(["sh", "-c", f"while :; do {' '.join(SLEEP)}; done"], lambda line: None, cancel, 60,
            term_grace_s=0.5, stop_mode="children")
    assert 0.4 < time.monotonic() - t0 < 3
    assert wait_until(lambda: not processes_running(SLEEP), 2)


def test_on_start_gets_the_group_while_it_runs():
    seen: list[tuple[int, bool]] = []
    run(["sh", "-c", "sleep 0.2"], lambda line: None, threading.Event(), 10,
        on_start=lambda pgid: seen.append((pgid, bool(group_members(pgid)))))
    assert len(seen) == 1 and seen[0][1], "called once, while the group runs"


def test_a_failing_on_start_kills_the_group():
    def refuse(pgid: int) -> None:
        raise RuntimeError("cannot record")

    with pytest.raises(RuntimeError):
        run(SLEEP, lambda line: None, threading.Event(), 10, on_start=refuse)
    assert wait_until(lambda: not processes_running(SLEEP), 5)


def test_end_group_kills_a_left_over_group_and_spares_a_reused_pid():
    # A group in a session of its own, as a killed server leaves a build step: leader and child.
    leader = subprocess.Popen(["sh", "-c", f"sleep {SLEEP_S} & sleep {SLEEP_S}; wait"], start_new_session=True)
    try:
        assert wait_until(lambda: len(group_members(leader.pid)) == 3, 5)
        start = start_time(leader.pid)
        assert start is not None and start_time(leader.pid) == start
        assert end_group(leader.pid, start + 1) is False, "another process's start time: left alone"
        assert len(group_members(leader.pid)) == 3
        assert end_group(leader.pid, start) is True
        assert group_members(leader.pid) == [] and not processes_running(SLEEP)
        assert end_group(leader.pid, start) is False, "nothing left to end"
    finally:
        leader.kill()
        leader.wait()
    assert start_time(leader.pid) is None
