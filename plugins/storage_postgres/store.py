"""The PostgreSQL store: the connection pool, transactions at the isolation each needs, and the
schema's initialisation and upgrades."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Optional

from xpresso_env.core.errors import ConfigError, StorageError, StorageUnavailable
from xpresso_env.storage import QueryVersions
from xpresso_env.storage.sql_counters import SchemaGate, migrate

from .breaker import CircuitBreaker
from .errors import psycopg_module, translate, translated
from .guard import StatementGuard
from .notices import PostgresListener, commit_sending
from .pool import ConnectionPool
from .schema import COUNTERS_VERSION, INIT_LOCK_KEY, MIGRATIONS, SCHEMA_VERSION
from .tx import PostgresTx

if TYPE_CHECKING:
    import psycopg

# The guard cuts a statement this long after the server's statement_timeout would have ended it:
# a server that runs answers first (its connection stays usable), only a hung one is cut.
GUARD_MARGIN_S = 0.5


class PostgresStorage(QueryVersions):
    name = "postgres"
    schema_version = SCHEMA_VERSION
    versions_store_wide = False  # a counter per (kind, group): the ChangeCounters capability

    def __init__(self, dsn: str, pool_max: int = 10, timeout_s: float = 10.0, retry_interval_s: float = 1.0,
                 statement_timeout_s: float = 5.0, connect_timeout_s: float = 2.0):
        psycopg = psycopg_module()
        try:
            psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise ConfigError(f"storage.dsn: not a valid PostgreSQL connection string: {exc}") from None
        self._dsn = dsn
        self._connect_timeout_s = connect_timeout_s
        self._connect_kwargs = connect_kwargs(statement_timeout_s, connect_timeout_s)
        # The server's own bounds: a row lock waited for like SQLite's busy timeout, a statement.
        # SET rather than the startup packet's `options`, which PgBouncer refuses.
        self._setup_sql = (f"SET lock_timeout = {max(1, int(timeout_s * 1000))}; "
                           f"SET statement_timeout = {max(1, int(statement_timeout_s * 1000))}")
        self._closed = False
        self._counters_gate = SchemaGate(COUNTERS_VERSION)
        self._breaker = CircuitBreaker(retry_interval_s, self._check)
        # The server ends a slow statement at statement_timeout; the guard, a little later, one
        # that a hung server never answers.
        self._guard = StatementGuard(statement_timeout_s + GUARD_MARGIN_S,
                                     lambda: self._outage(f"no answer within {statement_timeout_s:g} s"))
        # A free connection is waited for at most as long as a statement may run: after that long
        # every holder has answered or been cut.
        self._pool = ConnectionPool(self._connect, pool_max, wait_s=min(timeout_s, statement_timeout_s))
        self._max_attempts = pool_max + 1  # every idle connection found dead, then a new one

    def _connect(self) -> psycopg.Connection:
        import psycopg

        conn = psycopg.Connection.connect(self._dsn, **self._connect_kwargs)
        try:
            with self._guard.bounded(conn):
                conn.execute(self._setup_sql)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check(self) -> None:
        """The circuit breaker's background check: a new connection answers a statement."""
        conn = self._connect()
        try:
            with self._guard.bounded(conn):
                conn.execute("SELECT 1")
        finally:
            conn.close()

    def _outage(self, why: str) -> None:
        """The database is down or hung: fail fast until the breaker's check reaches it again."""
        self._breaker.failed(why)
        self._pool.clear()  # idle connections to a database that went away are likely dead

    def _execute(self, conn: psycopg.Connection) -> Callable[..., psycopg.Cursor]:
        """``conn.execute``, each statement bounded by the guard."""
        guard = self._guard

        def execute(sql: str, params: Any = None) -> psycopg.Cursor:
            with guard.bounded(conn):
                return conn.execute(sql, params)

        return execute

    @contextmanager
    def _connection(self, first_sql: str) -> Iterator[psycopg.Connection]:
        """A pooled connection on which ``first_sql`` (a BEGIN, or a read) has run.

        A connection that a database restart broke fails on that first statement, before anything
        was done: it is dropped and the next one is tried at once (a new one once the idle ones
        are used up). A connection that cannot be made, or a statement the guard had to cut, opens
        the circuit breaker (see the package docstring).
        """
        if self._closed:
            raise StorageUnavailable("The PostgreSQL storage is closed.")
        conn = self._checked_out(first_sql)
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    def _checked_out(self, first_sql: str) -> psycopg.Connection:
        import psycopg

        for _ in range(self._max_attempts):
            if not self._breaker.admit():
                raise StorageUnavailable("The database is unavailable, try again later.")
            try:
                conn = self._pool.getconn()
            except psycopg.Error as exc:  # refused, or no answer within connect_timeout_s
                self._outage(_first_line(exc))
                raise translate(exc) from exc
            try:
                self._execute(conn)(first_sql)
                self._breaker.succeeded()
                return conn
            except (psycopg.Error, StorageUnavailable) as exc:
                broken = conn.broken or conn.closed
                if broken:
                    self._pool.discard(conn)
                else:
                    self._pool.putconn(conn)
                if isinstance(exc, StorageUnavailable):  # cut by the guard: the database hangs
                    raise
                if not broken:
                    raise translate(exc) from exc
        self._outage("every connection tried was broken")
        raise StorageUnavailable("The database is unavailable, try again later.")

    @contextmanager
    def _transaction(self, writable: bool) -> Iterator[PostgresTx]:
        from psycopg import pq

        with self._connection("BEGIN" if writable else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") as conn:
            execute = self._execute(conn)
            tx = PostgresTx(execute, writable)
            try:
                yield tx
            except BaseException:
                self._rollback(execute)
                raise
            if conn.info.transaction_status == pq.TransactionStatus.INERROR:
                # A statement failed and its error was swallowed: COMMIT would silently roll back.
                self._rollback(execute)
                raise StorageError("The transaction was aborted by an earlier error and was rolled back.")
            try:
                with translated():
                    if tx.counters.pending and self._counters_gate.ready(lambda: self._locked_version(execute)):
                        tx.counters.flush()  # the last statement: counter rows stay locked for the COMMIT only
            except BaseException:
                self._rollback(execute)
                raise
            if not tx.notices:
                with translated():
                    execute("COMMIT")
                return
            try:
                with translated():  # delivered to the listeners when (and only if) the COMMIT succeeds
                    execute(commit_sending(tx.notices))
            except BaseException:
                self._rollback(execute)  # a NOTIFY that failed left the transaction aborted, uncommitted
                raise

    @staticmethod
    def _rollback(execute: Callable[..., Any]) -> None:
        import psycopg

        try:
            execute("ROLLBACK")
        except (psycopg.Error, StorageUnavailable):
            pass  # a dead connection has no transaction left; the pool discards it

    @staticmethod
    def _locked_version(execute: Callable[..., Any]) -> Optional[int]:
        """The schema version, read in a write transaction under the shared init lock: a
        concurrent upgrade then waits for this transaction (and counts its documents) or
        finishes first (and is seen)."""
        row = execute("SELECT pg_advisory_xact_lock_shared(%s), "
                           "(SELECT value FROM xpresso_meta WHERE key = 'schema_version')",
                           (INIT_LOCK_KEY,)).fetchone()
        return None if row[1] is None else int(row[1])

    def notice_listener(self) -> PostgresListener:
        """A listener on its own connection (the ``ChangeNotices`` capability; ``notices.py``)."""
        return PostgresListener(self._dsn, self._connect_timeout_s)

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
                # Migrating a big store may take longer than a request's statement may.
                conn.execute("SET LOCAL statement_timeout = 0")
                # Two `xpresso-env init` (or two servers starting) must not migrate at once.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (INIT_LOCK_KEY,))
                current = self._version(conn)
                if current > SCHEMA_VERSION:
                    raise StorageError(f"the database has schema version {current}, newer than this "
                                       f"xpresso-env knows ({SCHEMA_VERSION}): upgrade xpresso-env")
                tx = PostgresTx(conn.execute, writable=True)  # the document steps' view of this transaction
                migrate(tx, conn.execute, MIGRATIONS, current, target, COUNTERS_VERSION)
                if target > current:
                    conn.execute("INSERT INTO xpresso_meta (key, value) VALUES ('schema_version', %s) "
                                 "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (str(target),))
                conn.execute("COMMIT")
                return max(current, target)
            except BaseException:
                self._rollback(conn.execute)
                raise

    def close(self) -> None:
        self._closed = True
        self._breaker.close()
        self._guard.close()
        self._pool.close()


def connect_kwargs(statement_timeout_s: float, connect_timeout_s: float) -> dict[str, Any]:
    """How each connection is made: bounded (CONTRACT §16)."""
    idle_s = max(1, math.ceil(connect_timeout_s))
    return {
        # autocommit: transactions are begun explicitly, with the isolation each one needs.
        "autocommit": True, "application_name": "xpresso-env",
        # libpq's unit is whole seconds, at least 2.
        "connect_timeout": max(2, math.ceil(connect_timeout_s)),
        # A peer gone silent (host down, partition) is found on an idle connection within
        # idle + 3 probes of 1 s, and on a busy one when what was sent is not acknowledged.
        "keepalives": 1, "keepalives_idle": idle_s, "keepalives_interval": 1, "keepalives_count": 3,
        "tcp_user_timeout": max(1000, int((statement_timeout_s + GUARD_MARGIN_S) * 1000)),
    }


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
