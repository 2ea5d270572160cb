"""Real `xpresso-env worker` processes for the worker tests: started in a folder of their own,
stopped (SIGTERM) or killed (SIGKILL, as a crash would) by the test."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from tests.git_repo import GitRepo


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen, log_file: Path):
        self.proc = proc
        self.log_file = log_file

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL to the worker's process group, as a crash would (build steps it started run in
        sessions of their own and live on)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def run_worker(config: Path, cwd: Path, env: Optional[dict] = None, concurrency: int = 1) -> Iterator[WorkerProcess]:
    cwd.mkdir(parents=True, exist_ok=True)
    log_file = cwd / "worker.log"
    args = [sys.executable, "-m", "xpresso_env.cli", "--config", str(config), "worker", "--concurrency",
            str(concurrency)]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    worker = WorkerProcess(proc, log_file)
    try:
        yield worker
    finally:
        worker.stop()


def wait_for(predicate: Callable[[], object], timeout_s: float = 30.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout_s} s")
        time.sleep(0.05)


@pytest.fixture
def polaris(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "polaris")
    repo.path.mkdir()
    repo.git("init", "-q", "-b", "main")
    repo.commit({"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n", "hello.txt": "hello\n",
                 "basic/basic_example_job.py": "# a pyATS job\n", "manifests/basic.tem": "manifest: basic\n"},
                "initial")
    return repo
