"""Real `xpresso-env worker` processes for the worker tests: started in a folder of their own,
stopped (SIGTERM) or killed (SIGKILL, as a crash would) by the test."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.git_repo import GitRepo, hello_polaris
from xpresso_env.testing.server import worker


# One home for starting and stopping the real processes: xpresso_env.testing.server.
run_worker = worker


@pytest.fixture
def polaris(tmp_path: Path) -> GitRepo:
    return hello_polaris(tmp_path / "polaris", {"basic/basic_example_job.py": "# a pyATS job\n",
                                                "manifests/basic.tem": "manifest: basic\n"})
