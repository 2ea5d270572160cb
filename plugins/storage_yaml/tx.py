"""A transaction of the ``yaml`` backend: reads from one snapshot, and a write transaction's
journal of changes, which the store applies and writes out on a clean exit (and simply drops on
an exception). Every document given in is checked and copied, every document given out is a
copy: callers may change what they hold, the snapshot never changes with it.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

from xpresso_env.core.errors import AlreadyExists, NameConflict, NotFound, SchemaOutdated, StorageError
from xpresso_env.storage import Doc, Key

from . import format as fmt
from .snapshot import Snapshot

__all__ = ["YamlTx"]


def _clone(value: Any) -> Any:
    tp = type(value)
    if tp is dict:
        return {k: _clone(v) for k, v in value.items()}
    if tp is list:
        return [_clone(v) for v in value]
    return value


def _copy(doc: Doc) -> Doc:
    # Callers may change a body they were given; the snapshot must not change with it.
    return Doc(kind=doc.kind, id=doc.id, group=doc.group, name=doc.name, deleted=doc.deleted,
               created=doc.created, body=_clone(doc.body), visible=doc.visible)


def _checked_value(value: Any, where: str) -> Any:
    """A private copy of a body value, refusing what JSON (and so the file) cannot hold."""
    tp = type(value)
    if value is None or tp is bool or tp is int or tp is float:
        return value
    if isinstance(value, str):
        text = str.__str__(value)  # a str subclass (an enum) as plain text
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise StorageError(f"{where}: text that is not valid Unicode cannot be stored") from None
        return text
    if isinstance(value, (bool, int, float)):  # subclasses (IntEnum...) as plain values
        return bool(value) if isinstance(value, bool) else int(value) if isinstance(value, int) else float(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise StorageError(f"{where}: keys must be strings, got {k!r}")
            out[str.__str__(k)] = _checked_value(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_checked_value(v, where) for v in value]
    raise StorageError(f"{where}: {type(value).__name__} cannot be stored")


def _checked_doc(doc: Doc, version: int) -> Doc:
    if not fmt.storable_kind(doc.kind):
        raise StorageError(f"kind {doc.kind!r} cannot be stored in a YAML file")
    if not isinstance(doc.id, str) or not doc.id:
        raise StorageError("a document id must be a non-empty string")
    for label, value in (("group", doc.group), ("name", doc.name)):
        if value is not None and not isinstance(value, str):
            raise StorageError(f"a document {label} must be a string or None")
    if not isinstance(doc.created, str):
        raise StorageError("a document's created time must be a string")
    if not all(isinstance(g, str) for g in doc.visible):
        raise StorageError("visible groups must be strings")
    if doc.visible and version < 2:
        raise SchemaOutdated()
    if not isinstance(doc.body, dict):
        raise StorageError("a document body must be a mapping")
    return Doc(kind=doc.kind, id=doc.id, group=doc.group, name=doc.name, deleted=bool(doc.deleted),
               created=doc.created, body=_checked_value(doc.body, "body"),
               visible=fmt.normalize_visible(doc.visible, doc.group))


class YamlTx:
    """A transaction over one snapshot; a write transaction keeps its changes in a journal that
    the backend applies and writes out on a clean exit (and simply drops on an exception)."""

    def __init__(self, state: Snapshot, writable: bool):
        self._state = state
        self._writable = writable
        self.changes: dict[str, dict[str, Doc]] = {}  # kind -> id -> new version
        self._names: dict[tuple[str, Optional[str], str], str] = {}  # live names among the changes

    def _current(self, kind: str, id_: str) -> Optional[Doc]:
        changed = self.changes.get(kind)
        if changed is not None and id_ in changed:
            return changed[id_]
        return self._state.table(kind).by_id.get(id_)

    def _live_named(self, kind: str, group: Optional[str], name: str) -> Optional[Doc]:
        id_ = self._names.get((kind, group, name))
        if id_ is not None:
            return self.changes[kind][id_]
        table = self._state.table(kind)
        id_ = table.names.get((group, name))
        if id_ is None or id_ in self.changes.get(kind, ()):
            return None  # no such name, or that document was changed in this transaction
        return table.by_id[id_]

    def versions(self, keys: Sequence[Key]) -> tuple[int, ...]:
        # One counter for the whole store; a write transaction's own changes count as the next one,
        # which is what its commit will publish (writes are serialised).
        stamp = self._state.stamp + (1 if self.changes else 0)
        return (stamp,) * len(keys)

    def get(self, kind: str, id: str, *, lock: bool = False) -> Optional[Doc]:
        # A write transaction holds the file lock from start to commit, so `lock` needs nothing more.
        doc = self._current(kind, id)
        return None if doc is None else _copy(doc)

    def find_name(self, kind: str, group: str, name: str) -> Optional[Doc]:
        doc = self._live_named(kind, group, name)
        return None if doc is None else _copy(doc)

    def scan(self, kind: str, *, page: int = 500) -> Iterator[Doc]:
        # The whole store is in memory already (the YAML file is read whole): no pages to save.
        return iter(sorted(self.query(kind), key=lambda d: d.id))

    def query(self, kind: str, group: Optional[str] = None, *, include_deleted: bool = True) -> list[Doc]:
        table = self._state.table(kind)
        changed = self.changes.get(kind, {})
        if group is None:
            found = {**table.by_id, **changed}
        else:
            found = dict(table.by_group.get(group, {}))
            for id_ in table.visible_in.get(group, ()):
                found[id_] = table.by_id[id_]
            for id_, doc in changed.items():
                if doc is not None and (doc.group == group or group in doc.visible):
                    found[id_] = doc
                else:
                    found.pop(id_, None)
        docs = [d for d in found.values() if d is not None and (include_deleted or not d.deleted)]  # None: purged
        docs.sort(key=lambda d: (d.created, d.id))
        return [_copy(d) for d in docs]

    def insert(self, doc: Doc) -> None:
        doc = self._checked(doc)
        if self._current(doc.kind, doc.id) is not None:
            raise AlreadyExists("A record with this id already exists.")
        self._check_name(doc)
        self._put(doc)

    def update(self, doc: Doc) -> None:
        doc = self._checked(doc)
        if self._current(doc.kind, doc.id) is None:
            raise NotFound()
        self._check_name(doc)
        self._put(doc)

    def purge(self, kind: str, id: str) -> bool:
        if not self._writable:
            raise StorageError("cannot change documents in a read transaction")
        old = self._current(kind, id)
        if old is None:
            return False
        if old.name is not None and self._names.get((kind, old.group, old.name)) == id:
            del self._names[(kind, old.group, old.name)]
        self.changes.setdefault(kind, {})[id] = None  # type: ignore[assignment]  # applied as a removal
        return True

    def _checked(self, doc: Doc) -> Doc:
        if not self._writable:
            raise StorageError("cannot change documents in a read transaction")
        return _checked_doc(doc, self._state.version)

    def _check_name(self, doc: Doc) -> None:
        if doc.name is None or doc.deleted:
            return
        other = self._live_named(doc.kind, doc.group, doc.name)
        if other is not None and other.id != doc.id:
            raise NameConflict("A record with this name already exists in this group.")

    def _put(self, doc: Doc) -> None:
        changed = self.changes.setdefault(doc.kind, {})
        old = changed.get(doc.id)
        if old is not None and old.name is not None and self._names.get((old.kind, old.group, old.name)) == old.id:
            del self._names[(old.kind, old.group, old.name)]
        changed[doc.id] = doc
        if doc.name is not None and not doc.deleted:
            self._names[(doc.kind, doc.group, doc.name)] = doc.id

