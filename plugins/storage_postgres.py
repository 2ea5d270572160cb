"""PostgreSQL storage: for teams that outgrow one process. psycopg 3 with a psycopg_pool pool.

The layout follows the SQLite plugin (one ``xpresso_docs`` table of documents plus their index
columns, ``xpresso_visibility`` for the extra groups a document is visible in, the schema version
in ``xpresso_meta``); tables are prefixed because a PostgreSQL database is often shared. The
database itself enforces uniqueness: the primary key (kind, id) and a partial unique index on
(kind, grp, name) among live documents, so any number of processes can write at once.

Choices worth knowing:

* ``body`` is ``json`` (validated text, kept verbatim), not ``jsonb``: nothing queries inside
  bodies in SQL (filters run in Python, see ``storage.filter_docs``), writes skip the jsonb
  decomposition, and every body another backend holds fits -- jsonb refuses ``\\u0000`` in strings.
  ``ALTER TABLE xpresso_docs ALTER body TYPE jsonb USING body::jsonb`` is a future migration away
  if SQL-side filters are ever wanted. Bodies are fetched as ``body::text`` and decoded with
  ``json.loads``: about 4 times quicker than psycopg's json loader for a list of 50.
* Lists look up each document's visible groups only when the kind has visibility rows at all
  (an uncorrelated EXISTS, which PostgreSQL evaluates once per query): kinds that are never shared
  skip 50 index probes, and ``visible`` is still right for every kind.
* Change counters (``ChangeCounters``) live in ``xpresso_counters``, kept by
  ``xpresso_env.storage.sql_counters`` as on SQLite: one bump statement per write transaction, just before
  COMMIT, so the counter rows stay locked for the commit only (bumping inside each INSERT/UPDATE
  would lock them from the first write on, in any order). Migration 3 starts the counter of every
  (kind, group) that already holds documents at 1 (0 stays "never written"). Processes running an
  older xpresso-env do not bump counters: stop them all before ``xpresso-env init`` upgrades.
* Text columns are ``COLLATE "C"``: ordering by (created, id) is by code point, as in SQLite and
  YAML, whatever the database's collation.
* Writes run in READ COMMITTED with ``SELECT ... FOR UPDATE`` for ``get(lock=True)``; reads run in
  REPEATABLE READ READ ONLY, a consistent snapshot. A refused write (duplicate name...) leaves the
  transaction usable, as in the other backends: ``insert`` is one ``ON CONFLICT DO NOTHING``
  statement (then one look-up says which conflict it was), an ``update`` to a live name runs in a
  savepoint. Each write is one statement (plus one for new visible groups on update).
* Connections come from a pool; one that a restart broke is dropped on its first statement
  (nothing done yet, so the next connection is tried at once) and replaced in the background:
  a database that restarts is used again without a restart of ours.
  ``storage.busy_timeout_s`` bounds the wait for a connection and for a row lock (``lock_timeout``).
* A circuit breaker keeps an outage from costing every request that wait: once a wait for a
  connection has timed out (the database is unreachable, or every connection was held that long),
  requests fail at once with ``StorageUnavailable`` (a 503) for ``retry_interval_s``; then one
  request tries again while the others still fail at once, and its success closes the breaker.
  The pool opens without waiting, so the backend is built (and ``serve`` starts) while the
  database is down.
* psycopg is imported only when this backend is used; without it, a ConfigError names the
  ``pip install`` to run.
"""
from __future__ import annotations

import json
import math
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Optional, Sequence

from xpresso_env.config import Settings
from xpresso_env.core.errors import (
    AlreadyExists,
    ConfigError,
    NameConflict,
    NotFound,
    SchemaOutdated,
    StorageError,
    StorageUnavailable,
)
from xpresso_env.hookspecs import hookimpl
from xpresso_env.storage import Doc, Key, QueryVersions, StorageBackendInfo
from xpresso_env.storage.sql_counters import CounterTable, SchemaGate, TxCounters

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

