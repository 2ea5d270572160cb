"""The storage protocol every storage plugin implements.

Backends store *documents*: a JSON-able ``body`` plus index columns (kind, id, owning group,
name, deleted flag, creation time, extra visible groups). Records are turned into documents in
``codec.py``. The contract a backend must keep:

* ``with backend.write() as tx:`` commits on a clean exit and rolls back on an exception;
  ``read()`` gives a consistent snapshot. Writes from any process are seen by every read that
  starts after the commit.
* ``id`` is unique per kind (``AlreadyExists``); ``name``, when not None, is unique among the live
  (not deleted) documents of the same (kind, group) (``NameConflict``), enforced by the backend
  itself so that several processes cannot break it.
* ``query`` returns documents ordered by (created, id). With a group, it returns those owned by
  the group or listing it in ``visible``.
* Change counters: every committed insert/update of a document bumps the counter of
  (kind, group or "") and of (kind, g) for every g in its ``visible`` groups (old and new), in
  the same transaction as the change, so a reader never sees new data with an old counter, nor a
  new counter with old data. ``versions()`` reads counters (0 for a key never written). A rolled
  back transaction bumps nothing. Counters let the API cache responses without ever serving
  stale data, also across processes. A backend may bump more than asked, never less: one that
  keeps a single counter for the whole store says so with a class attribute
  ``versions_store_wide = True`` (yaml), and its numbers are only comparable within one backend
  object (the cache that uses them lives in one process).
* An unreachable backend raises ``StorageUnavailable``; a backend error never leaks as anything
  but a ``xpresso_env.errors`` exception.

``xpresso_env.testing.storage_suite`` is the conformance suite that holds backends to this.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager, Iterable, Optional, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Doc:
    kind: str
    id: str
    group: Optional[str]
    name: Optional[str]
    deleted: bool
    created: str  # wire-format UTC time; sorts as text
    body: dict[str, Any]
    visible: tuple[str, ...] = field(default=())

    def with_body(self, **changes: Any) -> "Doc":
        return replace(self, body={**self.body, **changes})


@runtime_checkable
class Tx(Protocol):
    def get(self, kind: str, id: str, *, lock: bool = False) -> Optional[Doc]:
        """The document, or None. ``lock`` (in a write transaction) holds it against concurrent
        writers until commit: the basis of claim-style updates (the build queue)."""

    def insert(self, doc: Doc) -> None:
        """Add a new document. AlreadyExists on a duplicate id, NameConflict on a duplicate name."""

    def update(self, doc: Doc) -> None:
        """Replace an existing document whole. NotFound if absent, NameConflict as for insert."""

    def query(self, kind: str, group: Optional[str] = None, *, include_deleted: bool = True) -> list[Doc]:
        """Documents of a kind (of a group, if given), ordered by (created, id)."""

    def find_name(self, kind: str, group: str, name: str) -> Optional[Doc]:
        """The live document of that kind and group with that name, or None."""

    def versions(self, keys: Sequence[tuple[str, str]]) -> tuple[int, ...]:
        """The change counters of (kind, group) keys, group "" for documents without a group."""


@runtime_checkable
class StorageBackend(Protocol):
    name: str
    schema_version: int  # the newest schema this code knows

    def init(self, target_version: Optional[int] = None) -> int:
        """Create or upgrade the schema (to ``target_version``, default the newest); idempotent.
        Returns the version now in place."""

    def current_version(self) -> int:
        """The schema version in place; 0 when not initialised."""

    def read(self) -> ContextManager[Tx]:
        ...

    def versions(self, keys: Sequence[tuple[str, str]]) -> tuple[int, ...]:
        """``Tx.versions`` as one consistent read outside a transaction (the cache's hot path:
        a backend may answer it more cheaply than a whole read transaction)."""

    def write(self) -> ContextManager[Tx]:
        ...

    def change_stamp(self) -> Optional[int]:
        """A store-wide stamp read without a query, or None (unknown, or a write in flight).
        Two equal non-None stamps promise that no write started or committed in between, in any
        process. Optional: a backend that cannot promise it returns None (postgres, yaml)."""

    def close(self) -> None:
        ...


class QueryVersions:
    """The plain answers to the two optional backend methods, for backends with nothing cheaper:
    counters read in a read transaction, and no store-wide change stamp."""

    def versions(self, keys: Sequence[tuple[str, str]]) -> tuple[int, ...]:
        with self.read() as tx:  # type: ignore[attr-defined]
            return tx.versions(keys)

    def change_stamp(self) -> Optional[int]:
        return None  # no cheap store-wide promise: the cache checks versions() on every hit


@dataclass(frozen=True)
class StorageBackendInfo:
    """What a storage plugin announces through ``xpresso_storage_backends``."""

    name: str
    description: str
    # factory(settings: xpresso_env.config.Settings) -> StorageBackend
    factory: Callable[[Any], StorageBackend]


def check_ready(backend: StorageBackend) -> None:
    """Refuse to serve on a store that `xpresso-env init` has not brought up to date."""
    from .errors import SchemaOutdated

    version = backend.current_version()
    if version != backend.schema_version:
        raise SchemaOutdated(
            f"storage '{backend.name}' has schema version {version}, this code needs "
            f"{backend.schema_version}: run `xpresso-env init`")


def filter_docs(docs: Iterable[Doc], where: dict[str, Any]) -> list[Doc]:
    """Equality filters on body fields (applied in Python: a group holds few records)."""
    return [d for d in docs if all(d.body.get(k) == v for k, v in where.items())]
