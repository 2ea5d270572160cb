"""YAML file storage: one human-readable document, for local development and small teams.

The whole document lives in memory as an immutable snapshot with per-kind indexes (id, owner
group, visible groups, live names), so reads are dictionary look-ups and never wait for a writer.
Every write transaction rewrites the whole file, which is why this backend suits development and
small data sets (up to some 10,000 records); use sqlite or postgres beyond that.

Files, all in the folder of ``storage.path`` (default ``var/xpresso.yaml``):

* ``xpresso.yaml``: the data (layout and the fast reader in ``storage_yaml_format``). Written
  atomically by ``xpresso_env.runtime.fsutil.atomic_write`` (temp file beside it, fsync, rename, fsync of
  the folder; the file's permissions are kept). Each
  record's text is rendered once and kept, so a commit mostly joins kept text.
* ``xpresso.yaml.lock``: the advisory ``flock`` that makes several processes safe: a write
  transaction holds it exclusively from its start to the file replaced, and re-reads the file
  under it first, so no process loses another's update; loading takes it shared, so no process
  reads a half-finished commit. It also holds a commit counter: together with the file's
  (mtime, size, inode), it tells every transaction cheaply whether it must reload.

Change counters (``ChangeCounters``): one counter for the whole store (``versions_store_wide``), as
the contract allows. It is a stamp kept in memory by each backend object: every new snapshot it
publishes -- its own commit, or a reload after another process's commit or a hand edit -- gets the
next number, so the value is monotonic, changes with every change of the data this process can
see, and is read from the same snapshot as the data. It stays 0 while the store holds no
documents, as "never written" reads 0 on the other backends. The numbers of two processes are not
comparable with each other, and need not be: a response cache lives in one process.

Hand edits are picked up on the next transaction (noticed by the file's mtime, size or inode). A
file that no longer parses, or breaks a rule (a duplicate id, two live records with one name), is
refused with a StorageError naming the line (503 through the API): the file is left as it is for
the person to fix, reads go on serving the last good data (a warning is logged once), and writes
are refused with that error until the file is fixed; a process that starts on a refused file has
no good data and refuses reads too. The lock cannot cover an editor: a hand edit saved during a
write transaction makes that transaction fail with StorageUnavailable rather than be overwritten,
and an editor that rewrites the file in place (instead of saving a new file and renaming it, as
most do) may be read half-saved, which is then refused as broken until the save completes.
"""
from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

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
from xpresso_env.runtime.fsutil import atomic_write
from xpresso_env.storage import Doc, Key, QueryVersions, StorageBackendInfo

from . import storage_yaml_format as fmt

log = logging.getLogger(__name__)

# 1: documents and their index columns; 2: records visible in more groups than their owner's.
SCHEMA_VERSION = 2

_GENERATION = struct.Struct("<Q")


# -- in-memory tables -------------------------------------------------------------------------

class _Table:
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

    def applied(self, changes: dict[str, Doc]) -> "_Table":
        """A new table with the changes (already checked by the transaction) applied."""
        t = _Table()
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

    def without_texts(self) -> "_Table":
        t = _Table()
        t.by_id, t.by_group, t.visible_in, t.names = self.by_id, self.by_group, self.visible_in, self.names
        return t


_EMPTY = _Table()


@dataclass(frozen=True)
class _State:
    version: int  # 0: no file
    tables: dict[str, _Table]
    key: Optional[tuple]  # (mtime_ns, size, inode, commit counter) of the file this state is; None: no file
    stamp: int = 0  # the change counter of every key (see the module docstring); set by _publish

    def has_docs(self) -> bool:
        return any(t.by_id for t in self.tables.values())

    def table(self, kind: str) -> _Table:
        return self.tables.get(kind, _EMPTY)


# -- documents in and out ---------------------------------------------------------------------

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

    def __init__(self, state: _State, writable: bool):
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


# -- the backend ------------------------------------------------------------------------------

def _flock(fd: int, op: int, timeout_s: float, path: Path) -> None:
    """flock with a time limit (like SQLite's busy timeout): polls, as flock itself cannot time out."""
    delay = 0.0005
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StorageUnavailable(f"{path} is locked by another process; try again later") from None
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


