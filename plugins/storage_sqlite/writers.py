"""The writers' queue across processes: a lock file beside the database (``flock``).

Writers of one process already queue on a thread lock (``SQLiteStorage._writers``). Across
processes (`serve --processes N`, a worker, the CLI) they met SQLite's write lock, whose busy
handler sleeps in steps of up to 100 ms: a lock freed by one process sat idle while the others
slept, and the mixed load's p99 went to hundreds of milliseconds with two processes. Queued on
``flock`` instead, a writer waits in the kernel (without the GIL) and is woken the moment the
writer before it is done; SQLite's lock, taken next, is then free at once.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

log = logging.getLogger("xpresso_env.storage.sqlite")


def writers_path(path: Path) -> Path:
    """The lock file beside the database at ``path``."""
    return path.with_name(path.name + "-writers")


class WriterQueue:
    """Held around each write transaction (inside the process's own writer lock: one thread of a
    process at a time uses the descriptor)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: Optional[int] = None
        self._failed = False
        self._lock = threading.Lock()

    def _open(self) -> Optional[int]:
        with self._lock:
            if self._fd is None and not self._failed:
                try:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                except OSError as exc:  # writers then meet in SQLite's busy handler, as before: slower, still right
                    self._failed = True
                    log.warning("no writers' lock file beside the database (%s): writers of other processes "
                                "wait in SQLite's busy handler", exc)
            return self._fd

    @contextmanager
    def turn(self) -> Iterator[None]:
        fd = self._open()
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
