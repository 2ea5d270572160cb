"""The PostgreSQL listener's own edges (issue 19): its connection killed by the server
(``pg_terminate_backend``) is replaced and says "you may have missed notices" (None) once; a
database it cannot reach costs no exception, one warning, and it listens once the database is
there. The contract itself is the conformance suite's (``ChangeNoticeConformance``)."""
from __future__ import annotations

import logging

import pytest

from xpresso_env.storage import Notice
from xpresso_env.testing.storage_suite import open_backend
from xpresso_env.testing.storage_suite.notices import collect, listening


@pytest.fixture
def pg_backend(pg_dsn):
    backend = open_backend({"storage": {"backend": "postgres", "dsn": pg_dsn}})
    backend.init()
    yield backend
    backend.close()


def _terminate(dsn: str, pid: int) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:  # a connection of the test's own
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_killed_listening_connection_is_replaced(pg_backend, pg_dsn, caplog):
    listener = listening(pg_backend)
    try:
        pid = listener.backend_pid
        assert pid is not None
        _terminate(pg_dsn, pid)
        with caplog.at_level(logging.INFO, logger="xpresso_env.storage.postgres"):
            answers = [listener.wait(1.0)]
            while answers[-1] is not None and len(answers) < 5:
                answers.append(listener.wait(1.0))
        # The loss is noticed ([]), the next wait connects again and says notices may be lost (None).
        assert answers[0] == [] and answers[-1] is None, answers
        assert listener.backend_pid not in (None, pid)
        messages = [r.getMessage() for r in caplog.records]
        assert any("listening connection was lost" in m for m in messages), messages
        assert any("listening again" in m for m in messages), messages
        with pg_backend.write() as tx:
            tx.notify("builds", "after")
        assert Notice("builds", "after") in collect(listener, Notice("builds", "after"))
    finally:
        listener.close()


def test_an_unreachable_database_is_retried_without_an_error(caplog):
    from xpresso_env_plugins.storage_postgres.notices import PostgresListener

    # Port 1 on the loopback: connection refused at once.
    listener = PostgresListener("host=127.0.0.1 port=1 dbname=nowhere", timeout_s=1.0, retry_s=0.2)
    try:
        with caplog.at_level(logging.WARNING, logger="xpresso_env.storage.postgres"):
            answers = [listener.wait(0.3) for _ in range(4)]
        assert answers == [[], [], [], []]
        warnings = [r.getMessage() for r in caplog.records if "cannot listen" in r.getMessage()]
        assert len(warnings) == 1, warnings  # said once, not at every retry
    finally:
        listener.close()
