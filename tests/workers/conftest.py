"""Real `xpresso-env worker` processes for the worker tests: started in a folder of their own,
stopped (SIGTERM) or killed (SIGKILL, as a crash would) by the test."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest

from tests.git_repo import GitRepo
from xpresso_env.testing.server import worker


# One home for starting and stopping the real processes: xpresso_env.testing.server.
run_worker = worker


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
