"""Session fixtures for the real builders, shared by every test folder (loaded from
tests/conftest.py through ``pytest_plugins``): ONE private dockerd and ONE buildah store serve the
whole session, however many folders use them, since starting a daemon costs seconds.

* ``docker_url``: the daemon's ``unix://`` URL (``XPRESSO_TEST_DOCKER_HOST`` when set, as in CI,
  else a private dockerd started here and stopped at the end of the session).
* ``docker_api``: a low-level client of that daemon, with the busybox base image imported, so
  test Dockerfiles can ``RUN`` without any network. ``docker_busybox``: that image's reference.
* ``buildah_store``: a private buildah store (vfs, under a session temp folder) holding the same
  busybox base image.

A test that needs dockerd or buildah skips when they are missing, except under CI=true where it
fails (``xpresso_env.testing.require``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterator

import pytest

from xpresso_env.testing import require
from xpresso_env.testing.daemons import (
    BUSYBOX_REF,
    docker_daemon,
    dockerd_missing_reason,
    make_buildah_busybox_base,
    make_busybox_base,
)


@pytest.fixture(scope="session")
def docker_url() -> Iterator[str]:
    reason = dockerd_missing_reason()
    require(reason is None, reason or "")
    with docker_daemon() as url:
        yield url


@pytest.fixture(scope="session")
def docker_api(docker_url: str):
    import docker

    api = docker.APIClient(base_url=docker_url, version="auto", timeout=120)
    make_busybox_base(api, BUSYBOX_REF)
    yield api
    api.close()


@pytest.fixture(scope="session")
def docker_busybox(docker_api) -> str:
    return BUSYBOX_REF


@dataclass(frozen=True)
class BuildahStore:
    root: str
    runroot: str
    storage_driver: str = "vfs"

    def args(self) -> list[str]:
        return ["--storage-driver", self.storage_driver, "--root", self.root, "--runroot", self.runroot]

    def buildah(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["buildah", *self.args(), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def buildah_store(tmp_path_factory) -> Iterator[BuildahStore]:
    require(shutil.which("buildah") is not None, "buildah is not installed (Debian package buildah)")
    require(os.geteuid() == 0, "the buildah tests run as root (vfs storage, chroot isolation)")
    base = tmp_path_factory.mktemp("buildah")
    store = BuildahStore(root=str(base / "root"), runroot=str(base / "runroot"))
    make_buildah_busybox_base(store.args(), BUSYBOX_REF)
    yield store
    store.buildah("rm", "--all")
    store.buildah("rmi", "--all", "--force")
    shutil.rmtree(base, ignore_errors=True)
