"""A cache of whole GET answers that can never be stale.

Each entry remembers what its answer depends on (``reads.Dependencies``: the caller's user, group
and revocation counters, and the counter of the records' (kind, group)). A hit costs one small
read of those counters, or none while the store's change stamp vouches for them; any write
anywhere (another process, the CLI) that could change the answer bumps one of them in the same
transaction as the write, so the entry no longer matches and the answer is read afresh. The token's
expiry is checked again on every hit. A backend without change counters gets no cache at all.

Entries are keyed by the exact request; the key's shape is the API's business
(``http/request.py``): here it is any hashable value.
"""
from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Optional

from ..core.errors import XpressoError
from ..core.timeutil import Clock
from ..storage import ChangeCounters
from .reads import Dependencies, Snapshot, stamped


@dataclass(frozen=True, slots=True)
class Entry:
    depends: Dependencies  # the counters the answer depends on, their values, the stamp vouching for them
    body: bytes
    total: Optional[str]  # X-Total-Count, for lists
    user: str
    group: str
    token_expires: float  # unix time
    route: Optional[str] = None  # the route template it answered (the metrics' label of a hit)
    etag: Optional[str] = None  # the answer's ETag, made once when it is stored (http/conditional.py)

    @classmethod
    def of(cls, snap: Snapshot, body: bytes, route: Optional[str], etag: Optional[str] = None) -> "Entry":
        """A read's answer, rendered to ``body``."""
        return cls(depends=snap.depends, body=body, total=None if snap.total is None else str(snap.total),
                   user=snap.caller.user.name, group=snap.caller.group, token_expires=snap.caller.token_expires,
                   route=route, etag=etag)


class ResponseCache:
    """A byte-bounded LRU of answers, shared by the threads of one process, and the freshness rule
    of a hit. ``enabled`` is false (nothing kept, nothing found) when the backend keeps no change
    counters or the size is 0."""

    def __init__(self, max_bytes: int, counters: Optional[ChangeCounters], clock: Clock):
        self.max_bytes = max_bytes
        self._counters = counters if max_bytes > 0 else None
        self._clock = clock
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._counters is not None

    def fresh(self, key: Hashable) -> Optional[Entry]:
        """The cached answer to the request ``key``, if it is still the answer: the one look-up
        of a request."""
        counters = self._counters
        if counters is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        if self._clock().timestamp() >= entry.token_expires:
            return None
        try:
            return entry if self._still_valid(key, entry, counters) else None
        except XpressoError:
            return None  # storage trouble: let the read path answer it properly (503...)

    def keep(self, key: Hashable, entry: Entry) -> None:
        """Remember ``entry`` as the answer to ``key`` (nothing, when the cache is off)."""
        if self._counters is not None:
            self.put(key, entry)

    def get(self, key: Hashable) -> Optional[Entry]:
        """The entry stored under ``key``, fresh or not."""
        with self._lock:
            return self._entries.get(key)

    def put(self, key: Hashable, entry: Entry) -> None:
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

    def _still_valid(self, key: Hashable, entry: Entry, counters: ChangeCounters) -> bool:
        """Cheapest first: a store-wide change stamp equal to the one the entry was checked at
        means nothing it depends on was written since (a memory read, SQLite; only entries whose
        counters the stamp follows, ``reads.stamped``, are stamped); else the entry's own counters are
        read. When those still match and no write slipped in meanwhile, the entry is re-stamped
        so the next hits are cheap again."""
        depends = entry.depends
        stamp = counters.change_stamp()
        if stamp is not None and stamp == depends.stamp:
            return True
        if counters.versions(depends.keys) != depends.values:
            return False
        if stamp is not None and counters.change_stamp() == stamp and stamped(depends.keys):
            self.put(key, dataclasses.replace(entry, depends=dataclasses.replace(depends, stamp=stamp)))
        return True
