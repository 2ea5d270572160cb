"""Build logs: one append-only file per image, each line timestamped; read by offset or followed.

The file is flushed after every line, so a follower (``GET .../logs?follow=true``, possibly in
another process) sees a line as soon as the build writes it.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..timeutil import Clock, format_time

CHUNK = 65536


class BuildLog:
    """A callable that appends one timestamped line; safe to call from several threads (a
    builder may stream stdout and stderr from two)."""

    def __init__(self, path: Path, clock: Clock):
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")

    def __call__(self, text: str) -> None:
        stamp = format_time(self._clock())
        # A message spanning lines gets one stamp per line: the file stays line-oriented.
        lines = str(text).replace("\r\n", "\n").split("\n")
        data = "".join(f"{stamp} {line}\n" for line in lines).encode("utf-8", errors="replace")
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(data)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> "BuildLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def append_line(path: Path, clock: Clock, text: str) -> None:
    """One line, from code that holds no open BuildLog (submit, cancel, takeover)."""
    with BuildLog(path, clock) as log:
        log(text)


def read_from(path: Path, offset: int, limit: Optional[int] = None) -> bytes:
    """Bytes of the log from ``offset`` (an offset at or past the end gives b"")."""
    try:
        with open(path, "rb") as fh:
            # Compared first: seek() refuses offsets past the file system's limit (EINVAL) or
            # past 2**63 (OverflowError), which a client may well send.
            if offset >= os.fstat(fh.fileno()).st_size:
                return b""
            fh.seek(offset)
            return fh.read() if limit is None else fh.read(limit)
    except FileNotFoundError:
        return b""


def follow(path: Path, offset: int, still_running: Callable[[], bool], stopping: Callable[[], bool],
           poll_s: float = 0.2, status_every_s: float = 1.0) -> Iterator[bytes]:
    """Yield the log from ``offset``, then new bytes as they come, until the build has ended
    (``still_running`` false) and everything written is sent, or the service stops."""
    pos = offset
    next_status = 0.0
    while True:
        data = read_from(path, pos, CHUNK)
        if data:
            pos += len(data)
            yield data
            continue
        now = time.monotonic()
        if now >= next_status:
            next_status = now + status_every_s
            if not still_running() or stopping():
                # The build ended: whatever it wrote before ending is sent, then we stop.
                while True:
                    data = read_from(path, pos, CHUNK)
                    if not data:
                        return
                    pos += len(data)
                    yield data
        time.sleep(poll_s)
