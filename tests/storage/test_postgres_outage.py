"""A dead database gives StorageUnavailable fast, and the backend recovers by itself.

Done for real on the shared server without stopping it: the test's own database is made to refuse
connections (ALTER DATABASE ... ALLOW_CONNECTIONS false) and its sessions are killed
(pg_terminate_backend), then it is let back in.
"""
from __future__ import annotations

import threading
import time

import pytest
from xpresso_env_plugins.storage_postgres import CircuitBreaker
from xpresso_env_plugins.storage_postgres.errors import translated

from xpresso_env.core.codec import to_doc
from xpresso_env.core.errors import StorageUnavailable
from xpresso_env.testing.postgres import admin_dsn
from xpresso_env.testing.storage_suite import insert, make_harness, open_backend, uid

TIMEOUT_S = 1.0  # storage.busy_timeout_s: how long a request waits for a connection
FAST_S = TIMEOUT_S + 2.0  # what the one request that finds the database gone may take, on a loaded machine
INSTANT_S = 0.2  # what each request takes while the circuit breaker is open
RECOVER_S = 15.0


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
    import psycopg
    from psycopg import sql

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


def attempt(op: str, backend) -> float:
    """Run one request that must fail with StorageUnavailable; how long it took."""
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        if op == "read":
            read_one(backend)
        elif op == "write":
            insert(backend, make_harness(3))
        else:
            backend.current_version()
    assert "unavailable" in info.value.detail
    return time.monotonic() - t0


@pytest.mark.slow
def test_dead_database_fails_fast_then_recovers(backend, pg_dsn):
    db = _dbname(pg_dsn)
    allow_connections(db, False)
    kill_sessions(db)
    took = attempt("read", backend)  # finds the database gone: waits for a connection at most TIMEOUT_S
    assert took < FAST_S, f"the first read took {took:.1f}s to fail"
    # The circuit breaker is open: each request fails at once instead of waiting TIMEOUT_S again.
    took = [attempt(op, backend) for op in ("read", "write", "version", "read", "write") * 2]
    assert max(took) < INSTANT_S, took
    assert sum(took) < TIMEOUT_S / 2, took

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


@pytest.mark.slow
def test_backend_starts_while_the_database_is_down(pg_dsn):
    # What `serve` needs to start and keep retrying check_ready: the backend is built without the
    # database, and asking it for the schema version fails fast, then works once the database is back.
    db = _dbname(pg_dsn)
    allow_connections(db, False)
    b = None
    try:
        t0 = time.monotonic()
        b = open_backend({"storage": {"backend": "postgres", "dsn": pg_dsn, "busy_timeout_s": TIMEOUT_S}})
        assert time.monotonic() - t0 < INSTANT_S  # built without waiting for the database
        assert attempt("version", b) < FAST_S
        assert max(attempt("version", b) for _ in range(5)) < INSTANT_S
        with pytest.raises(StorageUnavailable):
            b.init()
        allow_connections(db, True)
        wait_until = time.monotonic() + RECOVER_S
        while True:
            try:
                assert b.current_version() == 0  # reached: a fresh database, not initialised
                break
            except StorageUnavailable:
                assert time.monotonic() < wait_until, "never recovered"
                time.sleep(0.1)
        assert b.init() == b.schema_version
        insert(b, make_harness(1))
    finally:
        allow_connections(db, True)
        if b is not None:
            b.close()


class Database:
    """The breaker's check, against a database that is down until ``up`` is set."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.checks = 0

    def check(self) -> None:
        self.checks += 1
        if not self.up.is_set():
            raise OSError("connection refused")


def test_breaker_refuses_until_its_background_check_reaches_the_database():
    db = Database()
    breaker = CircuitBreaker(0.05, db.check)
    try:
        assert breaker.admit() and breaker.admit()  # closed: everything goes ahead
        breaker.failed("refused")
        t0 = time.monotonic()
        while db.checks < 3:  # the check runs in the background, every interval
            assert not breaker.admit()  # and no request waits for it
            assert time.monotonic() - t0 < 5
            time.sleep(0.01)
        db.up.set()
        while not breaker.admit():
            assert time.monotonic() - t0 < 5
            time.sleep(0.01)
        checks = db.checks
        time.sleep(0.2)
        assert db.checks == checks  # closed: no more checks
        breaker.failed("refused again")  # a new outage starts a new check loop
        assert not breaker.admit()
        while not breaker.admit():
            assert time.monotonic() - t0 < 5
            time.sleep(0.01)
    finally:
        breaker.close()


def test_breaker_closed_by_any_success():
    # A request that got its connection before the outage was noticed closes it as well.
    breaker = CircuitBreaker(60.0, Database().check)
    try:
        breaker.failed()
        assert not breaker.admit()
        breaker.succeeded()
        assert breaker.admit()
    finally:
        breaker.close()


def test_a_slow_statement_is_ended_by_the_server_and_the_database_stays_in_use(pg_dsn):
    # storage.statement_timeout_s on a database that runs: the server cancels the statement (a 503
    # saying so), the connection stays usable and the breaker stays closed.
    b = open_backend({"storage": {"backend": "postgres", "dsn": pg_dsn, "statement_timeout_s": 0.5}})
    try:
        b.init()
        insert(b, make_harness(1))
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable, match="took too long"):
            with b.read() as tx, translated():
                tx._execute("SELECT pg_sleep(3)")  # no API statement is this slow: a stand-in for one
        assert time.monotonic() - t0 < 0.5 + 1.0
        t0 = time.monotonic()
        assert read_one(b) is not None  # at once: no breaker opened, the connection reused
        assert time.monotonic() - t0 < INSTANT_S
    finally:
        b.close()


HUNG_BOUND_S = 1.0 + 0.5 + 1.5  # statement_timeout_s, the guard's margin, a busy machine's margin


@pytest.mark.slow
def test_hung_database_cuts_statements_within_the_bound_then_recovers(private_postgres):
    # SIGSTOP: the server neither answers nor cancels anything; its kernel still acknowledges, so
    # only the client-side guard ends the wait (CONTRACT §16).
    dsn = private_postgres.create_database("xpresso")
    b = open_backend({"storage": {"backend": "postgres", "dsn": dsn, "statement_timeout_s": 1.0, "pool_max": 4}})
    try:
        b.init()
        insert(b, make_harness(1))
        fill_pool(b, 4)  # idle connections: each request finds one and sends its statement
        private_postgres.pause()
        outcomes: list = []

        def request() -> None:
            t0 = time.monotonic()
            try:
                read_one(b)
                outcomes.append(("answered", time.monotonic() - t0))
            except StorageUnavailable as exc:
                outcomes.append((exc.detail, time.monotonic() - t0))

        threads = [threading.Thread(target=request) for _ in range(8)]  # more than the pool
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(outcomes) == 8 and all(took < HUNG_BOUND_S for _, took in outcomes), outcomes
        assert any("did not answer within 1.5 s" in why for why, _ in outcomes), outcomes
        assert all(why != "answered" for why, _ in outcomes), outcomes
        took = [attempt(op, b) for op in ("read", "write", "version")]  # the breaker is open: at once
        assert max(took) < INSTANT_S, took
        private_postgres.resume()
        assert wait_until_served(b) < RECOVER_S
        insert(b, make_harness(2))
    finally:
        private_postgres.resume()
        b.close()
