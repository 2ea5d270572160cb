"""Shared fixtures: an app per test, on every storage backend the suite is asked to cover.

XPRESSO_TEST_BACKENDS (default: all three) picks the backends the API tests run on; each API
test runs once per backend. PostgreSQL tests use one temporary database per session, emptied
between tests.

A run leaves nothing behind, even when tests fail: at its end (after every fixture's teardown)
the run FAILS if a mount under its temp folders, a process it started, or a listening socket of
its own is left (``xpresso_env.testing.leaks``); what was left is then ended.

``-m "not slow"`` is the quick subset: ``slow`` marks every test that needs a real daemon,
browser or installation (found here, from its fixtures and parameters) and, by hand, the tests
that take more than about two seconds for another reason (real server processes, timeouts).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from falcon.testing import TestClient

from xpresso_env.app import AppContext, build_context, create_app
from xpresso_env.config import Settings, load_settings

# The run's temp folders in RAM (xpresso_env.testing.tempdirs); the run fails if it leaves a
# mount, a process or a listening socket behind (xpresso_env.testing.leaks); the processes it
# starts reuse compiled bytecode (xpresso_env.testing.bytecode).
pytest_plugins = ["xpresso_env.testing.tempdirs", "xpresso_env.testing.leaks", "xpresso_env.testing.bytecode",
                  "tests.daemon_fixtures"]
ALL_BACKENDS = ("sqlite", "yaml", "postgres")
SECRET = "test-secret-" + "s" * 40
# A test using one of these (directly or through its fixtures) needs Docker, buildah, Chromium,
# pyATS or a registry; so does one parametrized with a real builder's name.
SLOW_FIXTURES = frozenset({"docker_url", "docker_api", "docker_busybox", "buildah_store", "browser",
                           "pyats_venv", "auth_registry"})
REAL_BUILDERS = frozenset({"docker", "buildah"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or any(
                isinstance(value, str) and value in REAL_BUILDERS for value in params):
            item.add_marker(pytest.mark.slow)
    if hasattr(config, "workerinput"):
        # pytest-xdist hands whole files to the workers in this order: the files with the most slow
        # tests go first, so that the run does not end with the other workers idle, waiting for one
        # slow file. A stable sort: every file stays whole and in its own order.
        slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
        items.sort(key=lambda item: -slow[item.path])


def selected_backends() -> list[str]:
    raw = os.environ.get("XPRESSO_TEST_BACKENDS", ",".join(ALL_BACKENDS))
    return [b.strip() for b in raw.split(",") if b.strip()]


def make_settings(tmp: Path, backend: str = "sqlite", dsn: Optional[str] = None,
                  extra: Optional[dict[str, Any]] = None) -> Settings:
    env = {
        "XPRESSO_ENV_STORAGE_BACKEND": backend,
        "XPRESSO_ENV_AUTH_SECRET": SECRET,
        "XPRESSO_ENV_SERVER_ACCESS_LOG": "false",
        # No background probes of the records tests make up (tests/probes turns them on).
        "XPRESSO_ENV_PROBES_ENABLED": "false",
        # Cheap password hashes: many tests sign in (tests/api/test_signin.py checks the real cost's rehash).
        "XPRESSO_ENV_AUTH_PASSWORD_TIME_COST": "1",
        "XPRESSO_ENV_AUTH_PASSWORD_MEMORY_KIB": "1024",
    }
    if backend == "sqlite":
        env["XPRESSO_ENV_STORAGE_PATH"] = str(tmp / "xpresso.sqlite3")
    elif backend == "yaml":
        env["XPRESSO_ENV_STORAGE_PATH"] = str(tmp / "xpresso.yaml")
    elif backend == "postgres":
        env["XPRESSO_ENV_STORAGE_DSN"] = dsn or ""
    overrides = {"images": {"nfs_root": str(tmp / "nfs"), "logs_root": str(tmp / "logs"),
                            "workspace_root": str(tmp / "ws")}}
    for section, values in (extra or {}).items():
        overrides.setdefault(section, {}).update(values)
    return load_settings(None, env=env, overrides=overrides)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[Optional[str]]:
    """One temporary PostgreSQL database for the session (None when postgres is not selected)."""
    if "postgres" not in selected_backends():
        yield None
        return
    from xpresso_env.testing.postgres import temp_database

    with temp_database() as dsn:
        yield dsn


@pytest.fixture(params=selected_backends())
def backend(request) -> str:
    return request.param


@pytest.fixture
def settings(tmp_path: Path, backend: str, pg_database: Optional[str]) -> Settings:
    if backend == "postgres":
        from xpresso_env.testing.postgres import reset_database

        reset_database(pg_database)
    return make_settings(tmp_path, backend, pg_database)


@dataclass
class World:
    """An app with a seeded population of groups, users and tokens."""

    ctx: AppContext
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, user: str, group: Optional[str] = "g1", **extra: str) -> dict[str, str]:
        h = {"Authorization": self.tokens[user]}
        if group is not None:
            h["Group"] = group
        h.update(extra)
        return h

    def get(self, path: str, user: str = "admin", group: Optional[str] = "g1", **kw):
        return self.client.simulate_get(path, headers=self.headers(user, group), **kw)

    def post(self, path: str, body: Any = None, user: str = "admin", group: Optional[str] = "g1", **kw):
        return self.client.simulate_post(path, json=body, headers=self.headers(user, group), **kw)

    def patch(self, path: str, body: Any = None, user: str = "admin", group: Optional[str] = "g1", **kw):
        return self.client.simulate_patch(path, json=body, headers=self.headers(user, group), **kw)

    def delete(self, path: str, user: str = "admin", group: Optional[str] = "g1", **kw):
        return self.client.simulate_delete(path, headers=self.headers(user, group), **kw)

    def dump(self) -> list:
        """Every document in storage, to prove a refused request changed nothing."""
        with self.ctx.storage.read() as tx:
            return [tx.query(kind) for kind in ("group", "user", "revocation", "harness", "engine", "image")]


USERS = {
    # name: (superuser, roles)
    "admin": (True, {}),
    "ga": (False, {"g1": "group_admin"}),
    "priv": (False, {"g1": "privilege_member"}),
    "mem": (False, {"g1": "member"}),
    "guest": (False, {"g1": "guest"}),
    "other": (False, {"g2": "group_admin"}),
    "multi": (False, {"g1": "member", "g2": "member"}),
}


def seed(ctx: AppContext) -> dict[str, str]:
    for group in ("g1", "g2", "g3"):
        ctx.auth.add_group(group)
    tokens = {}
    for name, (superuser, roles) in USERS.items():
        ctx.auth.add_user(name, superuser=superuser, roles=roles)
        tokens[name] = ctx.auth.issue_token(name).display
    return tokens


@pytest.fixture
def make_world(settings: Settings):
    """Build a seeded app; keyword arguments go to build_context (clock, builder...)."""
    made: list[AppContext] = []

    def make(images: bool = False, settings_override: Optional[Settings] = None, **kwargs) -> World:
        s = settings_override or settings
        ctx = build_context(s, check_schema=False, images=images, **kwargs)
        ctx.storage.init()
        made.append(ctx)
        tokens = seed(ctx) if len(made) == 1 else {}
        return World(ctx=ctx, client=TestClient(create_app(ctx)), tokens=tokens)

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def world(make_world) -> World:
    return make_world()
