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

import dataclasses
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from ..errors import XpressoError

Key = tuple[str, str, Optional[str], Optional[str]]
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
    seq: Optional[int] = None  # the storage's change stamp it is known valid at, if any


def request_key(environ: dict) -> Key:
    """The cache key of a request, from its WSGI environ: path, query, Authorization, and the
    group header (`Group` wins over `X-Group`). The same request always gives the same answer."""
    group = environ.get("HTTP_GROUP")
    if group is None:
        group = environ.get("HTTP_X_GROUP")
    return (environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""), environ.get("HTTP_AUTHORIZATION"), group)


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


def is_fresh(storage: Any, cache: "ResponseCache", key: Key, entry: Entry) -> bool:
    """Whether a cached answer still holds. Cheapest first: a store-wide change stamp equal to
    the one the entry was checked at means nothing was written since (a memory read, SQLite);
    else the entry's own counters are read. When those still match and no write slipped in
    meanwhile, the entry is re-stamped so the next hits are cheap again."""
    stamp = storage.change_stamp()
    if stamp is not None and stamp == entry.seq:
        return True
    if storage.versions(entry.keys) != entry.values:
        return False
    if stamp is not None and storage.change_stamp() == stamp:
        cache.put(key, dataclasses.replace(entry, seq=stamp))
    return True


class CacheFrontend:
    """WSGI in front of the falcon app: a GET whose answer the cache holds, still fresh, is
    answered here without building falcon's request and response (the hot path of polling
    clients). Everything else, and any doubt, goes to the app."""

    def __init__(self, app: Callable, ctx: Any, on_hit: Callable[[dict, Entry, float], None]):
        self.app = app
        self.cache: ResponseCache = ctx.response_cache
        self.storage = ctx.storage
        self.auth = ctx.auth
        self.on_hit = on_hit  # the access log

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and self.cache.enabled:
            started = time.perf_counter()
            key = request_key(environ)
            entry = self.cache.get(key)
            if entry is not None and self.auth.still_valid(entry.token_expires) and self._fresh(key, entry):
                headers = [("Content-Type", "application/json"), ("Content-Length", str(len(entry.body)))]
                if entry.total is not None:
                    headers.append(("X-Total-Count", entry.total))
                start_response("200 OK", headers)
                self.on_hit(environ, entry, started)
                return [entry.body]
        return self.app(environ, start_response)

    def _fresh(self, key: Key, entry: Entry) -> bool:
        try:
            return is_fresh(self.storage, self.cache, key, entry)
        except XpressoError:
            return False  # storage trouble: let the app answer it properly (503...)
