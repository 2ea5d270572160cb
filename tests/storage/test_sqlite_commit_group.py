"""Group commit on SQLite (plugins/storage_sqlite/commit_group.py): the writers of a process that
queue behind a write join its transaction and one COMMIT makes them all durable; a block that
raises loses only its own changes; no writer returns before the COMMIT that holds its changes."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from xpresso_env_plugins.storage_sqlite import SQLiteStorage

from xpresso_env.core.codec import to_doc
from xpresso_env.core.errors import StorageUnavailable
from xpresso_env.testing.storage_suite import make_harness

QUEUED = 4


@pytest.fixture
def store(tmp_path):
    s = SQLiteStorage(tmp_path / "x.db")
    s.init()
    yield s
    s.close()


def _committed_names(store: SQLiteStorage) -> set[str]:
    """What another connection sees: only what was committed."""
    conn = sqlite3.connect(store.path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM docs WHERE kind = 'harness'")}
    finally:
        conn.close()


def _queue_behind_a_held_write(store: SQLiteStorage, write_one, first_hold: threading.Event):
    """Start a write that holds its block open, then QUEUED writers behind it; returns the threads
    once all of them wait for the writer lock."""
    threads = [threading.Thread(target=write_one, args=(0,))]
    threads[0].start()
    deadline = time.monotonic() + 10
    while not first_hold.is_set():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for n in range(1, QUEUED + 1):
        threads.append(threading.Thread(target=write_one, args=(n,)))
        threads[-1].start()
    while store._groups.waiting() < QUEUED:  # all of them wait for the lock the first one holds
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return threads


def test_writers_queued_behind_a_write_commit_with_it_in_one_commit(store):
    holding, go = threading.Event(), threading.Event()
    seen_after_return: dict[int, bool] = {}
    stamp_before = store.change_stamp()

    def write_one(n: int) -> None:
        with store.write() as tx:
            tx.insert(to_doc(make_harness(n)))
            if n == 0:
                holding.set()
                assert go.wait(10)
        # Returned: the change is durable and visible to everyone.
        seen_after_return[n] = make_harness(n).name in _committed_names(store)

    threads = _queue_behind_a_held_write(store, write_one, holding)
    go.set()
    for t in threads:
        t.join(10)
    assert all(seen_after_return.get(n) for n in range(QUEUED + 1)), seen_after_return
    assert len(_committed_names(store)) == QUEUED + 1
    # One COMMIT for the five writes: the commit sequence moved once.
    assert store.change_stamp() == stamp_before + 1


def test_a_member_whose_block_raises_loses_only_its_own_changes(store):
    holding, go = threading.Event(), threading.Event()
    raised: dict[int, BaseException] = {}

    def write_one(n: int) -> None:
        try:
            with store.write() as tx:
                tx.insert(to_doc(make_harness(n)))
                if n == 0:
                    holding.set()
                    assert go.wait(10)
                if n == 2:
                    raise ValueError("this block fails")
        except BaseException as exc:
            raised[n] = exc

    threads = _queue_behind_a_held_write(store, write_one, holding)
    go.set()
    for t in threads:
        t.join(10)
    assert set(raised) == {2} and isinstance(raised[2], ValueError)
    names = _committed_names(store)
    assert make_harness(2).name not in names
    assert names == {make_harness(n).name for n in range(QUEUED + 1) if n != 2}


def test_when_the_group_commit_fails_every_member_raises_and_nothing_is_kept(store, monkeypatch):
    holding, go = threading.Event(), threading.Event()
    raised: dict[int, BaseException] = {}
    real_commit = store._commit

    def failing_commit(conn, changed):
        conn.execute("ROLLBACK")
        raise StorageUnavailable("SQLite error: disk I/O error")

    def write_one(n: int) -> None:
        try:
            with store.write() as tx:
                tx.insert(to_doc(make_harness(n)))
                if n == 0:
                    holding.set()
                    assert go.wait(10)
        except BaseException as exc:
            raised[n] = exc

    threads = _queue_behind_a_held_write(store, write_one, holding)
    monkeypatch.setattr(store, "_commit", failing_commit)
    go.set()
    for t in threads:
        t.join(10)
    assert sorted(raised) == list(range(QUEUED + 1))
    assert all(isinstance(e, StorageUnavailable) for e in raised.values())
    assert "not committed" in str(raised[1])
    assert _committed_names(store) == set()
    # The store goes on: the next write commits on its own.
    monkeypatch.setattr(store, "_commit", real_commit)
    with store.write() as tx:
        tx.insert(to_doc(make_harness(9)))
    assert _committed_names(store) == {make_harness(9).name}


def test_a_lone_write_commits_at_once(store):
    stamp = store.change_stamp()
    for n in range(3):
        with store.write() as tx:
            tx.insert(to_doc(make_harness(n)))
        assert make_harness(n).name in _committed_names(store)
    assert store.change_stamp() == stamp + 3
