"""The suite's own guards: a run that leaves a mount, a process or a listening socket behind fails
(xpresso_env.testing.leaks), the run's temp folders go to RAM when there is room
(xpresso_env.testing.tempdirs), and its processes reuse compiled bytecode
(xpresso_env.testing.bytecode)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from xpresso_env.testing import require
from xpresso_env.testing.leaks import LeakWatch, mount_points, unmount_under
from xpresso_env.testing.tempdirs import ram_temp_root


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_a_child_left_running_is_a_leak_until_it_ends(background):
    background.wait_all()  # the run's own preparations (pip) are this process's children too
    env = dict(os.environ)
    watch = LeakWatch.start(environ=env)
    child = subprocess.Popen(["sleep", "30"], env=env)
    try:
        assert [p.pid for p in watch.leaks().processes] == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert not watch.leaks()


def test_an_orphan_is_found_by_the_marker_it_inherited(background):
    """A build step whose server was killed is re-parented away from this process: the marker in
    its environment still names it as this run's."""
    background.wait_all()  # the run's own preparations (pip) are this process's children too
    env = dict(os.environ)
    watch = LeakWatch.start(environ=env)
    out = subprocess.run(["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"], env=env, capture_output=True,
                         text=True, check=True)
    orphan = int(out.stdout)
    try:
        leaks = watch.leaks()
        assert [p.pid for p in leaks.processes] == [orphan]
        assert leaks.processes[0].ppid != os.getpid()
    finally:
        LeakWatch.clean(watch.leaks())
    assert _gone(orphan)


def test_a_listening_socket_is_a_leak_until_closed():
    watch = LeakWatch.start(environ={})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        assert f"listening: 127.0.0.1:{port} (pid {os.getpid()}: this test run)" in watch.leaks().lines()
    finally:
        sock.close()
    assert not watch.leaks().listening


def test_a_mount_left_under_a_watched_folder_is_a_leak_and_unmount_under_takes_it(tmp_path: Path):
    require(os.geteuid() == 0, "mounting needs root")
    watch = LeakWatch.start(environ={})
    watch.watch(tmp_path)
    point = tmp_path / "exec" / "net ns"  # a space: mountinfo writes it as \040
    point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "xpresso-leak-test", str(point)], check=True)
    try:
        assert watch.leaks().mounts == [str(point)]
    finally:
        assert unmount_under(tmp_path) == [str(point)]
    assert str(point) not in mount_points() and not watch.leaks()


@pytest.mark.slow
def test_a_run_that_leaves_something_behind_fails_and_it_is_ended(tmp_path: Path):
    """The plugin end to end, in a pytest run of its own: a test that passes but leaves a process
    and a listening socket makes the run fail; the process is killed."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent("""
        import socket, subprocess
        KEEP = []

        def test_leaky():
            child = subprocess.Popen(["sleep", "300"], start_new_session=True)
            print("CHILD", child.pid)
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            KEEP.append(sock)
    """))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                          "-p", "xpresso_env.testing.leaks", "-o", "leak_watch_wait_s=0.5", "test_leaky.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "left behind" in res.stdout and "running: pid" in res.stdout and "listening: 127.0.0.1:" in res.stdout
    assert "1 passed" in res.stdout, res.stdout  # the test itself passed: the run fails all the same
    child = int(res.stdout.split("CHILD ", 1)[1].split()[0])
    assert _gone(child), f"pid {child} still runs"


@pytest.mark.slow
def test_under_xdist_a_worker_that_leaves_something_behind_fails_the_run(tmp_path: Path):
    """With parallel workers (pytest-xdist) a worker's own report is not shown: what it left is
    reported by the controller, the run fails, and the process is killed."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent("""
        import subprocess
        from pathlib import Path

        def test_leaky():
            child = subprocess.Popen(["sleep", "300"], start_new_session=True)
            (Path(__file__).parent / "child.pid").write_text(str(child.pid))

        def test_clean():
            pass
    """))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                          "-p", "xpresso_env.testing.leaks", "-o", "leak_watch_wait_s=0.5", "test_leaky.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "left behind" in res.stdout and "running: pid" in res.stdout and "sleep 300" in res.stdout, res.stdout
    assert "2 passed" in res.stdout, res.stdout
    assert _gone(int((tmp_path / "child.pid").read_text())), "the child still runs"


def test_temp_folders_go_to_ram_only_on_a_tmpfs_with_room():
    assert ram_temp_root("/") is None  # not a tmpfs
    assert ram_temp_root("/no/such/folder") is None
    if ram_temp_root("/dev/shm", min_free=0) is None:
        pytest.skip("no tmpfs at /dev/shm here")
    assert ram_temp_root("/dev/shm", min_free=0) == "/dev/shm"
    assert ram_temp_root("/dev/shm", min_free=1 << 60) is None



@pytest.mark.slow
def test_a_run_stopped_with_sigterm_still_tears_its_fixtures_down(tmp_path: Path):
    """A CI job's time limit sends SIGTERM: the fixtures' teardown (a private dockerd's stop)
    runs all the same, as on Ctrl-C."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_stopped.py").write_text(textwrap.dedent("""
        import os, signal, time
        import pytest

        @pytest.fixture
        def daemon(tmp_path_factory):
            yield
            (tmp_path_factory.getbasetemp().parent.parent / "torn-down").write_text("yes")

        def test_stopped(daemon):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
    """))
    temp_root = tmp_path / "temp"
    temp_root.mkdir()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "xpresso_env.testing.leaks", "test_stopped.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTEST_DEBUG_TEMPROOT": str(temp_root)})
    assert res.returncode == pytest.ExitCode.INTERRUPTED, res.stdout + res.stderr
    assert (temp_root / "torn-down").read_text() == "yes"


def test_with_no_bytecode_asked_for_the_run_keeps_it_in_pytests_cache(tmp_path: Path):
    """xpresso_env.testing.bytecode: the processes a run starts reuse compiled modules from
    .pytest_cache, and nothing is written beside the sources."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    (tmp_path / "test_env.py").write_text(textwrap.dedent("""
        import os, subprocess, sys

        def test_env():
            assert "PYTHONDONTWRITEBYTECODE" not in os.environ
            subprocess.run([sys.executable, "-c", "import helper"], check=True, cwd=os.path.dirname(__file__))
    """))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "xpresso_env.testing.bytecode",
                          "test_env.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**env, "PYTHONDONTWRITEBYTECODE": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert list((tmp_path / ".pytest_cache" / "d" / "pycache").rglob("helper.*.pyc"))
    assert not (tmp_path / "__pycache__").exists()
