"""Change-counter bookkeeping for the SQL backends (sqlite, postgres), written once.

The contract is in ``xpresso_env/storage/__init__.py`` (``ChangeCounters``). Here is how a SQL backend keeps
it, with a table ``(kind TEXT, grp TEXT, n INTEGER)`` whose primary key is (kind, grp):

* A write transaction notes the keys its inserts and updates touch (``TxCounters.inserted`` and
  ``updated``): (kind, group or "") and (kind, g) for every visible group g, of the document as it
  was and as it is now, since the groups that lose a document must see a change as much as those
  that gain it.
* The backend calls ``TxCounters.flush`` as the last statement before COMMIT, when the store has
  the table (``SchemaGate``): each key is bumped once, in the same transaction as the change, so
  a reader sees both or neither. On PostgreSQL this holds the counter rows' locks for the commit
  only, so writers of one group queue for a moment, not for a whole transaction, and the sorted
  order keeps two transactions from deadlocking on them.
* ``TxCounters.versions`` reads counters (0 for a key never written); in a write transaction it
  flushes first, so the transaction sees its own bumps as it sees its own writes.

The SQL is the same for both dialects; only the driver's placeholder differs (``CounterTable.mark``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

from . import Doc, Key

# Keys per bump statement: two parameters each, under SQLite's oldest limit of 999 parameters.
BUMP_CHUNK = 400


def counter_keys(kind: str, group: Optional[str], visible: Iterable[str]) -> set[Key]:
    """The counter keys a document's change bumps: its owner group's and its visible groups'."""
    return {(kind, group or "")} | {(kind, g) for g in visible}


@dataclass(frozen=True)
class CounterTable:
    """The counters table of one backend and its driver's parameter placeholder."""

    name: str
    mark: str  # "?" (sqlite3) or "%s" (psycopg)

    def bump(self, keys: Sequence[Key]) -> tuple[str, list[str]]:
        """One statement adding 1 to each key's counter (a key never written starts at 1)."""
        rows = ", ".join([f"({self.mark}, {self.mark}, 1)"] * len(keys))
        sql = (f"INSERT INTO {self.name} (kind, grp, n) VALUES {rows} "
               f"ON CONFLICT (kind, grp) DO UPDATE SET n = {self.name}.n + 1")
        return sql, [part for key in keys for part in key]

    def read(self, keys: Sequence[Key]) -> tuple[str, list[Any]]:
        """One statement reading the keys' counters in the order given."""
        rows = ", ".join([f"({self.mark}, {self.mark}, {self.mark})"] * len(keys))
        sql = (f"WITH k (i, kind, grp) AS (VALUES {rows}) SELECT COALESCE(c.n, 0) FROM k "
               f"LEFT JOIN {self.name} c ON c.kind = k.kind AND c.grp = k.grp ORDER BY k.i")
        return sql, [part for i, (kind, grp) in enumerate(keys) for part in (i, kind, grp)]


class TxCounters:
    """One transaction's side of the counters. ``execute(sql, params)`` runs a statement on the
    transaction's connection and returns a cursor (``sqlite3`` and ``psycopg`` alike)."""

    def __init__(self, table: CounterTable, execute: Callable[[str, Sequence[Any]], Any]):
        self._table = table
        self._execute = execute
        self._touched: set[Key] = set()  # keys to bump at commit

    def inserted(self, doc: Doc) -> None:
        self._touched |= counter_keys(doc.kind, doc.group, doc.visible)

    def updated(self, doc: Doc, old_group: Optional[str], old_visible: Iterable[str]) -> None:
        self._touched |= counter_keys(doc.kind, doc.group, doc.visible)
        self._touched |= counter_keys(doc.kind, old_group, old_visible)

    @property
    def pending(self) -> bool:
        return bool(self._touched)

    def flush(self) -> None:
        """Bump every touched key once, in sorted order (the backend calls it before COMMIT)."""
        if not self._touched:
            return
        keys = sorted(self._touched)
        for start in range(0, len(keys), BUMP_CHUNK):
            self._execute(*self._table.bump(keys[start:start + BUMP_CHUNK]))
        self._touched.clear()

    def versions(self, keys: Sequence[Key]) -> tuple[int, ...]:
        if not keys:
            return ()
        self.flush()
        return tuple(row[0] for row in self._execute(*self._table.read(keys)).fetchall())


class SchemaGate:
    """Whether the store has reached the schema with the counters table. Writes to an older
    schema (tools and tests writing before `init` upgrades it) bump nothing: the upgrade starts
    the counters. Only a yes is remembered: another process may upgrade the store at any time."""

    def __init__(self, counters_version: int):
        self._counters_version = counters_version
        self._ready = False

    def ready(self, schema_version: Callable[[], Optional[int]]) -> bool:
        """``schema_version()`` reads the store's version (None: not recorded)."""
        if not self._ready:
            version = schema_version()
            self._ready = version is not None and version >= self._counters_version
        return self._ready


def migrate(tx: Any, execute: Callable[[str], Any], migrations: Sequence[Sequence[Any]], current: int,
            target: int, counters_version: int) -> None:
    """The schema steps from ``current`` to ``target``, in the caller's transaction: SQL text run
    with ``execute``, a callable (a document step such as ``identity_upgrade``) given ``tx``, the
    backend's document view of that transaction; then the counters those steps bumped, once the
    schema has the counters table."""
    for version in range(current, target):
        for step in migrations[version]:
            if callable(step):
                step(tx)
            else:
                execute(step)
    if tx.counters.pending and max(current, target) >= counters_version:
        tx.counters.flush()
