"""The commit sequence: a store-wide change stamp that costs a memory read (the response cache's)."""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


def commit_sequence_path(path: Path) -> Path:
    """The commit sequence's file beside the database at ``path``."""
    return path.with_name(path.name + "-commitseq")


class CommitSequence:
    """Two commit counters, *started* and *finished*, in a 16-byte file beside the database that
    every process maps into memory: a seqlock over the whole store.

    A writer bumps *started* while it holds SQLite's write lock, before COMMIT, and raises
    *finished* to its own number after COMMIT (or ROLLBACK). ``stamp()`` is a plain memory read,
    with no system call and no release of the GIL: it returns *started* when both are equal (no
    write in flight) and None otherwise. Only writes of ``STAMPED_KINDS`` documents take part (the
    probes' state, hundreds of writes a second, does not). Two equal non-None stamps mean that no
    such write started or committed in between, in any process, so the response cache can trust
    an answer it already checked without asking SQLite again. A writer that dies between the two
    steps leaves the counters unequal (the cache then asks SQLite, as it always may) until the
    next writer's *finished* catches up.
    """

    SIZE = 16

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < self.SIZE:
            os.ftruncate(self._fd, self.SIZE)  # zeros; done by every first opener, harmless twice
        self._map = mmap.mmap(self._fd, self.SIZE)
        self._lock = threading.Lock()  # flock does not exclude threads sharing this descriptor

    def _read(self) -> tuple[int, int]:
        return struct.unpack_from("<QQ", self._map, 0)

    def stamp(self) -> Optional[int]:
        first = self._read()
        if first != self._read() or first[0] != first[1]:  # torn by a writer, or a write in flight
            return None
        return first[0]

    @contextmanager
    def _exclusive(self) -> Iterator[tuple[int, int]]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield self._read()
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def begin(self) -> int:
        """Called holding SQLite's write lock: this write's number."""
        with self._exclusive() as (started, finished):
            mine = started + 1
            struct.pack_into("<Q", self._map, 0, mine)
        return mine

    def end(self, mine: int) -> None:
        with self._exclusive() as (started, finished):
            if mine > finished:
                struct.pack_into("<Q", self._map, 8, mine)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
