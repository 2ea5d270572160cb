"""The suite's checks of single documents: round trips, updates, purges, uniqueness."""
from __future__ import annotations

import dataclasses

import pytest

from xpresso_env.core.codec import from_doc, to_doc
from xpresso_env.core.errors import AlreadyExists, NameConflict, NotFound

from .base import SuiteBase
from .records import at, ids, insert, make_engine, make_group, make_harness, make_image, make_user, sample_records, uid


class DocumentChecks(SuiteBase):
    """Documents in and out exactly; ids and live names unique."""

    # -- round trips -----------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["group", "user", "revocation", "harness", "engine", "image"])
    def test_round_trip(self, backend, make_backend, kind):
        record = sample_records()[kind]
        (doc,) = insert(backend, record)
        for b in (backend, make_backend()):
            with b.read() as tx:
                got = tx.get(kind, doc.id)
                assert got == doc
                assert from_doc(got) == record
                assert tx.query(kind) == [doc]
            with b.write() as tx:  # a write transaction reads the same
                assert tx.get(kind, doc.id) == doc
                assert tx.get(kind, doc.id, lock=True) == doc

    def test_body_text_is_kept_exactly(self, backend):
        tricky = "quotes \" ' back\\slash\nnew line\ttab NUL\x00 é 中文 🚀 \u2028 <&> %s ?"
        h = make_harness(1, site=tricky, bldg="")
        (doc,) = insert(backend, h)
        with backend.read() as tx:
            assert tx.get("harness", doc.id).body["site"] == tricky
            assert from_doc(tx.get("harness", doc.id)) == h

    def test_get_missing_is_none(self, backend):
        insert(backend, make_harness(1))
        with backend.read() as tx:
            assert tx.get("harness", str(uid(2))) is None
            assert tx.get("engine", str(uid(1))) is None  # ids are per kind
            assert tx.get("nosuchkind", "x") is None
            assert tx.query("engine") == []
            assert tx.query("harness", "nosuchgroup") == []
            assert tx.find_name("harness", "alpha", "nope") is None
        with backend.write() as tx:
            assert tx.get("harness", str(uid(2)), lock=True) is None

    def test_update_missing_is_not_found(self, backend):
        with pytest.raises(NotFound):
            with backend.write() as tx:
                tx.update(to_doc(make_harness(1)))
        with backend.read() as tx:
            assert tx.get("harness", str(uid(1))) is None

    def test_update_replaces_the_whole_document(self, backend):
        h = make_harness(1, name="old")
        insert(backend, h)
        changed = dataclasses.replace(h, name="new", path="/ws/other", site="LON", date_modified=at(9))
        with backend.write() as tx:
            tx.update(to_doc(changed))
        with backend.read() as tx:
            assert from_doc(tx.get("harness", str(h.id))) == changed
            assert tx.find_name("harness", "alpha", "old") is None
            assert tx.find_name("harness", "alpha", "new") == to_doc(changed)

    def test_purge_removes_for_good(self, backend, make_backend):
        insert(backend, make_harness(1, name="keep"), make_harness(2, name="gone"),
               make_image(3, groups=("beta",)))
        with backend.write() as tx:
            assert tx.purge("harness", str(uid(2))) is True
            assert tx.purge("image", str(uid(3))) is True
            assert tx.purge("harness", str(uid(9))) is False  # absent: nothing to do
            assert tx.get("harness", str(uid(2))) is None  # the tx sees its own purge
            assert ids(tx.query("harness", "alpha")) == [str(uid(1))]
            assert tx.query("image", "beta") == []
            tx.insert(to_doc(make_harness(4, name="gone")))  # the name is free again
        for b in (backend, make_backend()):
            with b.read() as tx:
                assert tx.get("harness", str(uid(2))) is None
                assert ids(tx.query("harness")) == [str(uid(1)), str(uid(4))]
                assert tx.query("image") == [] and tx.query("image", "beta") == []
        with backend.write() as tx:  # the same id may be inserted again after a purge
            tx.insert(to_doc(make_harness(2, name="back")))
        with backend.read() as tx:
            assert from_doc(tx.get("harness", str(uid(2)))).name == "back"

    def test_a_rolled_back_purge_keeps_the_document(self, backend):
        insert(backend, make_harness(1, name="keep"))

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with backend.write() as tx:
                assert tx.purge("harness", str(uid(1))) is True
                raise Boom()
        with backend.read() as tx:
            assert from_doc(tx.get("harness", str(uid(1)))).name == "keep"

    def test_same_id_in_another_kind_is_allowed(self, backend):
        insert(backend, make_harness(1, name="x"), make_engine(1, name="x"))
        with backend.read() as tx:
            assert tx.get("harness", str(uid(1))).kind == "harness"
            assert tx.get("engine", str(uid(1))).kind == "engine"

    # -- uniqueness ------------------------------------------------------------------------------

    def test_duplicate_id_is_already_exists(self, backend):
        insert(backend, make_harness(1, name="a"), make_group("alpha"))
        with pytest.raises(AlreadyExists):
            insert(backend, make_harness(1, name="b"))
        with pytest.raises(AlreadyExists):
            insert(backend, make_harness(1, name="c", group="beta", deleted=True))
        with pytest.raises(AlreadyExists):
            insert(backend, make_group("alpha", created=5))
        with backend.read() as tx:
            assert [from_doc(d).name for d in tx.query("harness")] == ["a"]

    def test_duplicate_live_name_is_name_conflict(self, backend):
        insert(backend, make_harness(1, name="x"))
        with pytest.raises(NameConflict):
            insert(backend, make_harness(2, name="x"))
        # Updating another document onto a taken name is refused too.
        insert(backend, make_harness(3, name="y"))
        with pytest.raises(NameConflict):
            with backend.write() as tx:
                tx.update(to_doc(make_harness(3, name="x")))
        with backend.read() as tx:
            assert tx.find_name("harness", "alpha", "x").id == str(uid(1))
            assert tx.find_name("harness", "alpha", "y").id == str(uid(3))
            assert tx.get("harness", str(uid(2))) is None

    def test_deleted_frees_the_name_and_other_scopes_may_reuse_it(self, backend):
        insert(backend, make_harness(1, name="x", deleted=True))
        insert(backend, make_harness(2, name="x"))  # a deleted one does not hold the name
        insert(backend, make_harness(3, name="x", deleted=True))  # nor do several deleted ones
        insert(backend, make_harness(4, name="x", group="beta"))  # another group
        insert(backend, make_engine(5, name="x"))  # another kind
        with backend.write() as tx:  # soft-deleting the live one frees the name again
            tx.update(to_doc(make_harness(2, name="x", deleted=True)))
        insert(backend, make_harness(6, name="x"))
        with pytest.raises(NameConflict):  # un-deleting onto a taken name is refused
            with backend.write() as tx:
                tx.update(to_doc(make_harness(1, name="x")))
        with backend.read() as tx:
            assert tx.find_name("harness", "alpha", "x").id == str(uid(6))
            assert tx.find_name("harness", "beta", "x").id == str(uid(4))
            assert tx.find_name("engine", "alpha", "x").id == str(uid(5))
            assert len(tx.query("harness", "alpha")) == 4

    def test_unnamed_documents_never_conflict(self, backend):
        insert(backend, make_image(1), make_image(2), make_group("a"), make_group("b"), make_user("u"))
        with backend.read() as tx:
            assert len(tx.query("image", "alpha")) == 2
