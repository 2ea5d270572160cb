"""Change notices on PostgreSQL: NOTIFY with the commit, LISTEN on a connection of its own.

A write transaction's notices (``PostgresTx.notify``) are sent by ``pg_notify`` statements in the
same round trip as its COMMIT (``store.py``; no extra round trip per write): PostgreSQL delivers
them when the commit succeeds, to every session listening on the channel, and never for a rolled
back transaction. One channel for the
whole store; the payload is ``<topic>:<key>``.

A listener holds a dedicated autocommit connection (not a pooled one: LISTEN belongs to its
session) that waits in ``select`` on the connection's socket and on a pipe ``interrupt`` writes
to, so a stopping service does not wait for a timeout. A lost connection (the server restarted, a
``pg_terminate_backend``) is noticed when its socket reports the error; an idle connection is
also checked every ``HEALTH_CHECK_S`` (``SELECT 1``; notices that arrive meanwhile are kept by
psycopg for the next ``notifies()``), and TCP keepalives find a peer that vanished. The listener
then connects again, every ``retry_s`` until it succeeds, and its next ``wait`` returns None:
what was sent while nobody listened is lost, so every waiting loop looks once.
"""
from __future__ import annotations

import logging
import math
import os
import select
import time
from typing import TYPE_CHECKING, Iterable, Optional

from xpresso_env.storage import Notice

if TYPE_CHECKING:
    import psycopg
    import psycopg.sql

log = logging.getLogger("xpresso_env.storage.postgres")

CHANNEL = "xpresso_changes"
HEALTH_CHECK_S = 30.0  # an idle listening connection is checked this often
RETRY_S = 1.0  # a lost connection is tried again this often
APPLICATION_NAME = "xpresso-env-notices"  # in pg_stat_activity: which sessions are listeners


def payload(topic: str, key: str) -> str:
    return f"{topic}:{key}"


def parse(text: str) -> Notice:
    topic, _, key = text.partition(":")
    return Notice(topic, key)


def commit_sending(payloads: Iterable[str]) -> psycopg.sql.Composed:
    """COMMIT, preceded by a NOTIFY of each payload in the same round trip (a simple query of
    several statements: no parameters, so the payloads are quoted literals). Should a NOTIFY
    fail, the COMMIT is not run and the transaction is left aborted: the caller rolls it back."""
    from psycopg import sql

    notify = sql.SQL("SELECT pg_notify({}, {})")
    return sql.SQL("; ").join([notify.format(sql.Literal(CHANNEL), sql.Literal(p)) for p in payloads]
                              + [sql.SQL("COMMIT")])


class PostgresListener:
    """``NoticeListener`` (``xpresso_env.storage``) on PostgreSQL. One thread calls ``wait``;
    ``interrupt`` may be called from any thread, ``close`` once the waiting thread is done."""

    def __init__(self, dsn: str, timeout_s: float, retry_s: float = RETRY_S,
                 health_check_s: float = HEALTH_CHECK_S):
        self._dsn = dsn
        self._connect_timeout = max(1, math.ceil(timeout_s))
        self._retry_s = retry_s
        self._health_check_s = health_check_s
        self._conn: Optional[psycopg.Connection] = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._next_try = 0.0
        self._checked = 0.0  # when the connection was last known alive
        self._lost = False  # a connection was lost and not yet replaced: said once, not at every retry

    @property
    def backend_pid(self) -> Optional[int]:
        """The listening session's pid on the server (None while not connected)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def wait(self, timeout_s: float) -> Optional[list[Notice]]:
        import psycopg

        deadline = time.monotonic() + timeout_s
        conn = self._conn
        if conn is None:
            return self._reconnect(deadline)
        try:
            now = time.monotonic()
            if now - self._checked >= self._health_check_s:
                conn.execute("SELECT 1")
                self._checked = now
            ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], max(0.0, deadline - now))
            if self._wake_r in ready:
                self._drain()
            # Also when only the pipe woke us: notices received during the health check wait in psycopg.
            notices = [parse(n.payload) for n in conn.notifies(timeout=0) if n.channel == CHANNEL]
            self._checked = time.monotonic()
            return notices
        except psycopg.Error as exc:
            log.warning("change notices: the listening connection was lost (%s); connecting again",
                        _first_line(exc))
            self._drop()
            self._lost = True
            self._next_try = 0.0  # at once: the server may already be back
            return []

    def _reconnect(self, deadline: float) -> Optional[list[Notice]]:
        import psycopg

        now = time.monotonic()
        if now < self._next_try:
            self._pause(min(deadline, self._next_try) - now)
            return []
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout,
                                   application_name=APPLICATION_NAME, keepalives=1, keepalives_idle=30,
                                   keepalives_interval=10, keepalives_count=3)
            try:
                conn.execute(f"LISTEN {CHANNEL}")
            except BaseException:
                conn.close()
                raise
        except psycopg.Error as exc:
            if not self._lost:
                log.warning("change notices: cannot listen (%s); the loops poll until it works, "
                            "trying again every %g s", _first_line(exc), self._retry_s)
                self._lost = True
            self._next_try = time.monotonic() + self._retry_s
            self._pause(min(deadline, self._next_try) - time.monotonic())
            return []
        if self._lost:
            log.info("change notices: listening again")
            self._lost = False
        self._conn = conn
        self._checked = time.monotonic()
        return None  # nobody listened until now: whatever was sent meanwhile is lost

    def _pause(self, seconds: float) -> None:
        """Sleep, unless interrupted."""
        if seconds > 0:
            ready, _, _ = select.select([self._wake_r], [], [], seconds)
            if ready:
                self._drain()

    def _drain(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def interrupt(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already pending, or closed

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self) -> None:
        self._drop()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
