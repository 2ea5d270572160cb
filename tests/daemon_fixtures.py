"""Session fixtures for the real parts, shared by every test folder (loaded from
tests/conftest.py through ``pytest_plugins``): ONE private dockerd, ONE buildah store and ONE
pyATS installation serve the whole session, however many folders use them, since making each
costs seconds.

* ``docker_url``: the daemon's ``unix://`` URL (``XPRESSO_TEST_DOCKER_HOST`` when set, as in CI,
  else a private dockerd started here and stopped at the end of the session).
* ``docker_api``: a low-level client of that daemon, with the busybox base image imported, so
  test Dockerfiles can ``RUN`` without any network. ``docker_busybox``: that image's reference.
* ``buildah_store``: a private buildah store (vfs, under a session temp folder) holding the same
  busybox base image.
* ``private_postgres``: a PostgreSQL cluster of the test's own (per test, not per session: tests
  stop and hang it).
* ``pyats_venv``: a venv with the real pyATS from the package index. Its install starts in the
  background as the run starts (when a collected test needs it), so it overlaps other tests.

A test that needs dockerd or buildah skips when they are missing, except under CI=true where it
fails (``xpresso_env.testing.require``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from xpresso_env.testing import require
from xpresso_env.testing.background import Background
from xpresso_env.testing.daemons import (
    BUSYBOX_REF,
    DOCKER_HOST_ENV,
    docker_daemon,
    dockerd_missing_reason,
    make_buildah_busybox_base,
    make_busybox_base,
    private_folder,
)
from xpresso_env.testing.leaks import LeakWatch
from xpresso_env.testing.pg_cluster import PrivateCluster, cluster_missing_reason, private_cluster
from xpresso_env.testing.postgres import postgres_available, temp_database
from xpresso_env.testing.tempdirs import run_folder


@pytest.fixture(scope="session")
def docker_url(leak_watch: LeakWatch) -> Iterator[str]:
    reason = dockerd_missing_reason()
    require(reason is None, reason or "")
    folder = None if os.environ.get(DOCKER_HOST_ENV) else private_folder()
    if folder is not None:
        leak_watch.watch(folder)  # whatever stays mounted there after the daemon stops is a leak
    with docker_daemon(folder) as url:
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


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A database of the test's own on the shared PostgreSQL (127.0.0.1:5432 or
    XPRESSO_TEST_PG_ADMIN_DSN), dropped after the test."""
    require(postgres_available(), "PostgreSQL is not reachable (set XPRESSO_TEST_PG_ADMIN_DSN)")
    with temp_database() as dsn:
        yield dsn


@pytest.fixture
def private_postgres() -> Iterator[PrivateCluster]:
    """A PostgreSQL cluster of the test's own (never the shared one at 5432), to stop, hang
    (SIGSTOP) and resume at will; stopped and removed after the test (``testing.pg_cluster``)."""
    reason = cluster_missing_reason()
    require(reason is None, reason or "")
    with private_cluster() as cluster:
        yield cluster


# --------------------------------------------------------------------------- prepared early

@pytest.fixture(scope="session")
def background() -> Iterator[Background]:
    jobs = Background()
    yield jobs
    jobs.stop()  # a preparation no test waited for (a run stopped early) does not outlive the run


def _pyats_commands(venv: Path) -> list[list[str]]:
    # --no-compile: the prober reads the installation's metadata, never imports it.
    return [[sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", "-q", "--no-compile", "--disable-pip-version-check", "pyats"]]


def _pyats_venv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One installation per run, shared by its xdist workers (the first to start makes it).
    return run_folder(tmp_path_factory, request.config) / "pyats-venv"


@pytest.fixture(scope="session", autouse=True)
def early_start(request: pytest.FixtureRequest, background: Background,
                tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start the slow preparations the collected tests will need, before the first test runs."""
    used = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    if "pyats_venv" in used:
        venv = _pyats_venv(request, tmp_path_factory)
        background.start("pyats", _pyats_commands(venv), shared=venv)


@pytest.fixture(scope="session")
def pyats_venv(request: pytest.FixtureRequest, background: Background,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the real pyATS from the package index, made once per test run."""
    venv = _pyats_venv(request, tmp_path_factory)
    outcome = background.wait("pyats", _pyats_commands(venv), shared=venv)
    if outcome.returncode != 0:
        pytest.fail(f"pip install pyats failed (the probe tests need the package index):\n{outcome.output[-2000:]}")
    return venv
