"""A cache of whole GET responses that can never be stale.

Each entry remembers the storage change counters (``Tx.versions``) it was read under: the
caller's user, group and revocation counters, and the counter of the records' (kind, group).
A hit costs one small read of those counters; any write anywhere (another process, the CLI)
that could change the answer bumps one of them in the same transaction as the write, so the
entry no longer matches and the response is read afresh. Entries are keyed by the exact
request (URI, Authorization and Group headers), so a hit never skips a check the first request
passed: the token was verified then, and its expiry is checked again on every hit.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

Key = tuple[str, Optional[str], Optional[str]]
Stamp = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Entry:
    keys: Stamp  # the (kind, group) counters the response depends on
    values: tuple[int, ...]  # their values when it was read
    body: bytes
    total: Optional[str]  # X-Total-Count, for lists
    user: str
    group: str
    token_expires: float  # unix time


class ResponseCache:
    """A byte-bounded LRU of responses, shared by the threads of one process."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: Key) -> Optional[Entry]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Key, entry: Entry) -> None:
        size = len(entry.body)
        if size > self.max_bytes // 4:  # one huge answer must not flush everything else
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old.body)
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted.body)

    def discard(self, key: Key) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old.body)
