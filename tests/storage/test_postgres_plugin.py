"""The postgres plugin's edges: configuration, missing psycopg, error translation, test helpers."""
from __future__ import annotations

import dataclasses
import sys

import pytest

from xpresso_env.config import load_settings
from xpresso_env.core.codec import to_doc
from xpresso_env.core.errors import ConfigError, SchemaOutdated, StorageError
from xpresso_env.plugin import make_plugin_manager, pick_storage
from xpresso_env.testing import require
from xpresso_env.testing.postgres import admin_dsn, postgres_available, reset_database, temp_database
from xpresso_env.testing.storage_suite import insert, make_harness, open_backend, uid


def factory():
    return pick_storage(make_plugin_manager(load_entry_points=False), "postgres").factory


def test_registered_under_its_name():
    info = pick_storage(make_plugin_manager(load_entry_points=False), "postgres")
    assert info.name == "postgres" and info.description


def test_dsn_is_required():
    with pytest.raises(ConfigError, match="storage.dsn"):
        factory()(load_settings(env={}, overrides={"storage": {"backend": "postgres"}}))


def test_malformed_dsn_is_a_config_error():
    with pytest.raises(ConfigError, match="storage.dsn"):
        factory()(load_settings(env={}, overrides={"storage": {"backend": "postgres", "dsn": "host=x bogus"}}))


def test_missing_psycopg_names_the_install(monkeypatch):
    make = factory()
    # Simulates an install without the extra: importing psycopg fails (only for this test).
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=r"pip install 'xpresso-env\[postgres\]'"):
        make(load_settings(env={}, overrides={"storage": {"backend": "postgres", "dsn": "dbname=x"}}))


def test_plugin_module_imports_without_psycopg():
    import subprocess

    code = ("import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None; "
            "import xpresso_env_plugins.storage_postgres as m; print(m.xpresso_storage_backends()[0].name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "postgres"


def test_uninitialised_database_is_schema_outdated(pg_dsn):
    b = open_backend({"storage": {"backend": "postgres", "dsn": pg_dsn}})
    try:
        assert b.current_version() == 0
        with pytest.raises(SchemaOutdated):
            with b.read() as tx:
                tx.get("harness", "x")
        with pytest.raises(SchemaOutdated):
            with b.write() as tx:
                tx.insert(to_doc(make_harness(1)))
    finally:
        b.close()


def test_schema_newer_than_the_code_is_refused(pg_dsn):
    import psycopg

    b = open_backend({"storage": {"backend": "postgres", "dsn": pg_dsn}})
    try:
        b.init()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("UPDATE xpresso_meta SET value = %s WHERE key = 'schema_version'",
                         (str(b.schema_version + 1),))
        with pytest.raises(StorageError, match="newer"):
            b.init()
    finally:
        b.close()


def test_reset_database_empties_the_data_and_keeps_the_schema(pg_dsn):
    b = open_backend({"storage": {"backend": "postgres", "dsn": pg_dsn}})
    try:
        b.init()
        insert(b, make_harness(1), dataclasses.replace(to_doc(make_harness(2)), visible=("beta",)))
        reset_database(pg_dsn)
        assert b.current_version() == b.schema_version
        with b.read() as tx:
            assert tx.query("harness") == [] and tx.query("harness", "beta") == []
        insert(b, make_harness(1))
        with b.read() as tx:
            assert tx.get("harness", str(uid(1))) is not None
    finally:
        b.close()


def test_temp_database_is_dropped_even_with_sessions_open():
    import psycopg

    require(postgres_available(), "PostgreSQL is not reachable (set XPRESSO_TEST_PG_ADMIN_DSN)")
    with temp_database() as dsn:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        left_open = psycopg.connect(dsn)
    try:
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
    finally:
        left_open.close()
