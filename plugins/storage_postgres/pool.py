"""The connection pool: at most ``max_size`` connections, made in the requesting thread.

Not psycopg_pool: its connections are made by a background worker that retries with backoff
while requests wait for it, so a refused connection cost the first request of an outage the whole
wait (``storage.busy_timeout_s``) before its 503. Here a refused connection fails the request that
asked at once, and a hung database costs it at most ``storage.connect_timeout_s``.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from xpresso_env.core.errors import StorageUnavailable

if TYPE_CHECKING:
    import psycopg


class ConnectionPool:
    """Idle connections are reused newest first (the oldest idle ones are the likeliest to have
    been dropped by a firewall); one returned broken, closed or inside a transaction is closed."""

    def __init__(self, connect: Callable[[], psycopg.Connection], max_size: int, wait_s: float):
        self._connect = connect
        self._wait_s = wait_s  # for a free slot when all max_size connections are in use
        self._slots = threading.BoundedSemaphore(max_size)
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection] = []
        self._closed = False

    def getconn(self) -> psycopg.Connection:
        if not self._slots.acquire(timeout=self._wait_s):
            raise StorageUnavailable("The database is busy, try again later.")
        try:
            with self._lock:
                if self._closed:
                    raise StorageUnavailable("The PostgreSQL storage is closed.")
                if self._idle:
                    return self._idle.pop()
            return self._connect()
        except BaseException:
            self._slots.release()
            raise

    def putconn(self, conn: psycopg.Connection) -> None:
        from psycopg import pq

        try:
            reusable = not conn.closed and not conn.broken and \
                conn.info.transaction_status == pq.TransactionStatus.IDLE
            with self._lock:
                if reusable and not self._closed:
                    self._idle.append(conn)
                    return
            _close(conn)
        finally:
            self._slots.release()

    def discard(self, conn: psycopg.Connection) -> None:
        """Give back a connection that must not be reused."""
        _close(conn)
        self._slots.release()

    def clear(self) -> None:
        """Close the idle connections (after an outage they are likely dead)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.clear()


def _close(conn: psycopg.Connection) -> None:
    import psycopg

    try:
        conn.close()
    except psycopg.Error:
        pass