# Each entry upgrades the schema from version i to i+1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: documents and their index columns
        "CREATE TABLE xpresso_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE xpresso_docs (
               kind TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, grp TEXT COLLATE "C",
               name TEXT COLLATE "C", deleted BOOLEAN NOT NULL DEFAULT FALSE,
               created TEXT COLLATE "C" NOT NULL, body JSON NOT NULL,
               CONSTRAINT xpresso_docs_pkey PRIMARY KEY (kind, id))""",
        """CREATE UNIQUE INDEX xpresso_docs_live_name ON xpresso_docs (kind, grp, name)
               WHERE NOT deleted AND name IS NOT NULL""",
        "CREATE INDEX xpresso_docs_by_group ON xpresso_docs (kind, grp, created, id)",
        "CREATE INDEX xpresso_docs_by_kind ON xpresso_docs (kind, created, id)",
    ),
    (  # 2: records visible in more groups than their owner's (shared images)
        """CREATE TABLE xpresso_visibility (
               kind TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, grp TEXT COLLATE "C" NOT NULL,
               CONSTRAINT xpresso_visibility_pkey PRIMARY KEY (kind, grp, id))""",
        "CREATE INDEX xpresso_visibility_by_doc ON xpresso_visibility (kind, id)",
    ),
    (  # 3: change counters per (kind, group); group '' for documents without one
        """CREATE TABLE xpresso_counters (
               kind TEXT COLLATE "C" NOT NULL, grp TEXT COLLATE "C" NOT NULL, n BIGINT NOT NULL,
               CONSTRAINT xpresso_counters_pkey PRIMARY KEY (kind, grp))""",
        """INSERT INTO xpresso_counters (kind, grp, n)
               SELECT kind, COALESCE(grp, ''), 1 FROM xpresso_docs UNION SELECT kind, grp, 1 FROM xpresso_visibility""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
COUNTERS_VERSION = 3  # the schema that has xpresso_counters

NAME_INDEX = "xpresso_docs_live_name"
# Serialises concurrent `init` runs on one database (pg_advisory_xact_lock key: "xpresso" in ASCII).
INIT_LOCK_KEY = 0x7870726573736F

_COLUMNS = "d.kind, d.id, d.grp, d.name, d.deleted, d.created, d.body::text AS body"
_VISIBLE = "ARRAY(SELECT v.grp FROM xpresso_visibility v WHERE v.kind = d.kind AND v.id = d.id ORDER BY v.grp)"
_SELECT = f"SELECT {_COLUMNS}, {_VISIBLE} AS visible FROM xpresso_docs d"
# For lists: no per-row look-up of visible groups when the kind has none at all (NULL: none).
_SELECT_MANY = (f"SELECT {_COLUMNS}, CASE WHEN EXISTS (SELECT 1 FROM xpresso_visibility x WHERE x.kind = %(kind)s) "
                f"THEN {_VISIBLE} END AS visible FROM xpresso_docs d")

COUNTERS = CounterTable("xpresso_counters", "%s")
# A taken id or live name makes the insert do nothing rather than fail (which would need a
# savepoint, two more round trips, to keep the transaction usable); its visible groups go in the
# same statement. Returns 1 if inserted, 0 if refused.
_INSERT = """WITH d AS (INSERT INTO xpresso_docs (kind, id, grp, name, deleted, created, body)
                       VALUES (%(kind)s, %(id)s, %(grp)s, %(name)s, %(deleted)s, %(created)s, %(body)s)
                       ON CONFLICT DO NOTHING RETURNING kind, id),
                  v AS (INSERT INTO xpresso_visibility (kind, id, grp)
                        SELECT d.kind, d.id, g FROM d, unnest(%(visible)s::text[]) AS g)
             SELECT count(*) FROM d"""
# The whole update but the new visible groups: the old owner group comes from the row locked by
# this statement (FOR UPDATE returns its newest version, so a concurrent move of the document to
# another group cannot go unnoticed); the old visible groups are deleted and returned. No row:
# no such document.
_UPDATE = """WITH old AS (SELECT grp FROM xpresso_docs WHERE kind = %(kind)s AND id = %(id)s FOR UPDATE),
                  upd AS (UPDATE xpresso_docs d SET grp = %(grp)s, name = %(name)s, deleted = %(deleted)s,
                                 created = %(created)s, body = %(body)s
                          FROM old WHERE d.kind = %(kind)s AND d.id = %(id)s RETURNING old.grp),
                  gone AS (DELETE FROM xpresso_visibility v USING upd
                           WHERE v.kind = %(kind)s AND v.id = %(id)s RETURNING v.grp)
             SELECT upd.grp, ARRAY(SELECT grp FROM gone) FROM upd"""

INSTALL_HINT = "pip install 'xpresso-env[postgres]'"


