"""SQLite's writers' queue across processes (plugins/storage_sqlite/writers.py): a write waits its
turn on the lock file, not in SQLite's busy handler, and goes the moment the turn is free."""
from __future__ import annotations

import threading
import time

from xpresso_env_plugins.storage_sqlite import SQLiteStorage
from xpresso_env_plugins.storage_sqlite.writers import WriterQueue, writers_path

from xpresso_env.core.codec import to_doc
from xpresso_env.testing.storage_suite import make_harness


def test_a_write_waits_for_another_process_turn_and_goes_when_it_ends(tmp_path):
    store = SQLiteStorage(tmp_path / "x.db")
    store.init()
    other = WriterQueue(writers_path(tmp_path / "x.db"))  # its own descriptor: as another process holds it
    done = threading.Event()
    finished_at: list[float] = []

    def write() -> None:
        with store.write() as tx:
            tx.insert(to_doc(make_harness(1)))
        finished_at.append(time.monotonic())
        done.set()

    try:
        with other.turn():
            writer = threading.Thread(target=write)
            writer.start()
            assert not done.wait(0.5), "the write went while another process held its turn"
            released = time.monotonic()
        assert done.wait(5)
        writer.join(5)
        # Woken by the kernel, not by a poll: well under SQLite's busy-handler steps (up to 100 ms).
        assert finished_at[0] - released < 0.05, finished_at[0] - released
        with store.read() as tx:
            assert len(tx.query("harness")) == 1
    finally:
        other.close()
        store.close()