class YamlStorage(QueryVersions):
    name = "yaml"
    schema_version = SCHEMA_VERSION
    versions_store_wide = True  # one change counter for every (kind, group): ChangeCounters, store-wide

    def __init__(self, path: Path, busy_timeout_s: float = 10.0):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._timeout_s = busy_timeout_s
        self._state: Optional[_State] = None  # the last good state; None before the first load
        self._broken: Optional[tuple[tuple, str]] = None  # (file key, error) of a file that failed to load
        self._write_mutex = threading.Lock()  # one write transaction at a time in this process
        self._reload_mutex = threading.Lock()  # one load at a time; guards _state and _broken
        self._writer: Optional[int] = None  # thread holding the write transaction
        self._fd_mutex = threading.Lock()
        self._lock_fd: Optional[int] = None  # exclusive lock and commit counter
        self._swept = False

    # -- files and locks --

    def _lockfile(self) -> int:
        with self._fd_mutex:
            if self._lock_fd is None:
                try:
                    self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
                except OSError as exc:
                    raise StorageUnavailable(f"cannot open the lock file {self.lock_path}: {exc.strerror}") from exc
            return self._lock_fd

    def _generation(self) -> int:
        data = os.pread(self._lockfile(), _GENERATION.size, 0)
        return _GENERATION.unpack(data)[0] if len(data) == _GENERATION.size else 0

    def _file_key(self) -> Optional[tuple]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {self.path}: {exc.strerror}") from exc
        return (st.st_mtime_ns, st.st_size, st.st_ino, self._generation())

    def _lock_exclusive(self) -> int:
        while True:
            fd = self._lockfile()
            _flock(fd, fcntl.LOCK_EX, self._timeout_s, self.path)
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            # Someone removed the lock file: lock the one that is there now, as other processes will.
            fcntl.flock(fd, fcntl.LOCK_UN)
            with self._fd_mutex:
                os.close(fd)
                self._lock_fd = None

    # -- loading --

    def _read_file(self) -> Optional[tuple[bytes, os.stat_result]]:
        for _ in range(5):
            try:
                with open(self.path, "rb") as f:
                    st = os.fstat(f.fileno())
                    data = f.read()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StorageUnavailable(f"cannot read {self.path}: {exc.strerror}") from exc
            if len(data) == st.st_size:
                return data, st
            time.sleep(0.01)  # being rewritten in place (by an editor): let it finish
        return data, st

    def _reload(self) -> _State:
        """Load the file (the caller holds the file lock and _reload_mutex); the last good
        state is kept when the file is refused."""
        got = self._read_file()
        if got is None:
            self._broken = None
            return self._publish(_State(0, {}, None))
        data, st = got
        key = (st.st_mtime_ns, st.st_size, st.st_ino, self._generation())
        old = self._state
        if old is not None and old.key == key:
            return old
        if self._broken is not None and self._broken[0] == key:
            raise StorageError(self._broken[1])
        try:
            state = self._decode(data, key, old)
        except StorageError as exc:
            self._broken = (key, exc.detail)
            log.warning("%s (the file is left as it is; %s)", exc.detail,
                        "reads go on from the last good data, writes are refused until it is fixed"
                        if old is not None and old.version else "nothing can be served until it is fixed")
            raise
        self._broken = None
        return self._publish(state)

    def _publish(self, state: _State) -> _State:
        """Make ``state`` the current one, with the next change stamp (the caller holds
        _reload_mutex). The stamp stays 0 as long as the store holds no documents."""
        prev = self._state.stamp if self._state is not None else 0
        self._state = dataclasses.replace(state, stamp=prev + 1 if prev or state.has_docs() else 0)
        return self._state

    def _decode(self, data: bytes, key: tuple, old: Optional[_State]) -> _State:
        doc = fmt.parse(data, str(self.path))
        try:
            return _build_state(doc, key, old)
        except fmt.RecordError as exc:
            line = fmt.record_line(data, exc.key, exc.index)
            where = f"line {line}: " if line else ""
            item = f"`{exc.key}`" if exc.index is None else f"item {exc.index + 1} of `{exc.key}`"
            raise StorageError(f"{self.path}: {where}{item}: {exc.message}") from None

    def _snapshot(self) -> _State:
        """The state to read from: the current one, reloaded if the file changed; the last good
        one if the file is refused (an error if there is none)."""
        state, key = self._state, self._file_key()
        if state is not None and state.key == key:
            return state
        broken = self._broken
        if broken is not None and broken[0] == key:
            return self._last_good(broken[1])
        holder = self._writer == threading.get_ident()
        fd = None
        try:
            if not holder and key is not None:
                # A fresh descriptor: flock belongs to it, so readers in other threads (and our own
                # writer's exclusive lock) each keep their own lock.
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
                _flock(fd, fcntl.LOCK_SH, self._timeout_s, self.path)
            if not self._reload_mutex.acquire(timeout=self._timeout_s):
                raise StorageUnavailable(f"{self.path} is busy; try again later")
            try:
                return self._reload()
            except StorageError as exc:
                return self._last_good(exc.detail)
            finally:
                self._reload_mutex.release()
        except OSError as exc:
            raise StorageUnavailable(f"cannot lock {self.lock_path}: {exc.strerror}") from exc
        finally:
            if fd is not None:
                os.close(fd)  # releases the shared lock

    def _last_good(self, error: str) -> _State:
        """Reads go on from the last good data while the file is refused; without any, the error."""
        if self._state is None or self._state.version == 0:
            raise StorageError(error)
        return self._state

    def _state_for_write(self) -> _State:
        """Under the exclusive lock: the file as it is now (reloaded if changed); refused if broken."""
        state, key = self._state, self._file_key()
        if state is None or state.key != key:
            with self._reload_mutex:
                state = self._reload()
        return state

    # -- writing --

    def _sweep(self) -> None:
        """Remove temp files left by a process killed mid-write (under the exclusive lock)."""
        prefix, folder = f".{self.path.name}.", self.path.parent
        try:
            for entry in os.scandir(folder):
                if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                    os.unlink(entry.path)
        except OSError:
            pass
        self._swept = True

    def _write_state(self, state: _State) -> _State:
        """Write the file for a state; returns the state with its new file key."""
        sections = []
        kinds = list(fmt.KNOWN_KINDS) + sorted((k for k in state.tables if k not in fmt.KNOWN_KINDS),
                                               key=fmt.kind_key)
        for kind in kinds:
            table = state.table(kind)
            items = []
            for doc in sorted(table.by_id.values(), key=lambda d: (d.created, d.id)):
                text = table.texts.get(doc.id)
                if text is None:
                    text = table.texts[doc.id] = fmt.render_yaml(fmt.to_record(doc, state.version))
                items.append(text)
            sections.append((fmt.kind_key(kind), items))
        data = fmt.compose_yaml(state.version, sections).encode("utf-8")
        generation = self._generation() + 1
        try:
            st = atomic_write(self.path, data)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {self.path}: {exc.strerror}") from exc
        os.pwrite(self._lockfile(), _GENERATION.pack(generation), 0)
        return dataclasses.replace(state, key=(st.st_mtime_ns, st.st_size, st.st_ino, generation))

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._writer == me:
            raise StorageError("a write transaction is already open in this thread")
        if not self._write_mutex.acquire(timeout=self._timeout_s):
            raise StorageUnavailable(f"{self.path} is busy; try again later")
        try:
            fd = self._lock_exclusive()
            self._writer = me
            try:
                if not self._swept:
                    self._sweep()
                yield
            finally:
                self._writer = None
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._write_mutex.release()

    # -- the StorageBackend protocol --

    @contextmanager
    def read(self) -> Iterator[YamlTx]:
        state = self._snapshot()
        if state.version == 0:
            raise SchemaOutdated()
        yield YamlTx(state, writable=False)

    @contextmanager
    def write(self) -> Iterator[YamlTx]:
        if not self.path.parent.is_dir():
            raise SchemaOutdated()  # no folder, no file: `init` has not run
        with self._exclusive():
            state = self._state_for_write()
            if state.version == 0:
                raise SchemaOutdated()
            if state.version > SCHEMA_VERSION:
                raise self._too_new(state.version)
            tx = YamlTx(state, writable=True)
            yield tx
            if not tx.changes:
                return
            if self._file_key() != state.key:
                raise StorageUnavailable(f"{self.path} was changed by hand during this change; try again")
            tables = dict(state.tables)
            for kind, changed in tx.changes.items():
                tables[kind] = state.table(kind).applied(changed)
            new = self._write_state(_State(state.version, tables, None))
            with self._reload_mutex:
                self._publish(new)

    def current_version(self) -> int:
        return self._snapshot().version

    def init(self, target_version: Optional[int] = None) -> int:
        target = SCHEMA_VERSION if target_version is None else target_version
        if not 0 <= target <= SCHEMA_VERSION:
            raise StorageError(f"schema version {target} is unknown (this code knows 1 to {SCHEMA_VERSION})")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        with self._exclusive():
            state = self._state_for_write()
            current = state.version
            if current > SCHEMA_VERSION:
                raise self._too_new(current)
            if target > current:
                # The documents stay as they are (no visible groups before version 2); their
                # rendered text depends on the version, so it is dropped.
                tables = {k: t.without_texts() for k, t in state.tables.items()}
                new = self._write_state(_State(target, tables, None))
                with self._reload_mutex:
                    self._publish(new)
            return max(current, target)

    def _too_new(self, version: int) -> StorageError:
        return StorageError(f"{self.path} has schema version {version}, newer than this xpresso-env "
                            f"knows ({SCHEMA_VERSION}): upgrade xpresso-env")

    def close(self) -> None:
        with self._fd_mutex:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def _build_state(doc: Any, key: tuple, old: Optional[_State]) -> _State:
    """Index a parsed document; RecordError for what breaks the format or a uniqueness rule."""
    if not isinstance(doc, dict):
        raise fmt.RecordError(fmt.VERSION_KEY, None, "the file must be a mapping: `schema_version: N` "
                              "and one list of records per kind (the file is empty or not such a mapping)")
    version = doc.get(fmt.VERSION_KEY)
    if type(version) is not int or version < 1:
        raise fmt.RecordError(fmt.VERSION_KEY, None, "`schema_version` is missing or not a whole number >= 1")
    reuse = old is not None and old.version == version
    tables: dict[str, _Table] = {}
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
        table = tables[kind] = _Table()
        previous = old.table(kind) if reuse and old is not None else _EMPTY
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
    return _State(version, tables, key)


def _factory(settings: Settings) -> YamlStorage:
    return YamlStorage(settings.storage_path("xpresso.yaml"), settings.storage.busy_timeout_s)


@hookimpl
def xpresso_storage_backends():
    return [StorageBackendInfo(name="yaml", description="one human-readable YAML file; for development "
                               "and small teams", factory=_factory)]
