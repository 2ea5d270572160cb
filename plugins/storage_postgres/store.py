"""The PostgreSQL store: the connection pool, transactions at the isolation each needs, and the
schema's initialisation and upgrades."""
from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, ContextManager, Iterator, Optional

from xpresso_env.core.errors import ConfigError, StorageError, StorageUnavailable
from xpresso_env.storage import QueryVersions
from xpresso_env.storage.sql_counters import SchemaGate

from .breaker import CircuitBreaker
from .errors import psycopg_modules, translate, translated
from .notices import PostgresListener, commit_sending
from .schema import COUNTERS_VERSION, INIT_LOCK_KEY, MIGRATIONS, SCHEMA_VERSION
from .tx import PostgresTx

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool


class PostgresStorage(QueryVersions):
    name = "postgres"
    schema_version = SCHEMA_VERSION
    versions_store_wide = False  # a counter per (kind, group): the ChangeCounters capability

    def __init__(self, dsn: str, pool_max: int = 10, timeout_s: float = 10.0, retry_interval_s: float = 1.0):
        psycopg, psycopg_pool = psycopg_modules()
        try:
            psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise ConfigError(f"storage.dsn: not a valid PostgreSQL connection string: {exc}") from None
        self._dsn = dsn
        self._timeout_s = timeout_s
        lock_timeout_ms = max(1, int(timeout_s * 1000))

        def configure(conn: psycopg.Connection) -> None:
            # Like SQLite's busy timeout: wait this long for a row lock, then give up (503).
            conn.execute(f"SET lock_timeout = {lock_timeout_ms}")

        self._pool = psycopg_pool.ConnectionPool(
            dsn, open=False, name="xpresso-postgres", min_size=1, max_size=pool_max,
            # autocommit: transactions are begun explicitly, with the isolation each one needs.
            kwargs={"autocommit": True, "connect_timeout": max(1, math.ceil(timeout_s)),
                    "application_name": "xpresso-env"},
            configure=configure,
            # No `check=`: _connection() finds and drops broken connections itself (see there).
            timeout=timeout_s,  # how long a request waits for a connection before StorageUnavailable
            # Background reconnection gives up after this long; the next request starts a new attempt
            # at once, so a database that returns is used again within about a second.
            reconnect_timeout=max(1.0, timeout_s))
        self._opened = False
        self._closed = False
        self._lock = threading.Lock()
        self._counters_gate = SchemaGate(COUNTERS_VERSION)
        self._breaker = CircuitBreaker(retry_interval_s)

    def _open_pool(self) -> psycopg_pool.ConnectionPool:
        # Opened on first use, without waiting: the service may start while the database is down.
        if not self._opened:
            with self._lock:
                if self._closed:
                    raise StorageUnavailable("The PostgreSQL storage is closed.")
                if not self._opened:
                    self._pool.open(wait=False)
                    self._opened = True
        return self._pool

    @contextmanager
    def _connection(self, first_sql: str) -> Iterator[psycopg.Connection]:
        """A pooled connection on which ``first_sql`` (a BEGIN, or a read) has run.

        A connection that a database restart broke fails on that first statement, before anything
        was done: it is dropped (the pool makes a new one in the background) and the next one is
        tried at once. This is the pool's ``check`` without its extra round trip per request, and
        without its backoff sleeps that could make a request time out draining dead connections.
        No connection in time opens the circuit breaker (see the package docstring).
        """
        pool = self._open_pool()
        conn = self._checked_out(pool, first_sql)
        try:
            yield conn
        finally:
            pool.putconn(conn)

    def _checked_out(self, pool: psycopg_pool.ConnectionPool, first_sql: str) -> psycopg.Connection:
        import psycopg

        if not self._breaker.admit():
            raise StorageUnavailable("The database is unavailable, try again later.")
        reached = False  # whether the database answered: the breaker's verdict on this attempt
        deadline = time.monotonic() + self._timeout_s
        try:
            while True:
                with translated():  # PoolTimeout: no connection could be made in time
                    conn = pool.getconn(timeout=max(0.0, deadline - time.monotonic()))
                try:
                    conn.execute(first_sql)
                    reached = True
                    return conn
                except psycopg.Error as exc:
                    broken = conn.broken or conn.closed
                    pool.putconn(conn)
                    if not broken:
                        reached = True
                        raise translate(exc) from exc
        finally:
            if reached:
                self._breaker.succeeded()
            else:
                self._breaker.failed()

    @contextmanager
    def _transaction(self, writable: bool) -> Iterator[PostgresTx]:
        from psycopg import pq

        with self._connection("BEGIN" if writable else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") as conn:
            tx = PostgresTx(conn, writable)
            try:
                yield tx
            except BaseException:
                self._rollback(conn)
                raise
            if conn.info.transaction_status == pq.TransactionStatus.INERROR:
                # A statement failed and its error was swallowed: COMMIT would silently roll back.
                self._rollback(conn)
                raise StorageError("The transaction was aborted by an earlier error and was rolled back.")
            try:
                with translated():
                    if tx.counters.pending and self._counters_gate.ready(lambda: self._locked_version(conn)):
                        tx.counters.flush()  # the last statement: counter rows stay locked for the COMMIT only
            except BaseException:
                self._rollback(conn)
                raise
            if not tx.notices:
                with translated():
                    conn.execute("COMMIT")
                return
            try:
                with translated():  # delivered to the listeners when (and only if) the COMMIT succeeds
                    conn.execute(commit_sending(tx.notices))
            except BaseException:
                self._rollback(conn)  # a NOTIFY that failed left the transaction aborted, uncommitted
                raise

    @staticmethod
    def _rollback(conn: psycopg.Connection) -> None:
        import psycopg

        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            pass  # a dead connection has no transaction left; the pool discards it

    @staticmethod
    def _locked_version(conn: psycopg.Connection) -> Optional[int]:
        """The schema version, read in a write transaction under the shared init lock: a
        concurrent upgrade then waits for this transaction (and counts its documents) or
        finishes first (and is seen)."""
        row = conn.execute("SELECT pg_advisory_xact_lock_shared(%s), "
                           "(SELECT value FROM xpresso_meta WHERE key = 'schema_version')",
                           (INIT_LOCK_KEY,)).fetchone()
        return None if row[1] is None else int(row[1])

    def notice_listener(self) -> PostgresListener:
        """A listener on its own connection (the ``ChangeNotices`` capability; ``notices.py``)."""
        return PostgresListener(self._dsn, self._timeout_s)

    def read(self) -> ContextManager[PostgresTx]:
        return self._transaction(writable=False)

    def write(self) -> ContextManager[PostgresTx]:
        return self._transaction(writable=True)

    @staticmethod
    def _version(conn: psycopg.Connection) -> int:
        if conn.execute("SELECT to_regclass('xpresso_meta')").fetchone()[0] is None:
            return 0
        row = conn.execute("SELECT value FROM xpresso_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def current_version(self) -> int:
        with self._connection("SELECT 1") as conn, translated():
            return self._version(conn)

    def init(self, target_version: Optional[int] = None) -> int:
        target = SCHEMA_VERSION if target_version is None else target_version
        with self._connection("BEGIN") as conn, translated():
            try:
                # Two `xpresso-env init` (or two servers starting) must not migrate at once.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (INIT_LOCK_KEY,))
                current = self._version(conn)
                if current > SCHEMA_VERSION:
                    raise StorageError(f"the database has schema version {current}, newer than this "
                                       f"xpresso-env knows ({SCHEMA_VERSION}): upgrade xpresso-env")
                for version in range(current, target):
                    for statement in MIGRATIONS[version]:
                        conn.execute(statement)
                if target > current:
                    conn.execute("INSERT INTO xpresso_meta (key, value) VALUES ('schema_version', %s) "
                                 "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (str(target),))
                conn.execute("COMMIT")
                return max(current, target)
            except BaseException:
                self._rollback(conn)
                raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._opened:
                self._pool.close(timeout=5.0)
