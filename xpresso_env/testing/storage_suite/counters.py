"""The suite's checks of the optional change counters."""
from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from xpresso_env.core.codec import to_doc
from xpresso_env.core.errors import NameConflict, NotFound
from xpresso_env.storage import ChangeCounters, CountingTx

from .records import (
    counting,
    increment_attempts,
    insert,
    make_group,
    make_harness,
    make_image,
    make_user,
    store_wide,
    uid,
    versions,
)
from .suite import StorageConformance


class ChangeCounterConformance(StorageConformance):
    """The change counters, for a backend that claims them (see the package docstring)."""

    def test_protocols_of_the_counters(self, backend):
        counters = counting(backend)
        assert isinstance(counters, ChangeCounters)
        assert type(counters.versions_store_wide) is bool
        stamp = counters.change_stamp()
        assert stamp is None or type(stamp) is int
        with counters.read() as tx:
            assert isinstance(tx, CountingTx)
        with counters.write() as tx:
            assert isinstance(tx, CountingTx)

    def test_counters_work_on_an_upgraded_store(self, make_backend):
        new, _ = self._upgraded_store(make_backend)
        keys = [("image", "alpha"), ("image", "beta")]
        before = versions(new, keys)
        insert(new, make_image(4, groups=("beta",), created=4))
        assert all(a > b for a, b in zip(versions(new, keys), before))

    def test_versions_of_keys_never_written_are_0(self, backend):
        keys = [("harness", "alpha"), ("user", ""), ("image", "beta"), ("nosuchkind", "x")]
        assert versions(backend, keys) == (0, 0, 0, 0)
        assert versions(backend, []) == ()
        with counting(backend).write() as tx:  # a write transaction reads them too
            assert tx.versions(keys) == (0, 0, 0, 0)
        insert(backend, make_harness(1, group="alpha"), make_user("u"))
        assert all(v > 0 for v in versions(backend, keys)[:2])
        if not store_wide(backend):
            assert versions(backend, keys)[2:] == (0, 0)

    def test_insert_bumps_its_group_and_its_visible_groups(self, backend):
        insert(backend, make_harness(1, group="alpha"), make_image(2, group="delta"))
        touched = [("image", "alpha"), ("image", "beta"), ("image", "gamma")]
        others = [("image", "delta"), ("harness", "alpha"), ("image", ""), ("group", "")]
        before = versions(backend, touched + others)
        insert(backend, make_image(3, group="alpha", groups=("beta", "gamma")))
        after = versions(backend, touched + others)
        assert all(a > b for a, b in zip(after[:3], before[:3])), (before, after)
        if not store_wide(backend):
            assert after[3:] == before[3:]
        # A document without a group bumps (kind, "").
        before = versions(backend, [("group", ""), ("user", "")])
        insert(backend, make_group("alpha"))
        after = versions(backend, [("group", ""), ("user", "")])
        assert after[0] > before[0]
        if not store_wide(backend):
            assert after[1] == before[1]

    def test_update_bumps_the_old_and_the_new_groups(self, backend):
        insert(backend, make_image(1, group="alpha", groups=("beta", "gamma")), make_image(2, group="zeta"))
        keys = [("image", g) for g in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")]

        def changed_by(*records: Any) -> tuple[bool, ...]:
            before = versions(backend, keys)
            with backend.write() as tx:
                for r in records:
                    tx.update(to_doc(r))
            after = versions(backend, keys)
            assert all(a >= b for a, b in zip(after, before)), (before, after)  # never backwards
            return tuple(a > b for a, b in zip(after, before))

        # beta loses the document, delta gains it, gamma and the owner alpha see it change.
        got = changed_by(make_image(1, group="alpha", groups=("gamma", "delta"), attempts=1))
        assert got[:4] == (True, True, True, True)
        if not store_wide(backend):
            assert got[4:] == (False, False)
        # The document moves to another owner group: the one that loses it is bumped too.
        got = changed_by(make_image(1, group="epsilon", groups=("gamma",)))
        assert (got[0], got[2], got[4]) == (True, True, True) and got[3] is True  # delta loses it
        if not store_wide(backend):
            assert (got[1], got[5]) == (False, False)
        # A claim-style update (get with lock, then update) bumps like any other.
        before = versions(backend, [("image", "zeta")])
        increment_attempts(backend, str(uid(2)))
        assert versions(backend, [("image", "zeta")]) > before

    def test_purge_bumps_its_group_and_its_visible_groups(self, backend):
        insert(backend, make_image(1, group="alpha", groups=("beta",)), make_harness(2))
        keys = [("image", "alpha"), ("image", "beta"), ("harness", "alpha")]
        before = versions(backend, keys)
        with backend.write() as tx:
            tx.purge("image", str(uid(1)))
        after = versions(backend, keys)
        assert after[0] > before[0] and after[1] > before[1]
        if not store_wide(backend):
            assert after[2] == before[2]

    def test_a_rolled_back_write_bumps_nothing(self, backend):
        insert(backend, make_harness(1, name="taken"), make_image(2, groups=("beta",)))
        keys = [("harness", "alpha"), ("image", "alpha"), ("image", "beta"), ("image", "gamma"), ("harness", "")]
        before = versions(backend, keys)

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with backend.write() as tx:
                tx.insert(to_doc(make_harness(3, name="new")))
                tx.update(to_doc(make_image(2, groups=("gamma",))))
                raise Boom()
        with pytest.raises(NameConflict):  # a refused write that leaves the block rolls back too
            with backend.write() as tx:
                tx.insert(to_doc(make_harness(4, name="other")))
                tx.insert(to_doc(make_harness(5, name="taken")))
        with pytest.raises(NotFound):
            with backend.write() as tx:
                tx.update(to_doc(make_harness(6)))
        assert versions(backend, keys) == before

    def test_another_backend_object_sees_a_bump_right_after_the_commit(self, backend, make_backend):
        other = make_backend()
        key = [("harness", "alpha")]
        seen_other = versions(other, key)  # warms whatever the other object caches
        insert(backend, make_harness(1))
        now_other, now_mine = versions(other, key), versions(backend, key)
        assert now_other > seen_other
        with other.write() as tx:
            tx.update(to_doc(make_harness(1, name="renamed")))
        assert versions(other, key) > now_other
        assert versions(backend, key) > now_mine  # and the other way round

    def test_backend_versions_outside_a_transaction_agree_with_tx_versions(self, backend, make_backend):
        keys = [("harness", "alpha"), ("group", ""), ("image", "beta")]
        mine, other = counting(backend), counting(make_backend())
        assert mine.versions(keys) == versions(backend, keys)
        before = other.versions(keys)
        insert(backend, make_harness(1, group="alpha"))
        after = other.versions(keys)
        assert after[0] > before[0] and after == versions(other, keys)
        assert mine.versions([]) == ()


    def test_counters_and_data_are_one_snapshot_under_concurrent_writes(self, backend, make_backend):
        """A reader sees a counter and the data it counts together: the same value always comes
        with the same data, a larger amount of data with a larger value, never backwards; and
        after each commit, another object's versions() is larger than before it."""
        commits = 20
        watcher, reader = make_backend(), counting(make_backend())
        key = [("harness", "alpha")]
        done = threading.Event()
        seen: list[tuple[int, int]] = []  # (version, number of documents) in one read transaction
        errors: list[BaseException] = []

        def read_loop() -> None:
            try:
                while not done.is_set():
                    with reader.read() as tx:
                        (v,) = tx.versions(key)
                        seen.append((v, len(tx.query("harness", "alpha"))))
            except BaseException as exc:  # reported below
                errors.append(exc)

        def write_loop() -> None:
            try:
                last = versions(watcher, key)
                for i in range(commits):
                    insert(backend, make_harness(i + 1, created=i))
                    now = versions(watcher, key)
                    assert now > last, (i, last, now)
                    last = now
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                done.set()

        threads = [threading.Thread(target=read_loop), threading.Thread(target=write_loop)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.CHILD_TIMEOUT_S)
        assert not any(t.is_alive() for t in threads), "threads hung"
        assert not errors, errors
        seen.append((versions(reader, key)[0], commits))
        count_of: dict[int, int] = {}
        for v, n in seen:
            assert count_of.setdefault(v, n) == n, f"version {v} came with {count_of[v]} and {n} documents"
        assert seen == sorted(seen), "went backwards"

    def test_concurrent_writers_to_shared_groups_all_bump(self, backend):
        """Writers touching the same counters in different orders neither deadlock nor lose a bump."""
        per_thread = 5

        def work(i: int) -> None:
            shared = ("s1", "s2") if i % 2 else ("s2", "s1")
            for k in range(per_thread):
                insert(backend, dataclasses.replace(
                    to_doc(make_image(1000 * (i + 1) + k, group=f"own{i}", created=k)), visible=shared))

        keys = [("image", "s1"), ("image", "s2")]
        before = versions(backend, keys)
        assert self._run_threads(self.THREADS, work) == []
        after = versions(backend, keys)
        assert all(a - b >= self.THREADS * per_thread for a, b in zip(after, before)), (before, after)
        with backend.read() as tx:
            assert len(tx.query("image", "s1")) == self.THREADS * per_thread
