"""Run the real `xpresso-env serve` in a subprocess for tests and benchmarks."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(config: Path, *args: str, env: Optional[dict] = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "xpresso_env.cli", "--config", str(config), *args],
                       capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise RuntimeError(f"xpresso-env {' '.join(args)} failed: {p.stderr.strip()}")
    return p


def write_config(folder: Path, settings: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "xpresso.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@contextmanager
def serve(config: Path, port: Optional[int] = None, log_file: Optional[Path] = None,
          env: Optional[dict] = None, threads: Optional[int] = None,
          cwd: Optional[Path] = None) -> Iterator["Server"]:
    """Start `xpresso-env serve` (in folder ``cwd``, default the caller's), wait until it answers,
    stop it at the end."""
    port = port or free_port()
    args = [sys.executable, "-m", "xpresso_env.cli", "--config", str(config), "serve", "--port", str(port)]
    if threads:
        args += ["--threads", str(threads)]
    log_file = log_file or config.parent / f"serve-{port}.log"
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True, cwd=cwd)
    server = Server(proc=proc, port=port, log_file=log_file)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


class Process:
    """A started `xpresso-env` subprocess in a session of its own, with its log file."""

    def __init__(self, proc: subprocess.Popen, log_file: Path, stop_wait_s: float = 15.0):
        self.proc = proc
        self.log_file = log_file
        self.stop_wait_s = stop_wait_s  # how long stop() waits after SIGTERM before SIGKILL

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL to the process group, as a crash would (build steps it started run in sessions
        of their own and live on)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.stop_wait_s)
            except subprocess.TimeoutExpired:
                self.kill()


class Server(Process):
    def __init__(self, proc: subprocess.Popen, port: int, log_file: Path):
        super().__init__(proc, log_file)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xpresso-env serve exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"xpresso-env serve did not answer within {timeout} s: {self.log()}")


@contextmanager
def worker(config: Path, cwd: Path, env: Optional[dict] = None, concurrency: int = 1) -> Iterator[Process]:
    """Start `xpresso-env worker` in folder ``cwd`` (its log: ``cwd/worker.log``); stop it at the end."""
    cwd.mkdir(parents=True, exist_ok=True)
    log_file = cwd / "worker.log"
    args = [sys.executable, "-m", "xpresso_env.cli", "--config", str(config), "worker", "--concurrency",
            str(concurrency)]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    process = Process(proc, log_file, stop_wait_s=20.0)  # a worker hands its builds back first
    try:
        yield process
    finally:
        process.stop()
