"""Helpers for tests against a real PostgreSQL server.

The server is 127.0.0.1:5432 with trust auth and an admin database ``test``; set
``XPRESSO_TEST_PG_ADMIN_DSN`` to use another one. The admin role must be allowed to create
databases. Needs psycopg (``pip install 'xpresso-env[postgres]'``).
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator

ADMIN_DSN_ENV = "XPRESSO_TEST_PG_ADMIN_DSN"
DEFAULT_ADMIN_DSN = "host=127.0.0.1 port=5432 dbname=test"
TABLE_PREFIX = "xpresso_"  # every table the postgres storage plugin makes
# The tables that hold no data: emptying them would lose the schema version.
_KEEP_ON_RESET = ("xpresso_meta",)


def admin_dsn() -> str:
    return os.environ.get(ADMIN_DSN_ENV) or DEFAULT_ADMIN_DSN


def dsn_for(database: str) -> str:
    """The admin DSN pointed at another database."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(admin_dsn(), dbname=database)


def _connect(dsn: str):
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    # A test that left a transaction open must not hang the run: fail instead.
    conn.execute("SET lock_timeout = '10s'")
    return conn


def postgres_available() -> bool:
    try:
        with _connect(admin_dsn()) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:  # psycopg missing, server down, bad DSN: all mean "not available"
        return False


@contextmanager
def temp_database(prefix: str = "xpresso_test") -> Iterator[str]:
    """Create a uniquely named database, yield its DSN, drop it (even with sessions open) at exit.

    Its sessions commit without waiting for the WAL flush (``synchronous_commit = off``): what a
    commit makes visible, and in which order, is the same; only a crash of the server itself
    could lose the last commits, and no test crashes the shared server.
    """
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _connect(admin_dsn()) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name)))
    try:
        yield dsn_for(name)
    finally:
        with _connect(admin_dsn()) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _xpresso_tables(conn) -> list[str]:
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, %s)",
        (TABLE_PREFIX,)).fetchall()
    return sorted(r[0] for r in rows)


def reset_database(dsn: str) -> None:
    """Empty every xpresso table (the schema stays in place): one database serves many tests.

    DELETE, not TRUNCATE: a test leaves a few rows, and TRUNCATE makes new files for every table,
    far slower for so few (no table has a foreign key to order the deletes by)."""
    from psycopg import sql

    with _connect(dsn) as conn:
        tables = [t for t in _xpresso_tables(conn) if t not in _KEEP_ON_RESET]
        with conn.transaction():
            for table in tables:
                conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))


def drop_tables(dsn: str) -> None:
    """Drop every xpresso table: the database is then a fresh, not initialised store."""
    from psycopg import sql

    with _connect(dsn) as conn:
        tables = _xpresso_tables(conn)
        if tables:
            conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, tables))))
