"""SQLite storage: the embedded default. One file, WAL, write transactions that lock up front.

Each thread gets its own connection (sqlite3 connections must not be shared mid-transaction);
``BEGIN IMMEDIATE`` takes the write lock at the start of a write so two writers never deadlock
half-way, and ``busy_timeout`` makes a second writer wait instead of failing.

Change counters (``ChangeCounters``, see ``xpresso_env/storage/__init__.py``) live in the ``counters`` table,
kept by ``xpresso_env.storage.sql_counters`` as on PostgreSQL. A ``CommitSequence`` beside the database
gives the cache a store-wide ``change_stamp`` that costs a memory read. Migration 3 starts the counter of every (kind, group) that already holds documents at 1 (0 stays
"never written"); a cache cannot hold anything from before the upgrade, because a server whose
code needs schema 3 refuses to start on schema 2 (``check_ready``). Processes running an older
xpresso-env do not bump counters: stop them all before ``xpresso-env init`` upgrades the store.
"""
from __future__ import annotations

import fcntl
import json
import logging
import mmap
import os
import sqlite3
import struct
import threading
import time
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Optional, Sequence, TypeVar

from xpresso_env.config import Settings
from xpresso_env.core.errors import (
    AlreadyExists,
    NameConflict,
    NotFound,
    SchemaOutdated,
    StorageError,
    StorageUnavailable,
)
from xpresso_env.hookspecs import hookimpl
from xpresso_env.storage import STAMPED_KINDS, Doc, Key, StorageBackendInfo
from xpresso_env.storage.sql_counters import CounterTable, SchemaGate, TxCounters

log = logging.getLogger(__name__)

# Each entry upgrades the schema from version i to i+1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: documents and their index columns
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE docs (
               kind TEXT NOT NULL, id TEXT NOT NULL, grp TEXT, name TEXT,
               deleted INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL, body TEXT NOT NULL,
               PRIMARY KEY (kind, id))""",
        "CREATE UNIQUE INDEX docs_live_name ON docs (kind, grp, name) WHERE deleted = 0 AND name IS NOT NULL",
        "CREATE INDEX docs_by_group ON docs (kind, grp, created, id)",
    ),
    (  # 2: records visible in more groups than their owner's (shared images)
        """CREATE TABLE visibility (kind TEXT NOT NULL, id TEXT NOT NULL, grp TEXT NOT NULL,
               PRIMARY KEY (kind, grp, id))""",
    ),
    (  # 3: change counters per (kind, group); group '' for documents without one
        """CREATE TABLE counters (kind TEXT NOT NULL, grp TEXT NOT NULL, n INTEGER NOT NULL,
               PRIMARY KEY (kind, grp)) WITHOUT ROWID""",
        """INSERT INTO counters (kind, grp, n)
               SELECT kind, COALESCE(grp, ''), 1 FROM docs UNION SELECT kind, grp, 1 FROM visibility""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
COUNTERS_VERSION = 3  # the schema that has the counters table

_COLUMNS = "kind, id, grp, name, deleted, created, body"


def _translate(exc: sqlite3.Error) -> Exception:
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if "docs.name" in text:
            return NameConflict("A record with this name already exists in this group.")
        return AlreadyExists("A record with this id already exists.")
    if "locked" in text or "busy" in text:
        return StorageUnavailable("The SQLite database is busy, try again later.")
    if "no such table" in text:
        return SchemaOutdated()
    if isinstance(exc, sqlite3.OperationalError):
        return StorageUnavailable(f"SQLite error: {text}")
    return StorageError(f"SQLite error: {text}")


COUNTERS = CounterTable("counters", "?")

F = TypeVar("F", bound=Callable)


def _translating(fn: F) -> F:
    """Every sqlite3 error of a transaction method leaves as a domain error."""
    @wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
    return call  # type: ignore[return-value]


