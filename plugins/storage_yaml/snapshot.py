"""The ``yaml`` backend's data in memory: an immutable snapshot of the file, with per-kind indexes
(id, owner group, visible groups, live names), so reads are dictionary look-ups and never wait
for a writer. A write transaction's changes become a new snapshot (:meth:`Table.applied`); a
loaded file becomes one by :func:`build_snapshot`, which also holds the file to its rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from xpresso_env.storage import Doc

from . import format as fmt

__all__ = ["Table", "Snapshot", "EMPTY", "build_snapshot"]


class Table:
    """The documents of one kind with their indexes. Shared between snapshots: never changed
    once published, except ``texts``, a cache of rendered records that only ever grows."""

    __slots__ = ("by_id", "by_group", "visible_in", "names", "texts")

    def __init__(self) -> None:
        self.by_id: dict[str, Doc] = {}
        self.by_group: dict[Optional[str], dict[str, Doc]] = {}  # owner group -> id -> doc
        self.visible_in: dict[str, set[str]] = {}  # group -> ids of others' docs visible in it
        self.names: dict[tuple[Optional[str], str], str] = {}  # (group, name) -> id, live docs only
        self.texts: dict[str, str] = {}  # id -> the record's YAML list item

    def add(self, doc: Doc) -> None:
        self.by_id[doc.id] = doc
        self.by_group.setdefault(doc.group, {})[doc.id] = doc
        for g in doc.visible:
            self.visible_in.setdefault(g, set()).add(doc.id)
        if doc.name is not None and not doc.deleted:
            self.names[(doc.group, doc.name)] = doc.id

    def applied(self, changes: dict[str, Doc]) -> "Table":
        """A new table with the changes (already checked by the transaction) applied."""
        t = Table()
        t.by_id, t.names, t.texts = dict(self.by_id), dict(self.names), dict(self.texts)
        t.by_group, t.visible_in = dict(self.by_group), dict(self.visible_in)
        own_groups: set[Optional[str]] = set()
        own_vis: set[str] = set()

        def group_docs(g: Optional[str]) -> dict[str, Doc]:
            if g not in own_groups:
                t.by_group[g] = dict(t.by_group.get(g, {}))
                own_groups.add(g)
            return t.by_group[g]

        def visible_ids(g: str) -> set[str]:
            if g not in own_vis:
                t.visible_in[g] = set(t.visible_in.get(g, ()))
                own_vis.add(g)
            return t.visible_in[g]

        for id_, doc in changes.items():
            old = t.by_id.get(id_)
            if old is not None:
                group_docs(old.group).pop(id_, None)
                for g in old.visible:
                    visible_ids(g).discard(id_)
                if t.names.get((old.group, old.name)) == id_:  # type: ignore[arg-type]
                    del t.names[(old.group, old.name)]  # type: ignore[arg-type]
                t.texts.pop(id_, None)
            if doc is None:  # purged
                t.by_id.pop(id_, None)
                continue
            t.by_id[id_] = doc
            group_docs(doc.group)[id_] = doc
            for g in doc.visible:
                visible_ids(g).add(id_)
            if doc.name is not None and not doc.deleted:
                t.names[(doc.group, doc.name)] = id_
        return t

    def without_texts(self) -> "Table":
        t = Table()
        t.by_id, t.by_group, t.visible_in, t.names = self.by_id, self.by_group, self.visible_in, self.names
        return t


EMPTY = Table()


@dataclass(frozen=True)
class Snapshot:
    version: int  # 0: no file
    tables: dict[str, Table]
    key: Optional[tuple]  # (mtime_ns, size, inode, commit counter) of the file this snapshot is; None: no file
    stamp: int = 0  # the change counter of every key (see the package docstring); set by the store

    def has_docs(self) -> bool:
        return any(t.by_id for t in self.tables.values())

    def table(self, kind: str) -> Table:
        return self.tables.get(kind, EMPTY)


def build_snapshot(doc: Any, key: tuple, old: Optional[Snapshot]) -> Snapshot:
    """Index a parsed document; RecordError for what breaks the format or a uniqueness rule."""
    if not isinstance(doc, dict):
        raise fmt.RecordError(fmt.VERSION_KEY, None, "the file must be a mapping: `schema_version: N` "
                              "and one list of records per kind (the file is empty or not such a mapping)")
    version = doc.get(fmt.VERSION_KEY)
    if type(version) is not int or version < 1:
        raise fmt.RecordError(fmt.VERSION_KEY, None, "`schema_version` is missing or not a whole number >= 1")
    reuse = old is not None and old.version == version
    tables: dict[str, Table] = {}
    for key_, items in doc.items():
        if key_ == fmt.VERSION_KEY:
            continue
        if not isinstance(key_, str):
            raise fmt.RecordError(str(key_), None, "keys of the file are kinds of records (`harnesses`...)")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise fmt.RecordError(key_, None, "must be a list of records")
        kind = fmt.key_kind(key_)
        if kind in tables:
            raise fmt.RecordError(key_, None, f"a second list of {kind} records")
        table = tables[kind] = Table()
        previous = old.table(kind) if reuse and old is not None else EMPTY
        for i, rec in enumerate(items):
            d = fmt.from_record(kind, rec, version, key_, i)
            if d.id in table.by_id:
                raise fmt.RecordError(key_, i, f"id {d.id} appears twice")
            if d.name is not None and not d.deleted and (d.group, d.name) in table.names:
                raise fmt.RecordError(key_, i, f"a second live record named {d.name!r} in group {d.group!r}")
            prev = previous.by_id.get(d.id)
            if prev is not None and prev == d:
                d = prev  # unchanged: keep its rendered text
                if d.id in previous.texts:
                    table.texts[d.id] = previous.texts[d.id]
            table.add(d)
    return Snapshot(version, tables, key)
