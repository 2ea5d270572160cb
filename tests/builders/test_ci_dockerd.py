""".ci/start-dockerd and .ci/stop-dockerd: a private daemon for CI, started and stopped for real."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from xpresso_env.testing import require
from xpresso_env.testing.leaks import mounts_under

from .conftest import wait_until

pytestmark = pytest.mark.slow  # a real dockerd

CI_DIR = Path(__file__).resolve().parents[2] / ".ci"


def test_start_and_stop_dockerd(leak_watch):
    # Always starts its own daemon, even when XPRESSO_TEST_DOCKER_HOST names one.
    require(shutil.which("dockerd") is not None, "dockerd is not installed (Debian package docker.io)")
    require(os.geteuid() == 0, "a private dockerd needs root")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XPRESSO_TEST_DOCKER")}
    started = time.monotonic()
    res = subprocess.run(["bash", str(CI_DIR / "start-dockerd")], capture_output=True, text=True,
                         timeout=90, env=env)
    assert res.returncode == 0, res.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in res.stdout.splitlines())
    assert set(exports) == {"XPRESSO_TEST_DOCKER_HOST", "XPRESSO_TEST_DOCKERD_DIR"}  # nothing else on stdout
    host, folder = exports["XPRESSO_TEST_DOCKER_HOST"], Path(exports["XPRESSO_TEST_DOCKERD_DIR"])
    leak_watch.watch(folder)  # a mount left there fails the run
    try:
        assert time.monotonic() - started < 60
        assert host == f"unix://{folder}/docker.sock"
        import docker

        api = docker.APIClient(base_url=host, version="auto", timeout=10)
        try:
            assert api.ping()
            info = api.info()
            assert info["DockerRootDir"] == str(folder / "data")
        finally:
            api.close()
        pid = int((folder / "dockerd.pid").read_text())
        # What a dockerd that ran a host-network container leaves mounted after it stops (its
        # exec/netns/default): stop-dockerd must unmount it to remove the folder.
        leftover = folder / "exec" / "leftover"
        leftover.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "xpresso-test-leftover", str(leftover)], check=True)
    finally:
        stop = subprocess.run(["bash", str(CI_DIR / "stop-dockerd"), str(folder)], capture_output=True,
                              text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists() or
                      Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 10)
    assert not folder.exists()
    assert not mounts_under(folder)
    # The stop script refuses a folder it did not make.
    refused = subprocess.run(["bash", str(CI_DIR / "stop-dockerd"), "/"], capture_output=True, text=True)
    assert refused.returncode != 0 and "not a start-dockerd folder" in refused.stderr
