"""The storage conformance suite on the in-memory, documents-only test backend: the suite holds
a backend without change counters to the documents interface, and nothing more."""
from __future__ import annotations

from typing import Callable

import pytest

from xpresso_env.config import load_settings
from xpresso_env.plugin import make_plugin_manager, pick_storage
from xpresso_env.storage import StorageBackend, change_counters
from xpresso_env.testing.memory_storage import MemoryStoragePlugin
from xpresso_env.testing.storage_suite import StorageConformance


class TestMemoryConformance(StorageConformance):
    @pytest.fixture
    def open_store(self) -> Callable[[], StorageBackend]:
        # One plugin object per test: its store is the test's store, shared by every backend
        # object made from it, as a file or database would be. Built the way the service builds one.
        pm = make_plugin_manager(extra_plugins=[MemoryStoragePlugin()], load_entry_points=False)
        settings = load_settings(env={}, overrides={"storage": {"backend": "memory"}})
        info = pick_storage(pm, settings.storage.backend)
        return lambda: info.factory(settings)


def test_the_memory_backend_claims_no_change_counters():
    backend = MemoryStoragePlugin().make_backend(load_settings(env={}, overrides={}))
    assert change_counters(backend) is None


def test_each_plugin_object_is_its_own_store():
    settings = load_settings(env={}, overrides={})
    first, second = MemoryStoragePlugin(), MemoryStoragePlugin()
    a, b = first.make_backend(settings), second.make_backend(settings)
    a.init()
    assert b.current_version() == 0
    assert first.make_backend(settings).current_version() == a.schema_version
