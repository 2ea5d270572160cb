"""One SQLite transaction's reads and writes of documents, and sqlite3's errors as domain errors."""
from __future__ import annotations

import json
import sqlite3
from functools import wraps
from typing import Callable, Iterator, Optional, Sequence, TypeVar

from xpresso_env.core.errors import (
    AlreadyExists,
    NameConflict,
    NotFound,
    SchemaOutdated,
    StorageError,
    StorageUnavailable,
)
from xpresso_env.storage import STAMPED_KINDS, Doc, Key
from xpresso_env.storage.sql_counters import TxCounters

from .schema import COUNTERS

_COLUMNS = "kind, id, grp, name, deleted, created, body"
# One encoder for every stored body: json.dumps with an argument builds a new encoder per call
# (a visible share of the probes' writes, two a probe).
_encode_body = json.JSONEncoder(separators=(",", ":")).encode


def translate(exc: sqlite3.Error) -> Exception:
    """An sqlite3 error as the domain error the services understand."""
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


F = TypeVar("F", bound=Callable)


def _translating(fn: F) -> F:
    """Every sqlite3 error of a transaction method leaves as a domain error."""
    @wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            raise translate(exc) from exc
    return call  # type: ignore[return-value]


# The states of a transaction's BEGIN (see SQLiteTx): issued; still to issue before the first
# statement; skipped, its one statement yet to run; skipped, its one statement run.
_BEGUN, _PENDING, _ALONE, _SPENT = range(4)


