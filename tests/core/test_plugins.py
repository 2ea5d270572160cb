"""The plugin manager: built fresh per app, built-ins registered, backends chosen by name."""
from __future__ import annotations

import pytest

from xpresso_env.core.errors import ConfigError
from xpresso_env.hookspecs import hookimpl
from xpresso_env.plugin import make_plugin_manager, pick_storage, storage_backends
from xpresso_env.storage import StorageBackendInfo


def test_fresh_manager_each_time():
    assert make_plugin_manager() is not make_plugin_manager()


def test_builtin_storage_backends_registered():
    assert {"sqlite", "yaml", "postgres"} <= set(storage_backends(make_plugin_manager()))


def test_unknown_backend_lists_installed():
    with pytest.raises(ConfigError) as info:
        pick_storage(make_plugin_manager(), "cassandra")
    assert "cassandra" in str(info.value) and "sqlite" in str(info.value)


def test_a_plugin_can_add_a_backend_and_routes(world):
    class Extra:
        @hookimpl
        def xpresso_storage_backends(self):
            return [StorageBackendInfo(name="memory-test", description="test", factory=lambda s: None)]

    pm = make_plugin_manager(extra_plugins=[Extra()])
    assert "memory-test" in storage_backends(pm)


def test_plugins_endpoint_lists_plugins_and_versions(world):
    r = world.client.simulate_get("/api/v2/plugins")
    assert r.status_code == 200
    names = {p["name"] for p in r.json}
    assert "xpresso_env_plugins.storage_sqlite" in names
    sqlite = next(p for p in r.json if p["name"] == "xpresso_env_plugins.storage_sqlite")
    assert sqlite["version"] and "xpresso_storage_backends" in sqlite["hooks"]


def test_record_hooks_fire_after_commit(make_world):
    seen = []

    class Watcher:
        storage = None  # the app's, once it is built

        @hookimpl
        def xpresso_record_saved(self, kind, record, created):
            with self.storage.read() as tx:  # the write is committed already
                seen.append((kind, record.name, created, tx.get(kind, str(record.id)) is not None))

        @hookimpl
        def xpresso_record_deleted(self, kind, record):
            seen.append((kind, record.name, "deleted", record.deleted))

    watcher = Watcher()
    w = make_world(pm=make_plugin_manager(extra_plugins=[watcher]))
    watcher.storage = w.ctx.storage
    h = w.post("/api/v2/harnesses", {"name": "h", "path": "/p"}).json
    w.patch(f"/api/v2/harnesses/{h['id']}", {"site": "x"})
    w.delete(f"/api/v2/harnesses/{h['id']}")
    assert seen == [("harness", "h", True, True), ("harness", "h", False, True), ("harness", "h", "deleted", True)]


def test_a_failing_hook_does_not_fail_the_request(make_world):
    class Broken:
        @hookimpl
        def xpresso_record_saved(self, kind, record, created):
            raise RuntimeError("plugin bug")

    w = make_world(pm=make_plugin_manager(extra_plugins=[Broken()]))
    assert w.post("/api/v2/harnesses", {"name": "h", "path": "/p"}).status_code == 201
