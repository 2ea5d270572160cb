"""The suite's checks of transactions and of threads writing at once."""
from __future__ import annotations

import threading

import pytest

from xpresso_env.core.codec import from_doc, to_doc
from xpresso_env.core.errors import AlreadyExists, NameConflict, NotFound

from .base import SuiteBase
from .records import ids, increment_attempts, insert, make_harness, make_image, uid


class TransactionChecks(SuiteBase):
    """Transactions: rollback, snapshots, several backend objects, threads."""

    # -- transactions ----------------------------------------------------------------------------

    def test_exception_rolls_back_the_whole_write(self, backend):
        insert(backend, make_harness(1, name="keep"), make_image(2, groups=("beta",)))

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with backend.write() as tx:
                tx.insert(to_doc(make_harness(3, name="new")))
                tx.update(to_doc(make_harness(1, name="renamed")))
                tx.update(to_doc(make_image(2, groups=("gamma",))))
                assert tx.get("harness", str(uid(3))) is not None  # the tx sees its own writes
                raise Boom()
        with pytest.raises(NameConflict):  # a domain error leaving the block rolls back too
            with backend.write() as tx:
                tx.insert(to_doc(make_harness(4, name="other")))
                tx.insert(to_doc(make_harness(5, name="keep")))
        with backend.read() as tx:
            assert ids(tx.query("harness")) == [str(uid(1))]
            assert from_doc(tx.get("harness", str(uid(1)))).name == "keep"
            assert ids(tx.query("image", "beta")) == [str(uid(2))]
            assert tx.query("image", "gamma") == []
        insert(backend, make_harness(6, name="new"))  # the store is still writable

    def test_a_refused_statement_does_not_spoil_the_transaction(self, backend):
        insert(backend, make_harness(1, name="taken"))
        with backend.write() as tx:
            tx.insert(to_doc(make_harness(2, name="a")))
            with pytest.raises(NameConflict):
                tx.insert(to_doc(make_harness(3, name="taken")))
            with pytest.raises(AlreadyExists):
                tx.insert(to_doc(make_harness(1, name="b")))
            with pytest.raises(NotFound):
                tx.update(to_doc(make_harness(9)))
            tx.insert(to_doc(make_harness(4, name="c")))
        with backend.read() as tx:
            assert ids(tx.query("harness")) == [str(uid(n)) for n in (1, 2, 4)]

    def test_committed_writes_are_seen_by_another_backend_object(self, backend, make_backend):
        other = make_backend()
        with other.read() as tx:  # warm whatever the other object caches
            assert tx.query("harness") == []
        (doc,) = insert(backend, make_harness(1))
        with other.read() as tx:
            assert tx.get("harness", doc.id) == doc
        with other.write() as tx:
            tx.update(to_doc(make_harness(1, name="renamed")))
        with backend.read() as tx:
            assert from_doc(tx.get("harness", doc.id)).name == "renamed"
        with pytest.raises(NameConflict):  # uniqueness holds across objects
            insert(other, make_harness(2, name="renamed"))

    def test_read_is_a_consistent_snapshot(self, backend, make_backend):
        other = make_backend()
        insert(backend, make_harness(1, created=1))
        done = threading.Event()
        errors: list[BaseException] = []

        def write() -> None:
            try:
                insert(other, make_harness(2, created=2))
            except BaseException as exc:  # reported below
                errors.append(exc)
            done.set()

        with backend.read() as tx:
            first = tx.query("harness")
            writer = threading.Thread(target=write)
            writer.start()
            done.wait(2.0)  # a backend may also hold writers back while a read is open
            assert tx.query("harness") == first
            assert tx.get("harness", str(uid(2))) is None
        writer.join(self.CHILD_TIMEOUT_S)
        assert not errors
        with backend.read() as tx:
            assert ids(tx.query("harness")) == [str(uid(1)), str(uid(2))]

    # -- concurrency -----------------------------------------------------------------------------

    def test_threads_lose_no_update(self, backend):
        image = make_image(1)
        insert(backend, image)

        def work(_: int) -> None:
            for _ in range(self.INCREMENTS_PER_THREAD):
                increment_attempts(backend, str(image.id))

        assert self._run_threads(self.THREADS, work) == []
        with backend.read() as tx:
            assert from_doc(tx.get("image", str(image.id))).attempts == self.THREADS * self.INCREMENTS_PER_THREAD

    def test_threads_racing_for_a_name_get_one_winner(self, backend):
        rounds = 4
        outcomes: list[tuple[int, str]] = []
        lock = threading.Lock()

        def work(i: int) -> None:
            for r in range(rounds):
                try:
                    insert(backend, make_harness(1000 * r + i + 1, name=f"race-{r}"))
                    result = "won"
                except NameConflict:
                    result = "conflict"
                with lock:
                    outcomes.append((r, result))

        assert self._run_threads(self.THREADS, work) == []
        for r in range(rounds):
            results = sorted(res for rr, res in outcomes if rr == r)
            assert results == ["conflict"] * (self.THREADS - 1) + ["won"], (r, results)
        with backend.read() as tx:
            assert len(tx.query("harness", "alpha")) == rounds
