"""The SQLite store: a connection per thread, transactions that lock up front, and the schema's
initialisation and upgrades."""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import ContextManager, Iterator, Optional, Sequence

from xpresso_env.core.errors import StorageError, StorageUnavailable
from xpresso_env.storage import Key
from xpresso_env.storage.sql_counters import SchemaGate, migrate

from .commit_sequence import CommitSequence, commit_sequence_path
from .writers import WriterQueue, writers_path
from .schema import COUNTERS_VERSION, MIGRATIONS, SCHEMA_VERSION
from .tx import SQLiteTx, translate

log = logging.getLogger(__name__)


class _PerThread(threading.local):
    conn: Optional[sqlite3.Connection] = None


class SQLiteStorage:
    name = "sqlite"
    schema_version = SCHEMA_VERSION
    versions_store_wide = False  # a counter per (kind, group): the ChangeCounters capability

    def __init__(self, path: Path, busy_timeout_s: float = 10.0):
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._local = _PerThread()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Writers of this process queue here, not in SQLite's busy handler: that one sleeps in
        # steps of up to 100 ms, so under load a freed write lock sat idle while every server
        # thread slept in BEGIN IMMEDIATE (benchmarks/mixed.py). Other processes still meet
        # SQLite's lock and its busy_timeout.
        self._writers = threading.Lock()
        # ... and the writers of every process queue on a lock file (writers.py), not in that handler.
        self._turns = WriterQueue(writers_path(self.path))
        self._counters_gate = SchemaGate(COUNTERS_VERSION)
        self._seq: Optional[CommitSequence] = None  # opened with the first connection

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL. On a brand-new file several connections may race to do it, and SQLite
        answers "locked" at once there instead of calling the busy handler: retry for a while."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _connect(self) -> sqlite3.Connection:
        conn = self._local.conn
        if conn is not None:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Made private before SQLite opens it: the store holds engine credentials and password
            # hashes, and SQLite gives its -wal and -shm files the database file's mode. Only a file
            # that does not exist yet: closing any descriptor of an open database drops every POSIX
            # lock this process holds on it (the other threads' connections), which corrupts it.
            if not self.path.exists():
                try:
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
                except FileExistsError:
                    pass  # another thread made it first
            conn = sqlite3.connect(str(self.path), timeout=self._busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
            self._set_wal(conn)
            # FULL: a commit that was acknowledged survives a crash of the machine, not just the process.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
            # One connection per server thread: keep each page cache small (1 MiB, not 2) so memory
            # stays flat as threads grow; the OS page cache holds the file for all of them.
            conn.execute("PRAGMA cache_size=-1024")
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
            if self._seq is None:
                try:
                    self._seq = CommitSequence(commit_sequence_path(self.path))
                except OSError as exc:  # the cache then checks SQLite on every hit: slower, still right
                    log.warning("no commit sequence beside %s (%s): cached answers are checked in SQLite", self.path, exc)
        return conn

    @contextmanager
    def _transaction(self, begin: str, deferred: bool = False) -> Iterator[SQLiteTx]:
        """``deferred``: BEGIN waits for the first statement, and is skipped when the reader says
        that one statement is all it reads (``SQLiteTx.one_statement_left``)."""
        conn = self._connect()
        if deferred:
            tx = SQLiteTx(conn, begin)
        else:
            try:
                conn.execute(begin)
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            tx = SQLiteTx(conn)
        try:
            yield tx
        except BaseException:
            if tx.begun:
                conn.execute("ROLLBACK")
            raise
        if not tx.begun:
            return  # nothing or one statement read, in autocommit: nothing to end
        mine = self._seq.begin() if tx.changed and self._seq is not None else None
        try:
            if tx.counters.pending and self._counters_gate.ready(lambda: self._schema_version(conn)):
                tx.counters.flush()
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise translate(exc) from exc
        finally:
            if mine is not None:
                self._seq.end(mine)

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> Optional[int]:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return None if row is None else int(row[0])

    def change_stamp(self) -> Optional[int]:
        """See ChangeCounters.change_stamp: a memory read of the commit sequence."""
        if self._seq is None:
            self._connect()
        return self._seq.stamp() if self._seq is not None else None

    def versions(self, keys: Sequence[Key]) -> tuple[int, ...]:
        # One statement in autocommit mode is its own consistent snapshot: no BEGIN/COMMIT needed.
        return SQLiteTx(self._connect()).versions(keys)

    def read(self) -> ContextManager[SQLiteTx]:
        return self._transaction("BEGIN", deferred=True)

    @contextmanager
    def write(self) -> Iterator[SQLiteTx]:
        if not self._writers.acquire(timeout=self._busy_timeout_s):
            raise StorageUnavailable("The SQLite database is busy, try again later.")
        try:
            with self._turns.turn(), self._transaction("BEGIN IMMEDIATE") as tx:
                yield tx
        finally:
            self._writers.release()

    def current_version(self) -> int:
        conn = self._connect()
        try:
            return self._schema_version(conn) or 0
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise translate(exc) from exc

    def init(self, target_version: Optional[int] = None) -> int:
        target = SCHEMA_VERSION if target_version is None else target_version
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = self.current_version()
                if current > SCHEMA_VERSION:
                    raise StorageError(f"{self.path} has schema version {current}, newer than this "
                                       f"xpresso-env knows ({SCHEMA_VERSION}): upgrade xpresso-env")
                tx = SQLiteTx(conn)  # the document steps' view of this transaction
                migrate(tx, conn.execute, MIGRATIONS, current, target, COUNTERS_VERSION)
                mine = None
                if target > current:
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                                 (str(target),))
                    mine = self._seq.begin() if self._seq is not None else None
                try:
                    conn.execute("COMMIT")
                finally:
                    if mine is not None:
                        self._seq.end(mine)
                return max(current, target)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def close(self) -> None:
        self._turns.close()
        with self._lock:
            if self._seq is not None:
                self._seq.close()
                self._seq = None
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = _PerThread()
