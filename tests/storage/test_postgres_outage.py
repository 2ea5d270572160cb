"""A dead database gives StorageUnavailable fast, and the backend recovers by itself.

Done for real on the shared server without stopping it: the test's own database is made to refuse
connections (ALTER DATABASE ... ALLOW_CONNECTIONS false) and its sessions are killed
(pg_terminate_backend), then it is let back in.
"""
from __future__ import annotations

import time

import threading

import pytest

from xpresso_env.codec import to_doc
from xpresso_env.errors import StorageUnavailable
from xpresso_env.testing import require
from xpresso_env.testing.postgres import admin_dsn, postgres_available, temp_database
from xpresso_env.testing.storage_suite import insert, make_harness, open_backend, uid

TIMEOUT_S = 1.0  # storage.busy_timeout_s: how long a request waits for a connection
FAST_S = TIMEOUT_S + 2.0  # what "fails fast" allows, with room for a loaded CI machine
RECOVER_S = 15.0


@pytest.fixture
def pg_dsn():
    require(postgres_available(), "PostgreSQL is not reachable (set XPRESSO_TEST_PG_ADMIN_DSN)")
    with temp_database() as dsn:
        yield dsn


def _admin(sql: str, *params) -> None:
    import psycopg

    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(sql, params)


def _dbname(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return conninfo_to_dict(dsn)["dbname"]


def kill_sessions(db: str) -> None:
    _admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", db)


def allow_connections(db: str, allow: bool) -> None:
    from psycopg import sql

    import psycopg

    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(db), sql.Literal(allow)))


@pytest.fixture
def backend(pg_dsn):
    b = open_backend({"storage": {"backend": "postgres", "dsn": pg_dsn, "busy_timeout_s": TIMEOUT_S, "pool_max": 4}})
    b.init()
    insert(b, make_harness(1))
    yield b
    allow_connections(_dbname(pg_dsn), True)  # never leave the database locked out
    b.close()


def read_one(backend):
    with backend.read() as tx:
        return tx.get("harness", str(uid(1)))


def wait_until_served(backend, limit: float = RECOVER_S) -> float:
    t0 = time.monotonic()
    while True:
        try:
            assert read_one(backend) is not None
            return time.monotonic() - t0
        except StorageUnavailable:
            if time.monotonic() - t0 > limit:
                raise
            time.sleep(0.1)


def fill_pool(backend, n: int) -> None:
    """Make the pool hold ``n`` connections by running ``n`` transactions at once."""
    barrier = threading.Barrier(n)

    def hold() -> None:
        with backend.read() as tx:
            tx.get("harness", str(uid(1)))
            barrier.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def test_killed_sessions_are_replaced_without_an_error(backend, pg_dsn):
    fill_pool(backend, 4)  # four idle connections, all about to be broken
    kill_sessions(_dbname(pg_dsn))
    # Each connection is checked before use: the dead ones are dropped, never handed out.
    t0 = time.monotonic()
    assert read_one(backend) is not None
    assert time.monotonic() - t0 < FAST_S
    insert(backend, make_harness(2))


def test_dead_database_fails_fast_then_recovers(backend, pg_dsn):
    db = _dbname(pg_dsn)
    allow_connections(db, False)
    kill_sessions(db)
    for op in ("read", "write", "read"):
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            if op == "read":
                read_one(backend)
            else:
                insert(backend, make_harness(3))
        took = time.monotonic() - t0
        assert took < FAST_S, f"{op} took {took:.1f}s to fail"
        assert "unavailable" in info.value.detail
    with pytest.raises(StorageUnavailable):
        backend.current_version()

    allow_connections(db, True)
    took = wait_until_served(backend)
    assert took < RECOVER_S
    print(f"served again {took:.2f}s after the database came back")
    insert(backend, make_harness(3))
    with backend.read() as tx:
        assert [d.id for d in tx.query("harness")] == [str(uid(1)), str(uid(3))]


def test_connection_lost_inside_a_transaction(backend, pg_dsn):
    db = _dbname(pg_dsn)
    with pytest.raises(StorageUnavailable):
        with backend.write() as tx:
            tx.insert(to_doc(make_harness(4)))
            kill_sessions(db)
            tx.insert(to_doc(make_harness(5)))
    wait_until_served(backend)
    with backend.read() as tx:  # nothing of the broken transaction was kept
        assert tx.get("harness", str(uid(4))) is None
        assert tx.get("harness", str(uid(5))) is None


def test_backend_starts_while_the_database_is_down(pg_dsn):
    db = _dbname(pg_dsn)
    allow_connections(db, False)
    try:
        b = open_backend({"storage": {"backend": "postgres", "dsn": pg_dsn, "busy_timeout_s": TIMEOUT_S}})
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable):
            b.init()
        assert time.monotonic() - t0 < FAST_S
        allow_connections(db, True)
        wait_until = time.monotonic() + RECOVER_S
        while True:
            try:
                assert b.init() == b.schema_version
                break
            except StorageUnavailable:
                assert time.monotonic() < wait_until, "never recovered"
                time.sleep(0.1)
        insert(b, make_harness(1))
        b.close()
    finally:
        allow_connections(db, True)
