"""The pieces of `serve --processes` that run in one Python process (CONTRACT section 15): the
setting and its flag, the drain of a waitress server (http/server.py), and the supervisor's
replacement of a process that dies, with its back-off (runtime/supervisor.py), driven with
stand-in serving processes (a few lines of Python that say "ready" and exit)."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from xpresso_env.cli import build_parser
from xpresso_env.cli.server import serve_overrides
from xpresso_env.config import ServerSettings, Settings, load_settings
from xpresso_env.core.errors import ConfigError
from xpresso_env.http.server import create_server, listening_socket, serve_until_stopped
from xpresso_env.runtime.processes import StatusFile
from xpresso_env.runtime.supervisor import BACKOFF_FIRST_S, Supervisor


def test_processes_setting_takes_a_count_or_auto(tmp_path):
    assert load_settings(env={}).server.processes == 1
    assert load_settings(env={"XPRESSO_ENV_SERVER_PROCESSES": "3"}).server.processes == 3
    assert load_settings(env={"XPRESSO_ENV_SERVER_PROCESSES": "auto"}).server.processes == (os.cpu_count() or 1)
    config = tmp_path / "x.yaml"
    for bad in ("0", "-2", "many", "true"):
        config.write_text(f"server: {{processes: {bad}}}\n")
        with pytest.raises(ConfigError, match=r"server\.processes: expected a positive integer or auto"):
            load_settings(config, env={})
    args = build_parser().parse_args(["serve", "--processes", "auto"])
    assert load_settings(env={}, overrides=serve_overrides(args)).server.processes == (os.cpu_count() or 1)
    args = build_parser().parse_args(["serve", "--processes", "2", "--port", "9000"])
    assert serve_overrides(args) == {"server": {"port": 9000, "processes": 2}}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--processes", "0"])


def _slow_app(started: threading.Event):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            started.set()
            time.sleep(1.0)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    return app


@pytest.mark.slow  # a real waitress server on a port, a one-second request
def test_a_stopping_server_stops_accepting_finishes_what_it_holds_and_closes_idle_connections():
    settings = ServerSettings(port=0, threads=4)
    sock = listening_socket(ServerSettings(host="127.0.0.1", port=0))
    port = sock.getsockname()[1]
    started = threading.Event()
    server = create_server(_slow_app(started), settings, sock)
    stop = threading.Event()
    runner = threading.Thread(target=serve_until_stopped, args=(server, stop.is_set, 10.0))
    runner.start()
    try:
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        idle.request("GET", "/fast")
        first = idle.getresponse()
        assert first.read() == b"ok" and first.getheader("Connection") is None  # kept alive
        slow = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers: list = []
        threading.Thread(target=lambda: (slow.request("GET", "/slow"),
                                         answers.append(slow.getresponse()))).start()
        assert started.wait(5)
        t0 = time.monotonic()
        stop.set()
        # What it holds is finished: the slow answer arrives whole, and says the connection closes.
        runner.join(10)
        assert not runner.is_alive()
        assert time.monotonic() - t0 >= 0.3
        assert answers and answers[0].status == 200 and answers[0].read() == b"ok"
        assert answers[0].getheader("Connection") == "close"
        # The idle keep-alive connection was closed (after its idle grace), not left open.
        idle.request("GET", "/fast")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            idle.getresponse()
    finally:
        stop.set()
        runner.join(10)
        server.close()
    sock.close()


@pytest.mark.slow  # real child processes, about 4 s of back-off
def test_a_process_that_dies_is_replaced_at_once_then_with_a_growing_back_off(tmp_path):
    spawned: list[float] = []
    script = "import os, sys; os.write(int(sys.argv[1]), b'r'); sys.exit(3)"

    def spawn(sock: socket.socket, ready_fd: int) -> subprocess.Popen:
        spawned.append(time.monotonic())
        if len(spawned) == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # enough seen: the supervisor stops (in this process)
        return subprocess.Popen([sys.executable, "-c", script, str(ready_fd)], pass_fds=(ready_fd,))

    settings = Settings(server=ServerSettings(host="127.0.0.1", port=0, processes=1, drain_s=1.0))
    status = StatusFile(tmp_path / "processes.json")
    supervisor = Supervisor(settings, lambda: settings, listening_socket, spawn, status)
    assert supervisor.run() == 0
    gaps = [b - a for a, b in zip(spawned, spawned[1:])]
    # dies at once: replaced at once; its replacement dies at once too: 1 s, then 2 s
    assert gaps[0] < BACKOFF_FIRST_S, gaps
    assert BACKOFF_FIRST_S <= gaps[1] < 2 * BACKOFF_FIRST_S + 0.8, gaps
    assert 2 * BACKOFF_FIRST_S <= gaps[2] < 4 * BACKOFF_FIRST_S + 0.8, gaps
    assert status.status()["configured"] == 1
