"""The ``yaml`` backend: the file, its lock, loading and writing (the package docstring says how
several processes and hand edits are handled).
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
from pathlib import Path
from typing import Iterator, Optional

from xpresso_env.core.errors import SchemaOutdated, StorageError, StorageUnavailable
from xpresso_env.runtime.fsutil import atomic_write
from xpresso_env.storage import QueryVersions
from xpresso_env.storage.identity_upgrade import upgrade_identity

from . import format as fmt
from .format import SCHEMA_VERSION
from .snapshot import Snapshot, build_snapshot
from .tx import YamlTx

__all__ = ["YamlStorage"]

log = logging.getLogger("xpresso_env_plugins.storage_yaml")

_GENERATION = struct.Struct("<Q")  # the commit counter at the start of the lock file


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
        self._state: Optional[Snapshot] = None  # the last good state; None before the first load
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
                    self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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

    def _reload(self) -> Snapshot:
        """Load the file (the caller holds the file lock and _reload_mutex); the last good
        state is kept when the file is refused."""
        got = self._read_file()
        if got is None:
            self._broken = None
            return self._publish(Snapshot(0, {}, None))
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

    def _publish(self, state: Snapshot) -> Snapshot:
        """Make ``state`` the current one, with the next change stamp (the caller holds
        _reload_mutex). The stamp stays 0 as long as the store holds no documents."""
        prev = self._state.stamp if self._state is not None else 0
        self._state = dataclasses.replace(state, stamp=prev + 1 if prev or state.has_docs() else 0)
        return self._state

    def _decode(self, data: bytes, key: tuple, old: Optional[Snapshot]) -> Snapshot:
        doc = fmt.parse(data, str(self.path))
        try:
            return build_snapshot(doc, key, old)
        except fmt.RecordError as exc:
            line = fmt.record_line(data, exc.key, exc.index)
            where = f"line {line}: " if line else ""
            item = f"`{exc.key}`" if exc.index is None else f"item {exc.index + 1} of `{exc.key}`"
            raise StorageError(f"{self.path}: {where}{item}: {exc.message}") from None

    def _snapshot(self) -> Snapshot:
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
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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

    def _last_good(self, error: str) -> Snapshot:
        """Reads go on from the last good data while the file is refused; without any, the error."""
        if self._state is None or self._state.version == 0:
            raise StorageError(error)
        return self._state

    def _state_for_write(self) -> Snapshot:
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

    def _write_state(self, state: Snapshot) -> Snapshot:
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
                    text = table.texts[doc.id] = fmt.record_text(doc, state.version)
                items.append(text)
            sections.append((fmt.kind_key(kind), items))
        data = fmt.compose_yaml(state.version, sections).encode("utf-8")
        generation = self._generation() + 1
        try:
            # A new store file is private (it holds engine credentials and password hashes); an
            # existing one keeps the mode its owner gave it.
            st = atomic_write(self.path, data, mode=None if self.path.exists() else 0o600)
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
            new = self._write_state(Snapshot(state.version, tables, None))
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
                if current < fmt.IDENTITY_VERSION <= target:
                    tx = YamlTx(Snapshot(target, tables, None), writable=True)
                    upgrade_identity(tx)
                    for kind, changed in tx.changes.items():
                        tables[kind] = Snapshot(target, tables, None).table(kind).applied(changed)
                new = self._write_state(Snapshot(target, tables, None))
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
