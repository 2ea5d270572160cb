"""SQLite's commit sequence: the store-wide stamp the response cache trusts without a query."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from xpresso_env_plugins.storage_sqlite import CommitSequence, SQLiteStorage, commit_sequence_path

from xpresso_env.core.codec import to_doc
from xpresso_env.storage import STAMPED_KINDS, Doc
from xpresso_env.testing.storage_suite import make_harness


def _store(path):
    store = SQLiteStorage(path)
    store.init()
    return store


def test_stamp_is_stable_without_writes_and_moves_with_each(tmp_path):
    a, b = _store(tmp_path / "x.db"), SQLiteStorage(tmp_path / "x.db")
    first = a.change_stamp()
    assert first is not None and b.change_stamp() == first
    with a.read() as tx:
        tx.query("harness")
    assert a.change_stamp() == first  # reads move nothing
    with a.write() as tx:
        tx.insert(to_doc(make_harness(1)))
    assert a.change_stamp() > first and b.change_stamp() == a.change_stamp()
    second = b.change_stamp()
    with b.write() as tx:  # the other object writes: the first sees it
        tx.update(to_doc(make_harness(1, name="renamed")))
    assert a.change_stamp() > second


def test_a_rolled_back_or_empty_write_is_harmless(tmp_path):
    a = _store(tmp_path / "x.db")
    before = a.change_stamp()
    with a.write() as tx:
        tx.query("harness")
    assert a.change_stamp() == before  # nothing written, nothing bumped
    try:
        with a.write() as tx:
            tx.insert(to_doc(make_harness(1)))
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    assert a.change_stamp() == before  # rolled back before COMMIT: never bumped


def test_a_write_in_flight_gives_no_stamp_and_a_dead_writer_heals(tmp_path):
    a = _store(tmp_path / "x.db")
    seq = CommitSequence(commit_sequence_path(tmp_path / "x.db"))  # another writer's view of the file
    mine = seq.begin()  # a writer between its two steps...
    assert a.change_stamp() is None
    seq.end(mine)
    assert a.change_stamp() == mine
    seq.begin()  # ...and one that dies there: no stamp until the next writer finishes
    assert a.change_stamp() is None
    with a.write() as tx:
        tx.insert(to_doc(make_harness(2)))
    assert a.change_stamp() is not None
    seq.close()


def test_another_process_write_moves_the_stamp(tmp_path):
    path = tmp_path / "x.db"
    a = _store(path)
    before = a.change_stamp()
    code = textwrap.dedent(f"""
        from xpresso_env.core.codec import to_doc
        from xpresso_env.testing.storage_suite import make_harness
        from xpresso_env_plugins.storage_sqlite import SQLiteStorage
        s = SQLiteStorage({str(path)!r})
        with s.write() as tx:
            tx.insert(to_doc(make_harness(7)))
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert a.change_stamp() > before


def test_only_writes_of_stamped_kinds_move_the_stamp(tmp_path):
    """The probes write their state hundreds of times a second: those writes must not make every
    cached answer look stale. Records, users, revocations and groups still move it, whatever else
    the same transaction writes; purging a stamped document moves it too."""
    a = _store(tmp_path / "x.db")
    state = Doc(kind="probe_state", id="h1", group="g1", name=None, deleted=False, created="2024", body={"n": 1})
    before = a.change_stamp()
    with a.write() as tx:
        tx.insert(state)
    with a.write() as tx:
        tx.update(Doc(**{**state.__dict__, "body": {"n": 2}}))
        tx.purge("probe_state", "h1")
    assert a.change_stamp() == before
    for kind in sorted(STAMPED_KINDS):
        with a.write() as tx:
            tx.insert(Doc(kind=kind, id=f"{kind}-1", group=None, name=None, deleted=False, created="2024", body={}))
            tx.insert(Doc(kind="probe_state", id=f"{kind}-1", group=None, name=None, deleted=False, created="2024",
                          body={}))
        assert a.change_stamp() > before, kind
        before = a.change_stamp()
    with a.write() as tx:
        tx.purge("harness", "harness-1")
    assert a.change_stamp() > before


def test_the_stamped_kinds_are_every_kind_a_cached_answer_depends_on():
    from xpresso_env.access.reads import AUTH_KEYS
    from xpresso_env.registry.service import ENGINE, HARNESS

    assert {k for k, _ in AUTH_KEYS} | {HARNESS.kind, ENGINE.kind} <= STAMPED_KINDS