def _psycopg():
    """psycopg and psycopg_pool, or a ConfigError naming what to install."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ConfigError(f"storage.backend: the postgres backend needs psycopg 3 and psycopg_pool "
                          f"({exc.name} is missing): {INSTALL_HINT}") from None
    return psycopg, psycopg_pool


def _dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"))


def _translate(exc: Exception) -> Exception:
    """A psycopg error as the domain error the services understand."""
    import psycopg
    from psycopg import errors as pe

    if isinstance(exc, pe.UniqueViolation):
        if exc.diag.constraint_name == NAME_INDEX:
            return NameConflict("A record with this name already exists in this group.")
        return AlreadyExists("A record with this id already exists.")
    if isinstance(exc, pe.UndefinedTable):
        return SchemaOutdated()
    if isinstance(exc, (pe.LockNotAvailable, pe.DeadlockDetected, pe.SerializationFailure)):
        return StorageUnavailable("The database is busy, try again later.")
    # Connection refused or lost, server shutting down, pool timeout (an OperationalError), pool closed.
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StorageUnavailable("The database is unavailable, try again later.")
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return StorageError(f"PostgreSQL error: {type(exc).__name__}: {first_line}")


@contextmanager
def _translated() -> Iterator[None]:
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise _translate(exc) from exc


class PostgresTx:
    def __init__(self, conn: psycopg.Connection, writable: bool):
        self._conn = conn
        self._writable = writable
        self.counters = TxCounters(COUNTERS, conn.execute)

    @staticmethod
    def _doc(row: tuple) -> Doc:
        kind, id_, grp, name, deleted, created, body, visible = row
        return Doc(kind=kind, id=id_, group=grp, name=name, deleted=bool(deleted), created=created,
                   body=json.loads(body), visible=tuple(visible or ()))

    def versions(self, keys: Sequence[Key]) -> tuple[int, ...]:
        with _translated():
            return self.counters.versions(keys)

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        # A failed statement would abort the whole transaction; rolling back to a savepoint keeps
        # it usable, so a caller may catch NameConflict and go on, as with the other backends.
        self._conn.execute("SAVEPOINT xpresso_stmt")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK TO SAVEPOINT xpresso_stmt")
            self._conn.execute("RELEASE SAVEPOINT xpresso_stmt")
            raise
        self._conn.execute("RELEASE SAVEPOINT xpresso_stmt")

    def get(self, kind: str, id: str, *, lock: bool = False) -> Optional[Doc]:
        sql = f"{_SELECT} WHERE d.kind = %s AND d.id = %s"
        if lock and self._writable:
            sql += " FOR UPDATE OF d"
        with _translated():
            row = self._conn.execute(sql, (kind, id)).fetchone()
        return None if row is None else self._doc(row)

    @staticmethod
    def _params(doc: Doc) -> dict[str, Any]:
        from psycopg.types.json import Json

        return {"kind": doc.kind, "id": doc.id, "grp": doc.group, "name": doc.name, "deleted": doc.deleted,
                "created": doc.created, "body": Json(doc.body, dumps=_dumps),
                "visible": sorted({g for g in doc.visible if g != doc.group})}

    def insert(self, doc: Doc) -> None:
        with _translated():
            (inserted,) = self._conn.execute(_INSERT, self._params(doc)).fetchone()
            if not inserted:
                taken = self._conn.execute("SELECT 1 FROM xpresso_docs WHERE kind = %s AND id = %s",
                                           (doc.kind, doc.id)).fetchone()
                if taken:
                    raise AlreadyExists("A record with this id already exists.")
                raise NameConflict("A record with this name already exists in this group.")
        self.counters.inserted(doc)

    def update(self, doc: Doc) -> None:
        params = self._params(doc)
        # Only a live name can be refused (the partial unique index): other updates need no savepoint.
        guard = self._savepoint() if doc.name is not None and not doc.deleted else nullcontext()
        with _translated(), guard:
            row = self._conn.execute(_UPDATE, params).fetchone()
            if row is None:
                raise NotFound()
            if params["visible"]:
                self._conn.execute("INSERT INTO xpresso_visibility (kind, id, grp) "
                                   "SELECT %(kind)s, %(id)s, unnest(%(visible)s::text[])", params)
        old_group, old_visible = row
        self.counters.updated(doc, old_group, old_visible)

    def query(self, kind: str, group: Optional[str] = None, *, include_deleted: bool = True) -> list[Doc]:
        live = "" if include_deleted else " AND NOT d.deleted"
        params = {"kind": kind, "group": group}
        if group is None:
            sql = f"{_SELECT_MANY} WHERE d.kind = %(kind)s{live} ORDER BY d.created, d.id"
        else:
            # Two index scans (owned, shared) rather than one OR that would scan the whole kind; the
            # shared ones have visible groups by definition.
            sql = f"""{_SELECT_MANY} WHERE d.kind = %(kind)s AND d.grp = %(group)s{live}
                      UNION ALL
                      {_SELECT} JOIN xpresso_visibility s ON s.kind = d.kind AND s.id = d.id
                      WHERE s.kind = %(kind)s AND s.grp = %(group)s AND d.grp IS DISTINCT FROM %(group)s{live}
                      ORDER BY created, id"""
        with _translated():
            return [self._doc(r) for r in self._conn.execute(sql, params).fetchall()]

    def find_name(self, kind: str, group: str, name: str) -> Optional[Doc]:
        with _translated():
            row = self._conn.execute(
                f"{_SELECT} WHERE d.kind = %s AND d.grp = %s AND d.name = %s AND NOT d.deleted",
                (kind, group, name)).fetchone()
        return None if row is None else self._doc(row)

    def purge(self, kind: str, id: str) -> bool:
        with _translated():
            row = self._conn.execute(
                """WITH gone AS (DELETE FROM xpresso_docs WHERE kind = %s AND id = %s RETURNING grp),
                        vis AS (DELETE FROM xpresso_visibility WHERE kind = %s AND id = %s RETURNING grp)
                   SELECT (SELECT grp FROM gone), (SELECT count(*) FROM gone), ARRAY(SELECT grp FROM vis)""",
                (kind, id, kind, id)).fetchone()
        group, count, visible = row
        if not count:
            return False
        self.counters.updated(Doc(kind=kind, id=id, group=group, name=None, deleted=True, created="", body={}),
                              group, visible or [])
        return True


class CircuitBreaker:
    """Fail fast while the database is down. Closed: every attempt goes ahead. ``failed()`` opens
    it: attempts are refused for ``interval_s``; then one attempt goes ahead (half-open) while the
    others are still refused, and its outcome closes the breaker or opens it again."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: Optional[float] = None  # None: closed
        self._trying = False  # the half-open attempt is under way

    def admit(self) -> bool:
        """Whether an attempt may go ahead now; each admitted one must end in succeeded() or failed()."""
        if self._open_until is None:  # the common case, without the lock
            return True
        with self._lock:
            if self._open_until is None:
                return True
            if self._trying or self._clock() < self._open_until:
                return False
            self._trying = True
            return True

    def succeeded(self) -> None:
        if self._open_until is None and not self._trying:
            return
        with self._lock:
            self._open_until = None
            self._trying = False

    def failed(self) -> None:
        with self._lock:
            self._open_until = self._clock() + self._interval_s
            self._trying = False


