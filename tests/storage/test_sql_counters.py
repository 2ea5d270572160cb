"""Change counters on the SQL backends (sqlite, postgres): what the conformance suite cannot ask of
every backend -- the upgrade to schema 3, and PostgreSQL's row locks and READ COMMITTED races."""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Iterator

import pytest

from xpresso_env.core.codec import to_doc
from xpresso_env.testing import require
from xpresso_env.testing.postgres import postgres_available, temp_database
from xpresso_env.testing.storage_suite import (
    insert,
    make_group,
    make_harness,
    make_image,
    make_user,
    open_backend,
    versions,
)


@pytest.fixture(params=["sqlite", "postgres"])
def spec(request, tmp_path) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {"storage": {"backend": "sqlite", "path": str(tmp_path / "xpresso.sqlite3")}}
        return
    require(postgres_available(), "PostgreSQL is not reachable (set XPRESSO_TEST_PG_ADMIN_DSN)")
    with temp_database() as dsn:
        yield {"storage": {"backend": "postgres", "dsn": dsn, "busy_timeout_s": 5.0}}


def _maker(spec: dict[str, Any]):
    opened = []

    def make_backend():
        backend = open_backend(spec)
        opened.append(backend)
        return backend

    return make_backend, opened


@pytest.fixture
def make(spec):
    make_backend, opened = _maker(spec)
    yield make_backend
    for backend in opened:
        backend.close()


@pytest.fixture
def pg_make(pg_dsn):
    make_backend, opened = _maker({"storage": {"backend": "postgres", "dsn": pg_dsn, "busy_timeout_s": 5.0}})
    yield make_backend
    for backend in opened:
        backend.close()


def test_upgrade_to_3_starts_the_counters_of_what_is_stored_at_1(make):
    old = make()
    assert old.schema_version >= 3
    old.init(target_version=2)
    insert(old, make_group("alpha"), make_user("carol"), make_harness(1, group="alpha"),
           dataclasses.replace(to_doc(make_image(2, group="alpha")), visible=("beta",)))
    old.init(target_version=3)
    keys = [("group", ""), ("user", ""), ("harness", "alpha"), ("image", "alpha"), ("image", "beta"),
            ("harness", "beta"), ("engine", "alpha"), ("image", "")]
    assert versions(old, keys) == (1, 1, 1, 1, 1, 0, 0, 0)
    insert(old, make_harness(3, group="alpha"))
    assert versions(old, keys)[2] == 2


def test_an_object_that_saw_schema_2_bumps_once_another_upgraded_the_store(make):
    # Only "the counters exist" is remembered: a server must not go on skipping bumps after an
    # upgrade made by another process (`xpresso-env init`).
    early = make()
    early.init(target_version=2)
    insert(early, make_harness(1))  # schema 2: nothing to bump
    make().init()
    insert(early, make_harness(2))
    assert versions(early, [("harness", "alpha")]) == (2,)  # 1 from the upgrade, 1 from this write


def test_postgres_writers_of_one_group_do_not_wait_for_each_other_before_commit(pg_make):
    # The counter rows are locked by the bump just before COMMIT, not from the first write: a
    # transaction that is slow to finish does not hold up the other writers of its group.
    # (PostgreSQL only: SQLite has one writer at a time.)
    make = pg_make
    backend = make()
    backend.init()
    written, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with backend.write() as tx:
                tx.insert(to_doc(make_harness(1)))
                written.set()
                release.wait(10)
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=slow_writer)
    t.start()
    try:
        assert written.wait(10)
        before = versions(backend, [("harness", "alpha")])
        insert(make(), make_harness(2))  # would time out (5 s lock_timeout) if it had to wait
        assert versions(backend, [("harness", "alpha")]) == (before[0] + 1,)
    finally:
        release.set()
        t.join(10)
    assert not errors
    assert versions(backend, [("harness", "alpha")]) == (before[0] + 2,)


def test_postgres_a_concurrent_move_bumps_the_group_the_document_really_left(pg_make):
    # READ COMMITTED: an update that waited for another one to commit must take the old group
    # from the row as that one left it (beta), not from its own statement's snapshot (alpha).
    backend = pg_make()
    backend.init()
    other = pg_make()
    insert(backend, make_harness(1, group="alpha"))
    keys = [("harness", "alpha"), ("harness", "beta"), ("harness", "gamma")]
    before = versions(backend, keys)
    moved, release, second_started = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:  # alpha -> beta, committed only once the second update waits for it
        try:
            with backend.write() as tx:
                tx.update(to_doc(make_harness(1, group="beta")))
                moved.set()
                release.wait(10)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def second() -> None:  # beta -> gamma, blocked on the row until the first commits
        try:
            assert moved.wait(10)
            second_started.set()
            with other.write() as tx:
                tx.update(to_doc(make_harness(1, group="gamma")))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    assert second_started.wait(10)
    threading.Event().wait(0.3)  # let the second update reach the row lock
    release.set()
    for t in threads:
        t.join(20)
    assert not errors, errors
    after = versions(backend, keys)
    # alpha: left once; beta: gained, then left; gamma: gained.
    assert [a - b for a, b in zip(after, before)] == [1, 2, 1]
    with backend.read() as tx:
        assert tx.get("harness", to_doc(make_harness(1)).id).group == "gamma"


def test_postgres_a_refused_bump_rolls_the_write_back_and_the_store_goes_on(pg_make, pg_dsn):
    # The bump is the last statement before COMMIT: if it cannot get the counter
    # row, the whole write is rolled back and reported as busy, and the connection stays usable.
    import psycopg

    from xpresso_env.core.errors import StorageUnavailable

    backend = pg_make()
    backend.init()
    insert(backend, make_harness(1))
    quick = open_backend({"storage": {"backend": "postgres", "dsn": pg_dsn, "busy_timeout_s": 0.3, "pool_max": 1}})
    try:
        with psycopg.connect(pg_dsn) as holder:  # holds the counter row, as a writer mid-commit would
            holder.execute("SELECT n FROM xpresso_counters WHERE kind = 'harness' AND grp = 'alpha' FOR UPDATE")
            with pytest.raises(StorageUnavailable):
                insert(quick, make_harness(2))
            holder.rollback()
        with quick.read() as tx:
            assert tx.get("harness", to_doc(make_harness(2)).id) is None
        insert(quick, make_harness(2))  # the same (only) pooled connection works again
        assert versions(quick, [("harness", "alpha")]) == (2,)
    finally:
        quick.close()


def test_a_write_touching_more_keys_than_one_statement_holds_bumps_them_all(make):
    # The bump goes out in several statements past BUMP_CHUNK keys (SQLite's parameter limit).
    from xpresso_env.storage.sql_counters import BUMP_CHUNK

    backend = make()
    backend.init()
    groups = [f"g{i:04d}" for i in range(BUMP_CHUNK * 2 + 5)]
    insert(backend, *[make_harness(i + 1, group=g) for i, g in enumerate(groups)])
    keys = [("harness", g) for g in groups]
    got = [v for start in range(0, len(keys), 200) for v in versions(backend, keys[start:start + 200])]
    assert got == [1] * len(groups)
    assert versions(backend, [("harness", "untouched")]) == (0,)