class SQLiteTx:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self.counters = TxCounters(COUNTERS, conn.execute)
        # whether this transaction wrote a STAMPED_KINDS document (it then moves the commit sequence)
        self.changed = False
        # (kind, id) -> (group, visible groups) of documents read or written in this transaction:
        # an update of a document just read needs no statement to learn what it replaces.
        self._known: dict[tuple[str, str], tuple[Optional[str], tuple[str, ...]]] = {}

    @_translating
    def versions(self, keys: Sequence[Key]) -> tuple[int, ...]:
        return self.counters.versions(keys)

    def _doc(self, row: tuple, visible: tuple[str, ...] = ()) -> Doc:
        kind, id_, grp, name, deleted, created, body = row
        return Doc(kind=kind, id=id_, group=grp, name=name, deleted=bool(deleted), created=created,
                   body=json.loads(body), visible=visible)

    @_translating
    def get(self, kind: str, id: str, *, lock: bool = False) -> Optional[Doc]:
        # A write transaction already holds SQLite's single writer lock, so `lock` needs nothing more.
        return self._one("kind = ? AND id = ?", (kind, id))

    def _one(self, where: str, params: tuple) -> Optional[Doc]:
        """The document matching ``where``, its visible groups read in the same statement: each
        statement costs a wait for the GIL when the server is busy. Group names cannot hold the
        separator (auth.NAME_RE)."""
        row = self._conn.execute(
            f"""SELECT {_COLUMNS}, (SELECT group_concat(grp, char(31)) FROM visibility v
                                   WHERE v.kind = docs.kind AND v.id = docs.id)
                FROM docs WHERE {where}""", params).fetchone()
        if row is None:
            return None
        doc = self._doc(row[:-1], tuple(sorted(row[-1].split("\x1f"))) if row[-1] else ())
        self._known[(doc.kind, doc.id)] = (doc.group, doc.visible)
        return doc

    def _write_visibility(self, doc: Doc, old: Optional[tuple[str, ...]]) -> None:
        """Set the document's visible groups; ``old`` is what it had (None for a new document)."""
        new = tuple(sorted(g for g in set(doc.visible) if g != doc.group))
        if old is not None and tuple(sorted(old)) == new:
            return
        if old:
            self._conn.execute("DELETE FROM visibility WHERE kind = ? AND id = ?", (doc.kind, doc.id))
        if new:
            self._conn.executemany("INSERT OR IGNORE INTO visibility (kind, id, grp) VALUES (?, ?, ?)",
                                   [(doc.kind, doc.id, g) for g in new])

    @_translating
    def insert(self, doc: Doc) -> None:
        self.changed |= doc.kind in STAMPED_KINDS  # first: even a statement that fails half-way counts
        self._conn.execute(f"INSERT INTO docs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (doc.kind, doc.id, doc.group, doc.name, int(doc.deleted), doc.created,
                            json.dumps(doc.body, separators=(",", ":"))))
        self._write_visibility(doc, None)
        self._known[(doc.kind, doc.id)] = (doc.group, doc.visible)
        self.counters.inserted(doc)

    @_translating
    def update(self, doc: Doc) -> None:
        self.changed |= doc.kind in STAMPED_KINDS  # first: even a statement that fails half-way counts
        known = self._known.get((doc.kind, doc.id))
        if known is None:
            row = self._conn.execute(
                """SELECT grp, (SELECT group_concat(grp, char(31)) FROM visibility v
                                WHERE v.kind = docs.kind AND v.id = docs.id)
                   FROM docs WHERE kind = ? AND id = ?""", (doc.kind, doc.id)).fetchone()
            if row is None:
                raise NotFound()
            known = (row[0], tuple(row[1].split("\x1f")) if row[1] else ())
        old_group, old_visible = known
        cur = self._conn.execute(
            "UPDATE docs SET grp = ?, name = ?, deleted = ?, created = ?, body = ? WHERE kind = ? AND id = ?",
            (doc.group, doc.name, int(doc.deleted), doc.created, json.dumps(doc.body, separators=(",", ":")),
             doc.kind, doc.id))
        if cur.rowcount == 0:
            raise NotFound()
        self._write_visibility(doc, old_visible)
        self._known[(doc.kind, doc.id)] = (doc.group, doc.visible)
        self.counters.updated(doc, old_group, list(old_visible))

    @_translating
    def query(self, kind: str, group: Optional[str] = None, *, include_deleted: bool = True) -> list[Doc]:
        live = "" if include_deleted else " AND deleted = 0"
        if group is None:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM docs WHERE kind = ?{live} ORDER BY created, id", (kind,)).fetchall()
        else:
            rows = self._conn.execute(
                f"""SELECT {_COLUMNS} FROM docs WHERE kind = ? AND grp = ?{live}
                    UNION ALL
                    SELECT {_COLUMNS} FROM docs WHERE kind = ? AND grp IS NOT ?{live} AND id IN
                        (SELECT id FROM visibility WHERE kind = ? AND grp = ?)
                    ORDER BY created, id""", (kind, group, kind, group, kind, group)).fetchall()
        # Every kind may carry visible groups (the codec only sets them on images, the contract allows all).
        extra = self._visible_of(kind, None if group is None else [r[1] for r in rows])
        return [self._doc(r, tuple(extra.get(r[1], ()))) for r in rows]

    def _visible_of(self, kind: str, ids: Optional[list[str]]) -> dict[str, list[str]]:
        """Visible groups by id: of the given ids only (a group's list must not read the whole
        store's visibility), or of every document of the kind when ids is None."""
        extra: dict[str, list[str]] = {}
        if ids is None:
            batches: list[Optional[list[str]]] = [None]
        else:
            batches = [ids[i:i + 500] for i in range(0, len(ids), 500)]  # under SQLite's parameter limit
        for batch in batches:
            if batch is None:
                cur = self._conn.execute("SELECT id, grp FROM visibility WHERE kind = ? ORDER BY grp", (kind,))
            else:
                marks = ", ".join("?" * len(batch))
                cur = self._conn.execute(f"SELECT id, grp FROM visibility WHERE kind = ? AND id IN ({marks}) "
                                         "ORDER BY grp", (kind, *batch))
            for id_, grp in cur:
                extra.setdefault(id_, []).append(grp)
        return extra

    @_translating
    def find_name(self, kind: str, group: str, name: str) -> Optional[Doc]:
        return self._one("kind = ? AND grp = ? AND name = ? AND deleted = 0", (kind, group, name))

    @_translating
    def purge(self, kind: str, id: str) -> bool:
        self.changed |= kind in STAMPED_KINDS
        row = self._conn.execute("DELETE FROM docs WHERE kind = ? AND id = ? RETURNING grp", (kind, id)).fetchone()
        if row is None:
            return False
        gone = [g for (g,) in self._conn.execute(
            "DELETE FROM visibility WHERE kind = ? AND id = ? RETURNING grp", (kind, id)).fetchall()]
        self._known.pop((kind, id), None)
        self.counters.updated(Doc(kind=kind, id=id, group=row[0], name=None, deleted=True, created="", body={}),
                              row[0], gone)
        return True


