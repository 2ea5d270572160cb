"""Fixtures for the probe tests (the REAL pyATS installation, ``pyats_venv``, is a session fixture
of tests/daemon_fixtures.py, installed in the background as the run starts), hand-made
installation layouts, the Jenkins stand-in (see jenkins_standin.py: Jenkins cannot be installed
here), a fake clock, and apps whose probe service the test drives."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from falcon.testing import TestClient

from tests.conftest import World, make_settings, seed
from tests.probes.jenkins_standin import JenkinsStandIn
from xpresso_env.app import AppContext, build_context, create_app
from xpresso_env.core.timeutil import utcnow


def fake_install(root: Path, version: Optional[str], python: str = "file", pyver: str = "python3.11") -> Path:
    """A hand-made installation layout: bin/python (an executable file) and, when ``version`` is
    given, lib/<pyver>/site-packages/pyats-<version>.dist-info."""
    (root / "bin").mkdir(parents=True)
    py = root / "bin" / "python"
    if python == "file":
        py.write_text("#!/bin/sh\n")
        py.chmod(0o755)
    site = root / "lib" / pyver / "site-packages"
    site.mkdir(parents=True)
    if version is not None:
        (site / f"pyats-{version}.dist-info").mkdir()
        (site / f"pyats_topology-{version}.dist-info").mkdir()  # the family's other packages: ignored
    return root


@pytest.fixture
def jenkins() -> Iterator[JenkinsStandIn]:
    with JenkinsStandIn(user="jenkins-user", token="api-token-1") as standin:
        yield standin


@pytest.fixture
def refused_url() -> str:
    """An http URL on loopback where nothing listens (a port just released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


class FakeClock:
    def __init__(self) -> None:
        self.now: datetime = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass
class ProbeWorld(World):
    def harness(self, name: str, path: str, group: str = "g1", **extra: Any) -> str:
        r = self.post("/api/v2/harnesses", {"name": name, "path": path, **extra}, group=group)
        assert r.status_code == 201, r.text
        return r.json["id"]

    def engine(self, name: str, base_url: str, group: str = "g1", **extra: Any) -> str:
        r = self.post("/api/v2/engines", {"name": name, "base_url": base_url, **extra}, group=group)
        assert r.status_code == 201, r.text
        return r.json["id"]

    def state(self, kind: str, record_id: str, group: str = "g1") -> dict:
        r = self.get(f"/api/v2/{kind}/{record_id}/state", group=group)
        assert r.status_code == 200, r.text
        return r.json

    def record(self, kind: str, record_id: str, version: int = 2) -> dict:
        r = self.get(f"/api/v{version}/{kind}/{record_id}")
        assert r.status_code == 200, r.text
        return r.json


@pytest.fixture
def probe_world(tmp_path: Path):
    """``make(clock=None, backend="sqlite", settings=None, **probes)``: a seeded app whose probe
    service is driven by the test (``ctx.probes.run_due()``) or started (``ctx.start()``).
    Calling it again gives another app (another probe service) on the SAME store."""
    made: list[AppContext] = []
    tokens: dict[str, str] = {}

    def make(clock=None, settings=None, **probes: Any) -> ProbeWorld:
        s = settings or make_settings(tmp_path, "sqlite",
                                      extra={"probes": {"enabled": True, "timeout_s": 2.0, **probes}})
        ctx = build_context(s, check_schema=False, images=False, clock=clock or utcnow)
        ctx.storage.init()
        if not made:
            tokens.update(seed(ctx))  # the store is shared: so are its users and tokens
        made.append(ctx)
        return ProbeWorld(ctx=ctx, client=TestClient(create_app(ctx)), tokens=tokens)

    yield make
    for ctx in made:
        ctx.close()
