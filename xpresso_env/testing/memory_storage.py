"""A documents-only storage backend kept in memory: the smallest plugin that keeps the documents
interface of ``xpresso_env/storage/__init__.py``, and claims no change counters.

It shows what a third-party storage plugin must write, proves that the conformance suite works
for a backend without counters (``tests/storage/test_memory_conformance.py``), and lets API tests
run the service on a store without them (the response cache is then off). Not for production:
the data lives in one process and is gone when it ends.

Register a :class:`MemoryStoragePlugin` object and choose it by name::

    pm = make_plugin_manager(extra_plugins=[MemoryStoragePlugin()])
    settings = load_settings(env={}, overrides={"storage": {"backend": "memory"}})

Every backend object the plugin object makes shares its one store, as backend objects on one
file or database do.
"""
from __future__ import annotations

import copy
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

from ..config import Settings
from ..core.errors import AlreadyExists, NameConflict, NotFound, SchemaOutdated, StorageError, StorageUnavailable
from ..hookspecs import hookimpl
from ..storage import Doc, StorageBackendInfo
from ..storage.identity_upgrade import upgrade_identity

SCHEMA_VERSION = 2  # 2: identity is not a name (storage/identity_upgrade.py)
IDENTITY_VERSION = 2
NAME = "memory"

DocKey = tuple[str, str]  # (kind, id)


def _copy(doc: Doc) -> Doc:
    # Callers may change a body they were given or gave: the store must not change with it.
    return Doc(kind=doc.kind, id=doc.id, group=doc.group, name=doc.name, deleted=doc.deleted,
               created=doc.created, body=copy.deepcopy(doc.body),
               visible=tuple(sorted({g for g in doc.visible if g != doc.group})))


class MemoryStore:
    """The documents of one store. ``docs`` is replaced whole by each commit and never changed
    once published, so a read transaction simply keeps the one it started with."""

    def __init__(self) -> None:
        self.write_lock = threading.Lock()  # one write transaction at a time
        self.version = 0  # the schema version; 0: not initialised
        self.docs: dict[DocKey, Doc] = {}


class MemoryTx:
    """A transaction over one published ``docs``; a write transaction keeps its changes aside
    until the commit."""

    def __init__(self, docs: dict[DocKey, Doc], writable: bool):
        self._docs = docs
        self._writable = writable
        self.changes: dict[DocKey, Doc] = {}

    def _current(self, kind: str, id_: str) -> Optional[Doc]:
        key = (kind, id_)
        return self.changes[key] if key in self.changes else self._docs.get(key)

    def _all(self, kind: str) -> list[Doc]:
        merged = {**{k: d for k, d in self._docs.items() if k[0] == kind},
                  **{k: d for k, d in self.changes.items() if k[0] == kind}}
        return [d for d in merged.values() if d is not None]  # None: purged in this transaction

    def get(self, kind: str, id: str, *, lock: bool = False) -> Optional[Doc]:
        # A write transaction holds the store's write lock from start to commit: `lock` needs nothing more.
        doc = self._current(kind, id)
        return None if doc is None else _copy(doc)

    def insert(self, doc: Doc) -> None:
        self._check_writable()
        if self._current(doc.kind, doc.id) is not None:
            raise AlreadyExists("A record with this id already exists.")
        self._check_name(doc)
        self.changes[(doc.kind, doc.id)] = _copy(doc)

    def update(self, doc: Doc) -> None:
        self._check_writable()
        if self._current(doc.kind, doc.id) is None:
            raise NotFound()
        self._check_name(doc)
        self.changes[(doc.kind, doc.id)] = _copy(doc)

    def query(self, kind: str, group: Optional[str] = None, *, include_deleted: bool = True) -> list[Doc]:
        docs = [d for d in self._all(kind)
                if (group is None or d.group == group or group in d.visible) and (include_deleted or not d.deleted)]
        return [_copy(d) for d in sorted(docs, key=lambda d: (d.created, d.id))]

    def scan(self, kind: str, *, page: int = 500) -> Iterator[Doc]:
        return iter(sorted(self.query(kind), key=lambda d: d.id))  # in memory already: no pages

    def find_name(self, kind: str, group: str, name: str) -> Optional[Doc]:
        doc = self._live_named(kind, group, name)
        return None if doc is None else _copy(doc)

    def purge(self, kind: str, id: str) -> bool:
        self._check_writable()
        if self._current(kind, id) is None:
            return False
        self.changes[(kind, id)] = None  # type: ignore[assignment]  # a tombstone, dropped at commit
        return True

    def _live_named(self, kind: str, group: Optional[str], name: str) -> Optional[Doc]:
        return next((d for d in self._all(kind) if d.group == group and d.name == name and not d.deleted), None)

    def _check_writable(self) -> None:
        if not self._writable:
            raise StorageError("cannot change documents in a read transaction")

    def _check_name(self, doc: Doc) -> None:
        if doc.name is None or doc.deleted:
            return
        other = self._live_named(doc.kind, doc.group, doc.name)
        if other is not None and other.id != doc.id:
            raise NameConflict("A record with this name already exists in this group.")


class MemoryStorage:
    """A backend object on a :class:`MemoryStore`."""

    name = NAME
    schema_version = SCHEMA_VERSION

    def __init__(self, store: MemoryStore):
        self._store = store
        self._closed = False

    def _open_store(self) -> MemoryStore:
        if self._closed:
            raise StorageUnavailable("The memory storage is closed.")
        return self._store

    def init(self, target_version: Optional[int] = None) -> int:
        target = SCHEMA_VERSION if target_version is None else target_version
        if not 0 <= target <= SCHEMA_VERSION:
            raise StorageError(f"schema version {target} is unknown (this code knows 1 to {SCHEMA_VERSION})")
        store = self._open_store()
        with store.write_lock:
            if store.version < IDENTITY_VERSION <= target:
                tx = MemoryTx(store.docs, writable=True)
                upgrade_identity(tx)
                docs = {**store.docs, **tx.changes}
                store.docs = {k: d for k, d in docs.items() if d is not None}
            store.version = max(store.version, target)
            return store.version

    def current_version(self) -> int:
        return self._open_store().version

    @contextmanager
    def read(self) -> Iterator[MemoryTx]:
        store = self._open_store()
        if store.version == 0:
            raise SchemaOutdated()
        yield MemoryTx(store.docs, writable=False)

    @contextmanager
    def write(self) -> Iterator[MemoryTx]:
        store = self._open_store()
        with store.write_lock:
            if store.version == 0:
                raise SchemaOutdated()
            tx = MemoryTx(store.docs, writable=True)
            yield tx  # an exception leaves here: the changes are dropped
            if tx.changes:
                docs = {**store.docs, **tx.changes}
                store.docs = {k: d for k, d in docs.items() if d is not None}  # purged documents go

    def close(self) -> None:
        self._closed = True


class MemoryStoragePlugin:
    """Announces the ``memory`` backend; the backend objects it makes share its one store."""

    def __init__(self) -> None:
        self._store = MemoryStore()

    def make_backend(self, settings: Settings) -> MemoryStorage:
        return MemoryStorage(self._store)

    @hookimpl
    def xpresso_storage_backends(self) -> list[StorageBackendInfo]:
        return [StorageBackendInfo(name=NAME, description="in memory, one process, documents only (for tests)",
                                   factory=self.make_backend)]
