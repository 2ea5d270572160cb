"""A SQLite read of one statement runs alone, without BEGIN and COMMIT (issue 15): the registry's
reads by id and by name, whose authentication read nothing (memo and counters known at the stamp)."""
from __future__ import annotations

import pytest
from xpresso_env_plugins.storage_sqlite import SQLiteStorage

from xpresso_env.core.codec import to_doc
from xpresso_env.testing.storage_suite import make_harness


def _store(path):
    store = SQLiteStorage(path)
    store.init()
    return store


def _seeded(tmp_path):
    store = _store(tmp_path / "x.db")
    doc = to_doc(make_harness(1, group="g1"))
    with store.write() as tx:
        tx.insert(doc)
    return store, doc


def test_a_read_begins_at_its_first_statement_and_commits(tmp_path):
    store, doc = _seeded(tmp_path)
    with store.read() as tx:
        assert not tx.begun  # nothing read yet: no BEGIN
        assert tx.get(doc.kind, doc.id).body == doc.body
        assert tx.begun
        assert tx.get(doc.kind, doc.id) is not None  # a second statement, same transaction
    with store.read() as tx:
        pass  # nothing read: nothing to begin or end
    assert not tx.begun


def test_one_statement_left_reads_alone_and_refuses_a_second(tmp_path):
    store, doc = _seeded(tmp_path)
    with store.read() as tx:
        tx.one_statement_left()
        assert tx.get(doc.kind, doc.id).body == doc.body
        assert not tx.begun  # autocommit: the statement was its own snapshot
        with pytest.raises(RuntimeError):
            tx.get(doc.kind, doc.id)
    # The connection is left outside any transaction: the next write and read work as ever.
    with store.write() as tx:
        tx.update(to_doc(make_harness(1, group="g1", name="renamed")))
    with store.read() as tx:
        tx.one_statement_left()
        assert tx.get(doc.kind, doc.id).name == "renamed"


def test_one_statement_left_after_a_statement_changes_nothing(tmp_path):
    store, doc = _seeded(tmp_path)
    with store.read() as tx:
        tx.versions([(doc.kind, "g1")])  # authentication read something: BEGIN was issued
        tx.one_statement_left()
        assert tx.begun
        tx.get(doc.kind, doc.id)
        tx.get(doc.kind, doc.id)  # still one transaction


def test_an_error_in_a_statement_alone_leaves_no_transaction_open(tmp_path):
    store, doc = _seeded(tmp_path)
    with pytest.raises(ZeroDivisionError):
        with store.read() as tx:
            tx.one_statement_left()
            tx.get(doc.kind, doc.id)
            1 / 0
    with store.write() as tx:  # BEGIN IMMEDIATE would fail inside an open transaction
        tx.purge(doc.kind, doc.id)