class SQLiteTx:
    """``begin``: a BEGIN to issue before the first statement (None: the caller issued one). Told
    ``one_statement_left`` before any statement ran, the transaction skips BEGIN and COMMIT and its
    one statement is its own snapshot: a BEGIN and a COMMIT cost two of a read's three statements,
    each a release of the GIL that a busy server's other threads take (benchmarks/README.md)."""

    def __init__(self, conn: sqlite3.Connection, begin: Optional[str] = None):
        self._conn = conn
        self._begin = begin
        self._state = _BEGUN if begin is None else _PENDING
        self.counters = TxCounters(COUNTERS, self._execute)
        # whether this transaction wrote a STAMPED_KINDS document (it then moves the commit sequence)
        self.changed = False
        # (kind, id) -> (group, visible groups) of documents read or written in this transaction:
        # an update of a document just read needs no statement to learn what it replaces.
        self._known: dict[tuple[str, str], tuple[Optional[str], tuple[str, ...]]] = {}

    @property
    def begun(self) -> bool:
        """Whether BEGIN was issued (the transaction then ends with COMMIT or ROLLBACK)."""
        return self._state == _BEGUN

    def one_statement_left(self) -> None:
        """At most one statement follows: if none ran yet, it runs alone, without BEGIN (a second
        one is refused: it would read another snapshot)."""
        if self._state == _PENDING:
            self._state = _ALONE

    def _execute(self, sql: str, params: Sequence = ()) -> sqlite3.Cursor:
        state = self._state
        if state != _BEGUN:
            if state == _PENDING:
                self._conn.execute(self._begin)  # type: ignore[arg-type]
                self._state = _BEGUN
            elif state == _ALONE:
                self._state = _SPENT
            else:
                raise RuntimeError("a one-statement read transaction ran a second statement")
        return self._conn.execute(sql, params)

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
        separator (core.wire.ACCOUNT_NAME)."""
        row = self._execute(
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
            self._execute("DELETE FROM visibility WHERE kind = ? AND id = ?", (doc.kind, doc.id))
        if new:
            self._conn.executemany("INSERT OR IGNORE INTO visibility (kind, id, grp) VALUES (?, ?, ?)",
                                   [(doc.kind, doc.id, g) for g in new])

    @_translating
    def insert(self, doc: Doc) -> None:
        self.changed |= doc.kind in STAMPED_KINDS  # first: even a statement that fails half-way counts
        self._execute(f"INSERT INTO docs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (doc.kind, doc.id, doc.group, doc.name, int(doc.deleted), doc.created,
                            _encode_body(doc.body)))
        self._write_visibility(doc, None)
        self._known[(doc.kind, doc.id)] = (doc.group, doc.visible)
        self.counters.inserted(doc)

    @_translating
    def update(self, doc: Doc) -> None:
        self.changed |= doc.kind in STAMPED_KINDS  # first: even a statement that fails half-way counts
        known = self._known.get((doc.kind, doc.id))
        if known is None:
            row = self._execute(
                """SELECT grp, (SELECT group_concat(grp, char(31)) FROM visibility v
                                WHERE v.kind = docs.kind AND v.id = docs.id)
                   FROM docs WHERE kind = ? AND id = ?""", (doc.kind, doc.id)).fetchone()
            if row is None:
                raise NotFound()
            known = (row[0], tuple(row[1].split("\x1f")) if row[1] else ())
        old_group, old_visible = known
        cur = self._execute(
            "UPDATE docs SET grp = ?, name = ?, deleted = ?, created = ?, body = ? WHERE kind = ? AND id = ?",
            (doc.group, doc.name, int(doc.deleted), doc.created, _encode_body(doc.body),
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
            rows = self._execute(
                f"SELECT {_COLUMNS} FROM docs WHERE kind = ?{live} ORDER BY created, id", (kind,)).fetchall()
        else:
            rows = self._execute(
                f"""SELECT {_COLUMNS} FROM docs WHERE kind = ? AND grp = ?{live}
                    UNION ALL
                    SELECT {_COLUMNS} FROM docs WHERE kind = ? AND grp IS NOT ?{live} AND id IN
                        (SELECT id FROM visibility WHERE kind = ? AND grp = ?)
                    ORDER BY created, id""", (kind, group, kind, group, kind, group)).fetchall()
        # Every kind may carry visible groups (the codec only sets them on images, the contract allows all).
        extra = self._visible_of(kind, None if group is None else [r[1] for r in rows])
        return [self._doc(r, tuple(extra.get(r[1], ()))) for r in rows]

    def scan(self, kind: str, *, page: int = 500) -> Iterator[Doc]:
        # Keyset pages on the primary key (kind, id): each page is one index range read, and no
        # statement stays open between pages (the caller reads other documents meanwhile).
        last: Optional[str] = None
        while True:
            try:
                if last is None:
                    rows = self._execute(f"SELECT {_COLUMNS} FROM docs WHERE kind = ? ORDER BY id LIMIT ?",
                                         (kind, page)).fetchall()
                else:
                    rows = self._execute(f"SELECT {_COLUMNS} FROM docs WHERE kind = ? AND id > ? ORDER BY id LIMIT ?",
                                         (kind, last, page)).fetchall()
                extra = self._visible_of(kind, [r[1] for r in rows])
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            for r in rows:
                yield self._doc(r, tuple(extra.get(r[1], ())))
            if len(rows) < page:
                return
            last = rows[-1][1]

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
                cur = self._execute("SELECT id, grp FROM visibility WHERE kind = ? ORDER BY grp", (kind,))
            else:
                marks = ", ".join("?" * len(batch))
                cur = self._execute(f"SELECT id, grp FROM visibility WHERE kind = ? AND id IN ({marks}) "
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
        row = self._execute("DELETE FROM docs WHERE kind = ? AND id = ? RETURNING grp", (kind, id)).fetchone()
        if row is None:
            return False
        gone = [g for (g,) in self._execute(
            "DELETE FROM visibility WHERE kind = ? AND id = ? RETURNING grp", (kind, id)).fetchall()]
        self._known.pop((kind, id), None)
        self.counters.updated(Doc(kind=kind, id=id, group=row[0], name=None, deleted=True, created="", body={}),
                              row[0], gone)
        return True
