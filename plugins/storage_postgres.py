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
  if SQL-side filters are ever wanted.
* Text columns are ``COLLATE "C"``: ordering by (created, id) is by code point, as in SQLite and
  YAML, whatever the database's collation.
* Writes run in READ COMMITTED with ``SELECT ... FOR UPDATE`` for ``get(lock=True)``; reads run in
  REPEATABLE READ READ ONLY, a consistent snapshot. ``insert``/``update`` run inside a savepoint so
  a refused statement (duplicate name...) leaves the transaction usable, as in the other backends.
* Connections come from a pool; one that a restart broke is dropped on its first statement
  (nothing done yet, so the next connection is tried at once) and replaced in the background:
  a database that restarts is used again without a restart of ours.
  ``storage.busy_timeout_s`` bounds the wait for a connection (a dead database fails after that
  long with ``StorageUnavailable``, a 503) and for a row lock (``lock_timeout``).
* psycopg is imported only when this backend is used; without it, a ConfigError names the
  ``pip install`` to run.
"""
from __future__ import annotations

import json
import math
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from xpresso_env.errors import (AlreadyExists, ConfigError, NameConflict, NotFound, SchemaOutdated, StorageError,
                                StorageUnavailable)
from xpresso_env.hookspecs import hookimpl
from xpresso_env.storage import Doc, StorageBackendInfo

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
)
SCHEMA_VERSION = len(MIGRATIONS)

NAME_INDEX = "xpresso_docs_live_name"
# Serialises concurrent `init` runs on one database (pg_advisory_xact_lock key: "xpresso" in ASCII).
INIT_LOCK_KEY = 0x7870726573736F

_SELECT = """SELECT d.kind, d.id, d.grp, d.name, d.deleted, d.created, d.body,
                    ARRAY(SELECT v.grp FROM xpresso_visibility v WHERE v.kind = d.kind AND v.id = d.id
                          ORDER BY v.grp) AS visible
             FROM xpresso_docs d"""

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
    if isinstance(exc, pe.LockNotAvailable):
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
    def __init__(self, conn, writable: bool):
        self._conn = conn
        self._writable = writable

    @staticmethod
    def _doc(row: tuple) -> Doc:
        kind, id_, grp, name, deleted, created, body, visible = row
        return Doc(kind=kind, id=id_, group=grp, name=name, deleted=bool(deleted), created=created,
                   body=body, visible=tuple(visible or ()))

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

    def _write_visibility(self, doc: Doc, replace: bool) -> None:
        if replace:
            self._conn.execute("DELETE FROM xpresso_visibility WHERE kind = %s AND id = %s", (doc.kind, doc.id))
        groups = sorted({g for g in doc.visible if g != doc.group})
        if groups:
            self._conn.execute("INSERT INTO xpresso_visibility (kind, id, grp) SELECT %s, %s, unnest(%s::text[])",
                               (doc.kind, doc.id, groups))

    def insert(self, doc: Doc) -> None:
        from psycopg.types.json import Json

        with _translated(), self._savepoint():
            self._conn.execute(
                "INSERT INTO xpresso_docs (kind, id, grp, name, deleted, created, body) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (doc.kind, doc.id, doc.group, doc.name, doc.deleted, doc.created, Json(doc.body, dumps=_dumps)))
            if doc.visible:
                self._write_visibility(doc, replace=False)

    def update(self, doc: Doc) -> None:
        from psycopg.types.json import Json

        with _translated(), self._savepoint():
            cur = self._conn.execute(
                "UPDATE xpresso_docs SET grp = %s, name = %s, deleted = %s, created = %s, body = %s "
                "WHERE kind = %s AND id = %s",
                (doc.group, doc.name, doc.deleted, doc.created, Json(doc.body, dumps=_dumps), doc.kind, doc.id))
            if cur.rowcount == 0:
                raise NotFound()
            self._write_visibility(doc, replace=True)

    def query(self, kind: str, group: Optional[str] = None, *, include_deleted: bool = True) -> list[Doc]:
        live = "" if include_deleted else " AND NOT d.deleted"
        if group is None:
            sql, params = f"{_SELECT} WHERE d.kind = %s{live} ORDER BY d.created, d.id", (kind,)
        else:
            # Two index scans (owned, shared) rather than one OR that would scan the whole kind.
            sql = f"""{_SELECT} WHERE d.kind = %s AND d.grp = %s{live}
                      UNION ALL
                      {_SELECT} JOIN xpresso_visibility s ON s.kind = d.kind AND s.id = d.id
                      WHERE s.kind = %s AND s.grp = %s AND d.grp IS DISTINCT FROM %s{live}
                      ORDER BY created, id"""
            params = (kind, group, kind, group, group)
        with _translated():
            return [self._doc(r) for r in self._conn.execute(sql, params).fetchall()]

    def find_name(self, kind: str, group: str, name: str) -> Optional[Doc]:
        with _translated():
            row = self._conn.execute(
                f"{_SELECT} WHERE d.kind = %s AND d.grp = %s AND d.name = %s AND NOT d.deleted",
                (kind, group, name)).fetchone()
        return None if row is None else self._doc(row)


class PostgresStorage:
    name = "postgres"
    schema_version = SCHEMA_VERSION

    def __init__(self, dsn: str, pool_max: int = 10, timeout_s: float = 10.0):
        psycopg, psycopg_pool = _psycopg()
        try:
            psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise ConfigError(f"storage.dsn: not a valid PostgreSQL connection string: {exc}") from None
        self._timeout_s = timeout_s
        lock_timeout_ms = max(1, int(timeout_s * 1000))

        def configure(conn) -> None:
            # Like SQLite's busy timeout: wait this long for a row lock, then give up (503).
            conn.execute(f"SET lock_timeout = {lock_timeout_ms}")

        pool_cls = psycopg_pool.ConnectionPool
        self._pool = pool_cls(
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

    def _open_pool(self):
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
    def _connection(self, first_sql: str) -> Iterator[Any]:
        """A pooled connection on which ``first_sql`` (a BEGIN, or a read) has run.

        A connection that a database restart broke fails on that first statement, before anything
        was done: it is dropped (the pool makes a new one in the background) and the next one is
        tried at once. This is the pool's ``check`` without its extra round trip per request, and
        without its backoff sleeps that could make a request time out draining dead connections.
        """
        import psycopg

        pool = self._open_pool()
        deadline = time.monotonic() + self._timeout_s
        while True:
            with _translated():  # PoolTimeout: no connection could be made in time
                conn = pool.getconn(timeout=max(0.0, deadline - time.monotonic()))
            try:
                conn.execute(first_sql)
                break
            except psycopg.Error as exc:
                broken = conn.broken or conn.closed
                pool.putconn(conn)
                if not broken:
                    raise _translate(exc) from exc
        try:
            yield conn
        finally:
            pool.putconn(conn)

    @contextmanager
    def _transaction(self, writable: bool) -> Iterator[PostgresTx]:
        from psycopg import pq

        with self._connection("BEGIN" if writable else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") as conn:
            try:
                yield PostgresTx(conn, writable)
            except BaseException:
                self._rollback(conn)
                raise
            if conn.info.transaction_status == pq.TransactionStatus.INERROR:
                # A statement failed and its error was swallowed: COMMIT would silently roll back.
                self._rollback(conn)
                raise StorageError("The transaction was aborted by an earlier error and was rolled back.")
            with _translated():
                conn.execute("COMMIT")

    @staticmethod
    def _rollback(conn) -> None:
        import psycopg

        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            pass  # a dead connection has no transaction left; the pool discards it

    def read(self):
        return self._transaction(writable=False)

    def write(self):
        return self._transaction(writable=True)

    @staticmethod
    def _version(conn) -> int:
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


def _factory(settings) -> PostgresStorage:
    if not settings.storage.dsn:
        raise ConfigError("storage.dsn: required by the postgres storage backend "
                          "(e.g. 'postgresql://xpresso@db.example.com/xpresso')")
    return PostgresStorage(settings.storage.dsn, pool_max=settings.storage.pool_max,
                           timeout_s=settings.storage.busy_timeout_s)


@hookimpl
def xpresso_storage_backends():
    return [StorageBackendInfo(name="postgres", description="PostgreSQL (psycopg 3, pooled); for several servers",
                               factory=_factory)]
