"""The client-side bound on a statement: what ``statement_timeout`` cannot do.

The server's ``statement_timeout`` ends a slow statement on a database that runs. A database that
does not run (its processes stopped, its host hung, a network partition) ends nothing, and its
kernel still acknowledges what is sent, so TCP keepalives do not notice either: the requesting
thread would wait in ``recv`` for as long as the hang lasts. The guard's one thread shuts down the
socket of a statement still waiting ``limit_s`` after it was sent; libpq then sees the connection
closed and the statement fails at once (StorageUnavailable, a 503).
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from xpresso_env.core.errors import StorageUnavailable

if TYPE_CHECKING:
    import psycopg


class StatementGuard:
    """``with guard.bounded(conn):`` around each statement. ``on_hang`` is called (in the guard's
    thread) each time a statement is cut."""

    def __init__(self, limit_s: float, on_hang: Callable[[], None]):
        self.limit_s = limit_s
        self._on_hang = on_hang
        self._cond = threading.Condition(threading.Lock())
        self._armed: dict[int, tuple[float, Any]] = {}  # token -> (deadline, connection)
        self._cut: set[int] = set()
        self._next = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextmanager
    def bounded(self, conn: psycopg.Connection) -> Iterator[None]:
        import psycopg

        with self._cond:
            self._next += 1
            token = self._next
            self._armed[token] = (time.monotonic() + self.limit_s, conn)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="xpresso-postgres-guard", daemon=True)
                self._thread.start()
            elif len(self._armed) == 1:
                self._cond.notify()
        try:
            yield
        except psycopg.Error as exc:
            if self._disarm(token):
                raise StorageUnavailable(f"The database did not answer within {self.limit_s:g} s, "
                                         f"try again later.") from exc
            raise
        else:
            self._disarm(token)

    def _disarm(self, token: int) -> bool:
        """Whether the statement was cut."""
        with self._cond:
            self._armed.pop(token, None)
            if token in self._cut:
                self._cut.discard(token)
                return True
            return False

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._armed and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                now = time.monotonic()
                due = [(token, conn) for token, (deadline, conn) in self._armed.items() if deadline <= now]
                if not due:
                    self._cond.wait(min(deadline for deadline, _ in self._armed.values()) - now)
                    continue
                for token, _ in due:
                    del self._armed[token]
                    self._cut.add(token)
            for _, conn in due:
                _shut_down(conn)
            self._on_hang()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(5)


def _shut_down(conn: psycopg.Connection) -> None:
    """Wake the thread waiting on ``conn``: its socket reads end of file."""
    import psycopg

    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
    except (psycopg.Error, OSError):  # already closed: nothing waits on it
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
