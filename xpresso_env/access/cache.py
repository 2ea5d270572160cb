"""A cache of whole GET responses that can never be stale.

Each entry remembers the storage change counters its answer was read under (the caller's user,
group and revocation counters, and the counter of the records' (kind, group): see
``services.reads.dependency_keys``). A hit costs one small read of those counters; any write
anywhere (another process, the CLI) that could change the answer bumps one of them in the same
transaction as the write, so the entry no longer matches and the response is read afresh.
Entries are keyed by the exact request (path, query, Authorization, chosen group), so a hit never
skips a check the first request passed: the token was verified then, and its expiry is checked
again on every hit. A backend without change counters gets no cache at all.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..core.errors import XpressoError
from ..core.metrics import NULL_METRICS, MetricsSink
from ..core.timeutil import Clock
from ..http.request import ROUTE_KEY, Key, credentials_of, note_caller, request_key
from ..storage import STAMPED_KINDS, ChangeCounters
from .reads import Produce, Reads, Stamp


@dataclass(frozen=True)
class Entry:
    keys: Stamp  # the (kind, group) counters the response depends on
    values: tuple[int, ...]  # their values when it was read
    body: bytes
    total: Optional[str]  # X-Total-Count, for lists
    user: str
    group: str
    token_expires: float  # unix time
    seq: Optional[int] = None  # the storage's change stamp it is known valid at, if any
    route: Optional[str] = None  # the route template it answered (the metrics' label of a hit)


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


class CachedReads:
    """The one read path of GETs: answered from the cache while storage says nothing they depend
    on changed, else read through ``Reads`` and remembered. Used by the WSGI frontend (hits only)
    and by the falcon resources (everything)."""

    def __init__(self, reads: Reads, cache: ResponseCache, counters: Optional[ChangeCounters], clock: Clock,
                 metrics: MetricsSink = NULL_METRICS):
        self._reads = reads
        self._counters = counters if cache.enabled else None  # no counters: nothing is cached
        self.cache = cache
        self._clock = clock
        self.metrics = metrics  # hit | miss | bypass, counted once per read-path answer

    @property
    def enabled(self) -> bool:
        return self._counters is not None

    def hit(self, environ: dict) -> Optional[Entry]:
        """A fresh cached answer to this request, or None."""
        if self._counters is None:
            return None
        key = request_key(environ)
        entry = self.cache.get(key)
        if entry is None or self._clock().timestamp() >= entry.token_expires:
            return None
        try:
            return entry if self._fresh(key, entry, self._counters) else None
        except XpressoError:
            return None  # storage trouble: let the read path answer it properly (503...)

    def answer(self, environ: dict, kind: str, produce: Produce) -> Entry:
        """The answer to a GET of ``kind``: a fresh cached one, or ``produce`` read afresh."""
        entry = self.hit(environ)
        if entry is not None:
            self.metrics.cache_request("hit")
            return entry
        self.metrics.cache_request("miss" if self._counters is not None else "bypass")
        snap = self._reads.read(credentials_of(environ), kind, produce)
        # snap.stamp is None when a write started or ended during the read: the counters alone vouch
        entry = Entry(keys=snap.keys, values=snap.values, body=json.dumps(snap.data).encode(),
                      total=None if snap.total is None else str(snap.total), user=snap.caller.user.name,
                      group=snap.caller.group, token_expires=snap.caller.token_expires, seq=snap.stamp,
                      route=environ.get(ROUTE_KEY))
        if self._counters is not None:
            path, query, authorization, group = request_key(environ)
            # The request authenticated: its token and group are shared by many entries, so keep
            # one copy of each (never for unauthenticated input, which could grow the table).
            self.cache.put((path, query, _shared(authorization), _shared(group)), entry)
        return entry

    def _fresh(self, key: Key, entry: Entry, counters: ChangeCounters) -> bool:
        """Cheapest first: a store-wide change stamp equal to the one the entry was checked at
        means nothing it depends on was written since (a memory read, SQLite; only entries whose
        counters are all of ``STAMPED_KINDS`` are stamped); else the entry's own counters
        are read. When those still match and no write slipped in meanwhile, the entry is
        re-stamped so the next hits are cheap again."""
        stamp = counters.change_stamp()
        if stamp is not None and stamp == entry.seq:
            return True
        if counters.versions(entry.keys) != entry.values:
            return False
        if (stamp is not None and counters.change_stamp() == stamp
                and all(k in STAMPED_KINDS for k, _ in entry.keys)):
            self.cache.put(key, dataclasses.replace(entry, seq=stamp))
        return True


def _shared(text: Optional[str]) -> Optional[str]:
    return None if text is None else sys.intern(text)


class CacheFrontend:
    """WSGI in front of the falcon app: a GET whose answer the cache holds, still fresh, is
    answered here without building falcon's request and response (the hot path of polling
    clients). Everything else, and any doubt, goes to the app."""

    def __init__(self, app: Callable, cached: CachedReads):
        self._app = app
        self.cached = cached

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        if environ.get("REQUEST_METHOD") == "GET":
            entry = self.cached.hit(environ)
            if entry is not None:
                headers = [("Content-Type", "application/json"), ("Content-Length", str(len(entry.body)))]
                if entry.total is not None:
                    headers.append(("X-Total-Count", entry.total))
                start_response("200 OK", headers)
                note_caller(environ, entry.user, entry.group)
                environ[ROUTE_KEY] = entry.route
                self.cached.metrics.cache_request("hit")
                return [entry.body]
        return self._app(environ, start_response)

