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

from .commit_group import Group, Groups
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
        # ... and, while a leader's group commits (it no longer holds the writer lock), the next
        # leader waits here: its BEGIN IMMEDIATE would wait in SQLite's busy handler otherwise.
        self._leading = threading.Lock()
        self._groups = Groups()
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
    def _read_transaction(self) -> Iterator[SQLiteTx]:
        """BEGIN waits for the first statement, and is skipped when the reader says that one
        statement is all it reads (``SQLiteTx.one_statement_left``)."""
        conn = self._connect()
        tx = SQLiteTx(conn, "BEGIN")
        try:
            yield tx
        except BaseException:
            if tx.begun:
                conn.execute("ROLLBACK")
            raise
        if not tx.begun:
            return  # nothing or one statement read, in autocommit: nothing to end
        try:
            self._flush_counters(conn, tx)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise translate(exc) from exc
        self._commit(conn, tx.changed)

    def _flush_counters(self, conn: sqlite3.Connection, tx: SQLiteTx) -> None:
        if tx.counters.pending and self._counters_gate.ready(lambda: self._schema_version(conn)):
            tx.counters.flush()

    def _commit(self, conn: sqlite3.Connection, changed: bool) -> None:
        """COMMIT (ROLLBACK if it fails); ``changed``: a STAMPED_KINDS document was written, so the
        commit sequence moves around it."""
        mine = self._seq.begin() if changed and self._seq is not None else None
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _roll_back(conn)
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
        return self._read_transaction()

    @contextmanager
    def write(self) -> Iterator[SQLiteTx]:
        """A write transaction: this process's writers run their blocks one at a time; a writer
        that finds a group open joins it, else it leads one (commit_group.py)."""
        self._groups.queue()
        try:
            got = self._writers.acquire(timeout=self._busy_timeout_s)
        finally:
            self._groups.unqueue()
        if not got:
            raise StorageUnavailable("The SQLite database is busy, try again later.")
        group = self._groups.join()
        if group is None:
            with self._lead() as tx:
                yield tx
        else:
            with self._member(group) as tx:
                yield tx

    @contextmanager
    def _lead(self) -> Iterator[SQLiteTx]:
        """Entered holding the writer lock: begin, run the block, then, if writers of this process
        wait, let them run theirs in this transaction before the one COMMIT."""
        holds_writers = True
        try:
            if not self._leading.acquire(timeout=self._busy_timeout_s):  # the group before commits
                raise StorageUnavailable("The SQLite database is busy, try again later.")
            try:
                with self._turns.turn():
                    conn = self._connect()
                    _control(conn, "BEGIN IMMEDIATE")
                    tx = SQLiteTx(conn)
                    with _undone_on_failure(conn, "ROLLBACK"):
                        yield tx
                        self._flush_counters(conn, tx)
                    group = Group(conn, changed=tx.changed)
                    try:  # whatever happens from here, the members hear of it
                        waiting = self._groups.waiting()
                        if waiting:
                            self._groups.open(group)
                            self._writers.release()
                            holds_writers = False
                            self._groups.close(group, waiting, self._busy_timeout_s)
                        self._commit(conn, group.changed)
                    except BaseException as exc:
                        group.error = exc
                        _roll_back(conn)  # nothing to undo after a failed COMMIT, which rolled back
                        raise
                    finally:
                        group.done.set()
            finally:
                self._leading.release()
        finally:
            if holds_writers:
                self._writers.release()

    @contextmanager
    def _member(self, group: Group) -> Iterator[SQLiteTx]:
        """Entered holding the writer lock, counted in ``group``: run the block in the group's
        transaction inside a SAVEPOINT, hand the lock on, and return once the group committed."""
        conn = group.conn
        tx = SQLiteTx(conn)
        changed = False
        try:
            _control(conn, "SAVEPOINT xpresso_member")
            with _undone_on_failure(conn, "ROLLBACK TO xpresso_member", "RELEASE xpresso_member"):
                yield tx
                self._flush_counters(conn, tx)
            _control(conn, "RELEASE xpresso_member")
            changed = tx.changed
        finally:
            self._groups.left(group, changed)
            self._writers.release()
        group.done.wait()
        if group.error is not None:
            raise StorageUnavailable(f"The write was not committed: {group.error}")

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


def _control(conn: sqlite3.Connection, statement: str) -> None:
    """A transaction-control statement (BEGIN, SAVEPOINT, RELEASE); its failure as a domain error."""
    try:
        conn.execute(statement)
    except sqlite3.Error as exc:
        raise translate(exc) from exc


@contextmanager
def _undone_on_failure(conn: sqlite3.Connection, *statements: str) -> Iterator[None]:
    """A block whose failure runs ``statements`` (the undo) and leaves as a domain error when
    sqlite3 raised it."""
    try:
        yield
    except BaseException as exc:
        _roll_back(conn, *statements)
        if isinstance(exc, sqlite3.Error):
            raise translate(exc) from exc
        raise


def _roll_back(conn: sqlite3.Connection, *statements: str) -> None:
    """Undo (``ROLLBACK``, or ``statements``) on the way out of a failure, which it must not hide:
    after some errors SQLite has already rolled the whole transaction back."""
    for statement in statements or ("ROLLBACK",):
        try:
            conn.execute(statement)
        except sqlite3.Error:
            return
