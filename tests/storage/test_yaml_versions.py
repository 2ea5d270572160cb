"""The YAML backend's change counter: one stamp for the whole store, kept by each backend object,
that moves with every change of the data the object can see -- its own commits, other processes'
commits and hand edits -- and with nothing else."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from xpresso_env_plugins.storage_yaml import YamlStorage

from xpresso_env.core.codec import to_doc
from xpresso_env.core.errors import StorageError, StorageUnavailable
from xpresso_env.testing.storage_suite import insert, make_harness, uid, versions

KEYS = [("harness", "alpha"), ("engine", "beta"), ("group", "")]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "xpresso.yaml"


@pytest.fixture
def store(path: Path):
    backend = YamlStorage(path, busy_timeout_s=5.0)
    backend.init()
    yield backend
    backend.close()


def stamp(backend: YamlStorage) -> int:
    values = versions(backend, KEYS)
    assert len(set(values)) == 1, values  # one counter for the whole store
    return values[0]


def hand_edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_declared_store_wide_and_0_until_something_is_stored(store, path):
    assert YamlStorage.versions_store_wide is True
    assert stamp(store) == 0
    store.init()  # rewriting an empty store changes no data
    assert stamp(store) == 0
    fresh = YamlStorage(path)
    try:
        assert stamp(fresh) == 0
    finally:
        fresh.close()
    insert(store, make_harness(1))
    assert stamp(store) == 1


def test_every_commit_moves_it_and_reads_do_not(store):
    insert(store, make_harness(1))
    first = stamp(store)
    assert stamp(store) == first
    with store.write():  # a write transaction that changes nothing
        pass
    assert stamp(store) == first
    with store.write() as tx:
        tx.insert(to_doc(make_harness(2, name="two")))
        pending = tx.versions(KEYS)
    assert pending == (first + 1,) * len(KEYS) == versions(store, KEYS)  # what the commit published


def test_hand_edits_move_it(store, path):
    insert(store, make_harness(1, name="before"))
    other = YamlStorage(path)
    try:
        seen, seen_other = stamp(store), stamp(other)
        hand_edit(path, "name: before", "name: after-a-hand-edit")  # in place, as `echo >` does
        assert stamp(store) > seen and stamp(other) > seen_other
    finally:
        other.close()
    seen = stamp(store)
    text = path.read_text().replace("name: after-a-hand-edit", "name: after-a-hand-EDIT")
    tmp = path.with_name("edited.yaml")
    tmp.write_text(text)
    os.replace(tmp, path)  # a new file of the same size, as most editors save
    assert stamp(store) > seen
    with store.read() as tx:
        assert tx.get("harness", str(uid(1))).name == "after-a-hand-EDIT"


def test_a_refused_file_keeps_it_with_the_last_good_data_and_the_fix_moves_it(store, path):
    insert(store, make_harness(1, name="good"))
    seen = stamp(store)
    hand_edit(path, "  name: good\n", "  name: good: oops\n")
    assert stamp(store) == seen  # reads go on from the last good data, and so does the stamp
    with pytest.raises(StorageError):
        insert(store, make_harness(2))
    assert stamp(store) == seen
    hand_edit(path, "  name: good: oops\n", "  name: fixed\n")
    assert stamp(store) > seen


def test_a_failed_commit_leaves_it(store, path, monkeypatch):
    insert(store, make_harness(1))
    seen = stamp(store)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # a double for a full disk: cannot be made here
    with pytest.raises(StorageUnavailable):
        insert(store, make_harness(2, name="lost"))
    monkeypatch.undo()
    assert stamp(store) == seen


def test_it_never_goes_back_even_when_a_hand_edit_empties_the_store(store, path):
    insert(store, make_harness(1))
    seen = stamp(store)
    path.write_text("schema_version: 2\n", encoding="utf-8")
    emptied = stamp(store)
    assert emptied > seen
    with store.read() as tx:
        assert tx.query("harness") == []
