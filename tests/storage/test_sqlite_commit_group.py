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


class Writers:
    """QUEUED + 1 threads, each inserting harness n: writer 0 holds its block open until
    ``release()``, the others queue behind it. What each saw or raised is kept by n."""

    def __init__(self, store: SQLiteStorage, failing: int = -1):
        self.store = store
        self.failing = failing  # the writer whose block raises ValueError
        self.holding, self.go = threading.Event(), threading.Event()
        self.raised: dict[int, BaseException] = {}
        self.visible_on_return: dict[int, bool] = {}
        self.threads = [threading.Thread(target=self._write, args=(n,)) for n in range(QUEUED + 1)]

    def _write(self, n: int) -> None:
        try:
            with self.store.write() as tx:
                tx.insert(to_doc(make_harness(n)))
                if n == 0:
                    self.holding.set()
                    assert self.go.wait(10)
                if n == self.failing:
                    raise ValueError("this block fails")
        except BaseException as exc:
            self.raised[n] = exc
            return
        # Returned: the change is durable and visible to everyone.
        self.visible_on_return[n] = make_harness(n).name in _committed_names(self.store)

    def queue(self) -> None:
        """Start writer 0, then the others once it holds its block; return when all of them wait
        for the writer lock it holds."""
        deadline = time.monotonic() + 10
        self.threads[0].start()
        assert self.holding.wait(10)
        for t in self.threads[1:]:
            t.start()
        while self.store._groups.waiting() < QUEUED:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def release(self) -> None:
        self.go.set()
        for t in self.threads:
            t.join(10)


def test_writers_queued_behind_a_write_commit_with_it_in_one_commit(store):
    stamp_before = store.change_stamp()
    writers = Writers(store)
    writers.queue()
    writers.release()
    assert writers.raised == {}
    assert writers.visible_on_return == {n: True for n in range(QUEUED + 1)}
    assert len(_committed_names(store)) == QUEUED + 1
    # One COMMIT for the five writes: the commit sequence moved once.
    assert store.change_stamp() == stamp_before + 1


def test_a_member_whose_block_raises_loses_only_its_own_changes(store):
    writers = Writers(store, failing=2)
    writers.queue()
    writers.release()
    assert set(writers.raised) == {2} and isinstance(writers.raised[2], ValueError)
    assert _committed_names(store) == {make_harness(n).name for n in range(QUEUED + 1) if n != 2}


def test_when_the_group_commit_fails_every_member_raises_and_nothing_is_kept(store, monkeypatch):
    real_commit = store._commit

    def failing_commit(conn, changed):
        conn.execute("ROLLBACK")
        raise StorageUnavailable("SQLite error: disk I/O error")

    writers = Writers(store)
    writers.queue()
    monkeypatch.setattr(store, "_commit", failing_commit)
    writers.release()
    assert sorted(writers.raised) == list(range(QUEUED + 1))
    assert all(isinstance(e, StorageUnavailable) for e in writers.raised.values())
    assert "not committed" in str(writers.raised[1])
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
