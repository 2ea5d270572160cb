"""The storage protocol: what a storage plugin implements, and the optional change counters.

Backends store *documents*: a JSON-able ``body`` plus index columns (kind, id, owning group,
name, deleted flag, creation time, extra visible groups). Records are turned into documents in
``codec.py``.

The documents interface (every storage plugin implements all of it)
---------------------------------------------------------------------
``StorageBackend``: the attributes ``name`` and ``schema_version``, and the methods ``init``,
``current_version``, ``read``, ``write`` and ``close``. ``read()`` and ``write()`` give a ``Tx``
with the methods ``get``, ``insert``, ``update``, ``query``, ``scan``, ``find_name`` and ``purge`` (the one hard
delete: swept history, finished webhook outbox entries). A plugin announces
its backend with a ``StorageBackendInfo`` from the ``xpresso_storage_backends`` hook;
``xpresso_env.testing.memory_storage`` is the smallest such plugin. The contract:

* ``with backend.write() as tx:`` commits on a clean exit and rolls back on an exception;
  ``read()`` gives a consistent snapshot. Writes are seen by every read that starts after the
  commit, from any backend object on the same store and, for a store kept outside the process
  (a file, a database), from any process; such a store keeps every commit that returned
  through a crash of the process.
* ``id`` is unique per kind (``AlreadyExists``); ``name``, when not None, is unique among the live
  (not deleted) documents of the same (kind, group) (``NameConflict``), enforced by the backend
  itself so that several writers cannot break it. A refused insert or update leaves the
  transaction usable.
* ``query`` returns documents ordered by (created, id). With a group, it returns those owned by
  the group or listing it in ``visible``.
* ``scan`` yields every document of a kind ordered by id (code point order), a page at a time:
  what it holds in memory is a page, however many documents the kind has (``export``). It reads
  the transaction's snapshot, so it is used before the transaction ends.
* An unreachable backend raises ``StorageUnavailable``; a backend error never leaks as anything
  but a ``xpresso_env.core.errors`` exception.

The change-counter capability (optional)
----------------------------------------
A backend that keeps change counters lets the API cache responses without ever serving stale
data, also across processes. It claims them by implementing ``ChangeCounters`` on top of the
documents interface: the attribute ``versions_store_wide`` and the methods ``versions`` and
``change_stamp`` on the backend, and ``versions`` on every ``Tx`` its ``read()`` and ``write()``
give (``CountingTx``). ``change_counters(backend)`` is how the service asks: it returns the
backend typed as ``ChangeCounters``, or None, and the response cache stays off for a backend
without them. The contract of the counters:

* Every committed insert/update of a document bumps the counter of (kind, group or "") and of
  (kind, g) for every g in its ``visible`` groups (old and new), in the same transaction as the
  change, so a reader never sees new data with an old counter, nor a new counter with old data.
  ``versions()`` reads counters (0 for a key never written). A rolled back transaction bumps
  nothing. ``xpresso_env.storage.sql_counters`` is that bookkeeping for SQL backends.
* A backend may bump more than asked, never less: one that keeps a single counter for the whole
  store says so with ``versions_store_wide = True`` (yaml), and its numbers are only comparable
  within one backend object (the cache that uses them lives in one process).
* ``change_stamp()`` is a cheaper promise, or None (``QueryVersions`` gives the plain answers).
  It must move with every write of a document of a kind in ``STAMPED_KINDS`` (what a cached
  answer may depend on); it may stay put for writes of other kinds only.

The change-notice capability (optional)
---------------------------------------
A backend whose store other processes share may tell them at once that something they wait for
was committed, instead of leaving them to find it at their next poll (CONTRACT section 15). It
claims this by implementing ``ChangeNotices``: ``notify(topic, key)`` on the transactions its
``write()`` gives (``NotifyingTx``), and ``notice_listener()`` on the backend. The contract:

* ``tx.notify(topic, key)`` sends nothing before the transaction commits, and nothing if it rolls
  back; once it commits, every listener on the store, in every process (this one included), gets
  ``Notice(topic, key)``, at least once per commit (the same pair twice in one transaction may
  come once). ``announce(tx, topic, key)`` is how services say it, on any backend (a no-op on a
  backend without notices); the topics are below.
* A listener's ``wait(timeout_s)`` returns the notices that arrived since its last call, waiting
  up to ``timeout_s`` for the first (``[]`` when none came); ``interrupt()`` ends a wait at once,
  from another thread; ``close()`` frees it. It reconnects by itself when its connection is lost;
  since notices sent meanwhile are lost, ``wait`` then returns None once: "anything may have
  changed, look again" (and also once when it first connects).
* Notices are a hint that wakes a waiting loop: every loop still polls, so a lost notice only
  costs its poll interval. Without the capability (SQLite, YAML) the polls are all there is.

``xpresso_env.testing.storage_suite`` is the conformance suite that holds backends to this:
``StorageConformance`` for the documents interface, ``ChangeCounterConformance`` on top for a
backend that claims the counters, ``ChangeNoticeConformance`` for one that claims notices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ContextManager,
    Iterable,
    Iterator,
    Optional,
    Protocol,
    Sequence,
    runtime_checkable,
)

# The document and the rules its index columns follow (a plugin that stores only bodies derives the
# columns with index_columns): written in the core, where codec.py uses them too.
from ..core.documents import INDEX_FIELDS, Doc, index_columns, index_rule
from ..core.errors import SchemaOutdated

if TYPE_CHECKING:
    from ..config import Settings


# The kinds ``change_stamp`` must follow: what a cached answer may depend on (the registry's records,
# and what authentication reads). The services' own bookkeeping (probe state, build logs, webhook
# deliveries, idempotency keys) is written many times a second in the background and never cached;
# were every such write to move the stamp, every cached answer would need a query to be trusted.
STAMPED_KINDS = frozenset({"harness", "engine", "user", "revocation", "group"})


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

    def scan(self, kind: str, *, page: int = 500) -> Iterator[Doc]:
        """Every document of a kind (deleted ones too), ordered by id, read ``page`` documents at
        a time (keyset pages, never the whole kind at once). Consumed inside the transaction."""

    def find_name(self, kind: str, group: str, name: str) -> Optional[Doc]:
        """The live document of that kind and group with that name, or None."""

    def purge(self, kind: str, id: str) -> bool:
        """Remove a document for good (not a soft delete): swept history, finished outbox entries.
        True if it was there. Bumps the change counters as an update does."""


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

    def write(self) -> ContextManager[Tx]:
        ...

    def close(self) -> None:
        ...


Key = tuple[str, str]  # a change counter's (kind, group); group "" for documents without one


@runtime_checkable
class CountingTx(Tx, Protocol):
    def versions(self, keys: Sequence[Key]) -> tuple[int, ...]:
        """The change counters of the keys, read in this transaction's snapshot (a write
        transaction sees its own bumps, as it sees its own writes)."""


@runtime_checkable
class ChangeCounters(StorageBackend, Protocol):
    """The optional capability; its transactions are ``CountingTx``."""

    versions_store_wide: bool  # one counter for the whole store (see the module docstring)

    def read(self) -> ContextManager[CountingTx]:
        ...

    def write(self) -> ContextManager[CountingTx]:
        ...

    def versions(self, keys: Sequence[Key]) -> tuple[int, ...]:
        """``CountingTx.versions`` as one consistent read outside a transaction (the cache's hot
        path: a backend may answer it more cheaply than a whole read transaction)."""

    def change_stamp(self) -> Optional[int]:
        """A store-wide stamp read without a query, or None (unknown, or a write in flight).
        Two equal non-None stamps promise that no write of a ``STAMPED_KINDS`` document started
        or committed in between, in any process. A backend that cannot promise it returns None
        (postgres, yaml)."""


def change_counters(backend: StorageBackend) -> Optional[ChangeCounters]:
    """The backend as ``ChangeCounters`` if it claims them, else None (cache off)."""
    return backend if isinstance(backend, ChangeCounters) else None


# The topics of change notices (``announce``); a notice's key says which one, "" when none.
BUILDS = "builds"  # a build became claimable: submitted, or handed back by a stopping process
PROBE_TARGETS = "probe_targets"  # a harness or engine was created, edited or deleted; key "<kind>:<id>"
OUTBOX = "outbox"  # webhook deliveries were queued
BUILD_LOG = "build_log"  # a build's log grew; key: the image id


@dataclass(frozen=True)
class Notice:
    topic: str
    key: str = ""


@runtime_checkable
class NotifyingTx(Tx, Protocol):
    def notify(self, topic: str, key: str = "") -> None:
        """Tell every listener on the store, once this transaction commits (see the module docstring)."""


class NoticeListener(Protocol):
    def wait(self, timeout_s: float) -> Optional[list[Notice]]:
        """The notices since the last call, waiting up to ``timeout_s`` for the first; None after
        a (re)connection: notices may have been missed."""

    def interrupt(self) -> None:
        """End a ``wait`` now (from another thread): it returns ``[]``."""

    def close(self) -> None:
        ...


@runtime_checkable
class ChangeNotices(StorageBackend, Protocol):
    """The optional capability; its write transactions are ``NotifyingTx``."""

    def notice_listener(self) -> NoticeListener:
        """A new listener on the store (its own connection; the caller closes it)."""


def change_notices(backend: StorageBackend) -> Optional[ChangeNotices]:
    """The backend as ``ChangeNotices`` if it claims them, else None (the loops only poll)."""
    return backend if isinstance(backend, ChangeNotices) else None


def announce(tx: Tx, topic: str, key: str = "") -> None:
    """``tx.notify(topic, key)`` on a backend with change notices; nothing on others."""
    notify = getattr(tx, "notify", None)
    if notify is not None:
        notify(topic, key)


class QueryVersions:
    """The plain answers to ``ChangeCounters.versions`` and ``change_stamp`` for a backend with
    nothing cheaper: counters read in a read transaction, and no store-wide change stamp."""

    def versions(self, keys: Sequence[Key]) -> tuple[int, ...]:
        with self.read() as tx:  # type: ignore[attr-defined]
            return tx.versions(keys)

    def change_stamp(self) -> Optional[int]:
        return None  # no cheap store-wide promise: the cache checks versions() on every hit


@dataclass(frozen=True)
class StorageBackendInfo:
    """What a storage plugin announces through ``xpresso_storage_backends``."""

    name: str
    description: str
    factory: Callable[["Settings"], StorageBackend]


def check_ready(backend: StorageBackend) -> None:
    """Refuse to serve on a store that `xpresso-env init` has not brought up to date."""
    version = backend.current_version()
    if version != backend.schema_version:
        raise SchemaOutdated(
            f"storage '{backend.name}' has schema version {version}, this code needs "
            f"{backend.schema_version}: run `xpresso-env init`")


def filter_docs(docs: Iterable[Doc], where: dict[str, Any]) -> list[Doc]:
    """Equality filters on body fields (applied in Python: a group holds few records)."""
    return [d for d in docs if all(d.body.get(k) == v for k, v in where.items())]
