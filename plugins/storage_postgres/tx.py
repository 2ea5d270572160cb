"""One PostgreSQL transaction's reads and writes of documents."""
from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from xpresso_env.core.errors import AlreadyExists, NameConflict, NotFound
from xpresso_env.storage import Doc, Key
from xpresso_env.storage.sql_counters import TxCounters

from .errors import translated
from .notices import payload
from .schema import COUNTERS

if TYPE_CHECKING:
    import psycopg

_COLUMNS = "d.kind, d.id, d.grp, d.name, d.deleted, d.created, d.body::text AS body"
_VISIBLE = "ARRAY(SELECT v.grp FROM xpresso_visibility v WHERE v.kind = d.kind AND v.id = d.id ORDER BY v.grp)"
_SELECT = f"SELECT {_COLUMNS}, {_VISIBLE} AS visible FROM xpresso_docs d"
# For lists: no per-row look-up of visible groups when the kind has none at all (NULL: none).
_SELECT_MANY = (f"SELECT {_COLUMNS}, CASE WHEN EXISTS (SELECT 1 FROM xpresso_visibility x WHERE x.kind = %(kind)s) "
                f"THEN {_VISIBLE} END AS visible FROM xpresso_docs d")

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


def _dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"))


class PostgresTx:
    """``execute``: the connection's ``execute``, each statement bounded (``guard.StatementGuard``)."""

    def __init__(self, execute: Callable[..., psycopg.Cursor], writable: bool):
        self._execute = execute
        self._writable = writable
        self.counters = TxCounters(COUNTERS, execute)
        self.notices: dict[str, None] = {}  # payloads to NOTIFY just before COMMIT (notices.py), in order

    def notify(self, topic: str, key: str = "") -> None:
        """Sent with the commit (``store.py``): a rolled back transaction tells nobody."""
        if self._writable:
            self.notices[payload(topic, key)] = None

    @staticmethod
    def _doc(row: tuple) -> Doc:
        kind, id_, grp, name, deleted, created, body, visible = row
        return Doc(kind=kind, id=id_, group=grp, name=name, deleted=bool(deleted), created=created,
                   body=json.loads(body), visible=tuple(visible or ()))

    def versions(self, keys: Sequence[Key]) -> tuple[int, ...]:
        with translated():
            return self.counters.versions(keys)

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        # A failed statement would abort the whole transaction; rolling back to a savepoint keeps
        # it usable, so a caller may catch NameConflict and go on, as with the other backends.
        self._execute("SAVEPOINT xpresso_stmt")
        try:
            yield
        except BaseException:
            self._execute("ROLLBACK TO SAVEPOINT xpresso_stmt")
            self._execute("RELEASE SAVEPOINT xpresso_stmt")
            raise
        self._execute("RELEASE SAVEPOINT xpresso_stmt")

    def get(self, kind: str, id: str, *, lock: bool = False) -> Optional[Doc]:
        sql = f"{_SELECT} WHERE d.kind = %s AND d.id = %s"
        if lock and self._writable:
            sql += " FOR UPDATE OF d"
        with translated():
            row = self._execute(sql, (kind, id)).fetchone()
        return None if row is None else self._doc(row)

    @staticmethod
    def _params(doc: Doc) -> dict[str, Any]:
        from psycopg.types.json import Json

        return {"kind": doc.kind, "id": doc.id, "grp": doc.group, "name": doc.name, "deleted": doc.deleted,
                "created": doc.created, "body": Json(doc.body, dumps=_dumps),
                "visible": sorted({g for g in doc.visible if g != doc.group})}

    def insert(self, doc: Doc) -> None:
        with translated():
            (inserted,) = self._execute(_INSERT, self._params(doc)).fetchone()
            if not inserted:
                taken = self._execute("SELECT 1 FROM xpresso_docs WHERE kind = %s AND id = %s",
                                           (doc.kind, doc.id)).fetchone()
                if taken:
                    raise AlreadyExists("A record with this id already exists.")
                raise NameConflict("A record with this name already exists in this group.")
        self.counters.inserted(doc)

    def update(self, doc: Doc) -> None:
        params = self._params(doc)
        # Only a live name can be refused (the partial unique index): other updates need no savepoint.
        guard = self._savepoint() if doc.name is not None and not doc.deleted else nullcontext()
        with translated(), guard:
            row = self._execute(_UPDATE, params).fetchone()
            if row is None:
                raise NotFound()
            if params["visible"]:
                self._execute("INSERT INTO xpresso_visibility (kind, id, grp) "
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
        with translated():
            return [self._doc(r) for r in self._execute(sql, params).fetchall()]

    def scan(self, kind: str, *, page: int = 500) -> Iterator[Doc]:
        # Keyset pages on the primary key (kind, id): one index range read a page, in this
        # transaction's snapshot, with no cursor left open between pages.
        last: Optional[str] = None
        while True:
            after = "" if last is None else " AND d.id > %(last)s"
            sql = f"{_SELECT_MANY} WHERE d.kind = %(kind)s{after} ORDER BY d.id LIMIT %(page)s"
            with translated():
                rows = self._execute(sql, {"kind": kind, "last": last, "page": page}).fetchall()
            for r in rows:
                yield self._doc(r)
            if len(rows) < page:
                return
            last = rows[-1][1]

    def find_name(self, kind: str, group: str, name: str) -> Optional[Doc]:
        with translated():
            row = self._execute(
                f"{_SELECT} WHERE d.kind = %s AND d.grp = %s AND d.name = %s AND NOT d.deleted",
                (kind, group, name)).fetchone()
        return None if row is None else self._doc(row)

    def purge(self, kind: str, id: str) -> bool:
        with translated():
            row = self._execute(
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