class _PerThread(threading.local):
    conn: Optional[sqlite3.Connection] = None


def commit_sequence_path(path: Path) -> Path:
    """The commit sequence's file beside the database at ``path``."""
    return path.with_name(path.name + "-commitseq")


class CommitSequence:
    """Two commit counters, *started* and *finished*, in a 16-byte file beside the database that
    every process maps into memory: a seqlock over the whole store.

    A writer bumps *started* while it holds SQLite's write lock, before COMMIT, and raises
    *finished* to its own number after COMMIT (or ROLLBACK). ``stamp()`` is a plain memory read,
    with no system call and no release of the GIL: it returns *started* when both are equal (no
    write in flight) and None otherwise. Only writes of ``STAMPED_KINDS`` documents take part (the
    probes' state, hundreds of writes a second, does not). Two equal non-None stamps mean that no
    such write started or committed in between, in any process, so the response cache can trust
    an answer it already checked without asking SQLite again. A writer that dies between the two
    steps leaves the counters unequal (the cache then asks SQLite, as it always may) until the
    next writer's *finished* catches up.
    """

    SIZE = 16

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < self.SIZE:
            os.ftruncate(self._fd, self.SIZE)  # zeros; done by every first opener, harmless twice
        self._map = mmap.mmap(self._fd, self.SIZE)
        self._lock = threading.Lock()  # flock does not exclude threads sharing this descriptor

    def _read(self) -> tuple[int, int]:
        return struct.unpack_from("<QQ", self._map, 0)

    def stamp(self) -> Optional[int]:
        first = self._read()
        if first != self._read() or first[0] != first[1]:  # torn by a writer, or a write in flight
            return None
        return first[0]

    @contextmanager
    def _exclusive(self) -> Iterator[tuple[int, int]]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield self._read()
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def begin(self) -> int:
        """Called holding SQLite's write lock: this write's number."""
        with self._exclusive() as (started, finished):
            mine = started + 1
            struct.pack_into("<Q", self._map, 0, mine)
        return mine

    def end(self, mine: int) -> None:
        with self._exclusive() as (started, finished):
            if mine > finished:
                struct.pack_into("<Q", self._map, 8, mine)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


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
    def _transaction(self, begin: str) -> Iterator[SQLiteTx]:
        conn = self._connect()
        try:
            conn.execute(begin)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        tx = SQLiteTx(conn)
        try:
            yield tx
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        mine = self._seq.begin() if tx.changed and self._seq is not None else None
        try:
            if tx.counters.pending and self._counters_gate.ready(lambda: self._schema_version(conn)):
                tx.counters.flush()
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise _translate(exc) from exc
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
        return self._transaction("BEGIN")

    @contextmanager
    def write(self) -> Iterator[SQLiteTx]:
        if not self._writers.acquire(timeout=self._busy_timeout_s):
            raise StorageUnavailable("The SQLite database is busy, try again later.")
        try:
            with self._transaction("BEGIN IMMEDIATE") as tx:
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
            raise _translate(exc) from exc

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
                for version in range(current, target):
                    for statement in MIGRATIONS[version]:
                        conn.execute(statement)
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
            raise _translate(exc) from exc

    def close(self) -> None:
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


def _factory(settings: Settings) -> SQLiteStorage:
    return SQLiteStorage(settings.storage_path("xpresso.sqlite3"), settings.storage.busy_timeout_s)


@hookimpl
def xpresso_storage_backends():
    return [StorageBackendInfo(name="sqlite", description="SQLite file (WAL); the embedded default",
                               factory=_factory)]