class PostgresStorage(QueryVersions):
    name = "postgres"
    schema_version = SCHEMA_VERSION
    versions_store_wide = False  # a counter per (kind, group): the ChangeCounters capability

    def __init__(self, dsn: str, pool_max: int = 10, timeout_s: float = 10.0, retry_interval_s: float = 1.0):
        psycopg, psycopg_pool = _psycopg()
        try:
            psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise ConfigError(f"storage.dsn: not a valid PostgreSQL connection string: {exc}") from None
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
        No connection in time opens the circuit breaker (see the module docstring).
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
                with _translated():  # PoolTimeout: no connection could be made in time
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
                        raise _translate(exc) from exc
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
                with _translated():
                    if tx.counters.pending and self._counters_gate.ready(lambda: self._locked_version(conn)):
                        tx.counters.flush()  # the last statement: counter rows stay locked for the COMMIT only
            except BaseException:
                self._rollback(conn)
                raise
            with _translated():
                conn.execute("COMMIT")

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
        with self._connection("SELECT 1") as conn, _translated():
            return self._version(conn)

    def init(self, target_version: Optional[int] = None) -> int:
        target = SCHEMA_VERSION if target_version is None else target_version
        with self._connection("BEGIN") as conn, _translated():
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


def _factory(settings: Settings) -> PostgresStorage:
    if not settings.storage.dsn:
        raise ConfigError("storage.dsn: required by the postgres storage backend "
                          "(e.g. 'postgresql://xpresso@db.example.com/xpresso')")
    return PostgresStorage(settings.storage.dsn, pool_max=settings.storage.pool_max,
                           timeout_s=settings.storage.busy_timeout_s)


@hookimpl
def xpresso_storage_backends():
    return [StorageBackendInfo(name="postgres", description="PostgreSQL (psycopg 3, pooled); for several servers",
                               factory=_factory)]
