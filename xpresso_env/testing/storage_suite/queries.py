"""The suite's checks of queries."""
from __future__ import annotations

import dataclasses
import threading

from xpresso_env.core.codec import to_doc
from xpresso_env.storage import filter_docs

from .base import SuiteBase
from .records import ids, insert, make_engine, make_group, make_harness, make_image, make_user, uid


class QueryChecks(SuiteBase):
    """Queries: group isolation, visibility, order, deleted documents, filters."""

    # -- queries ---------------------------------------------------------------------------------

    def test_group_isolation_and_visibility(self, backend):
        insert(backend,
               make_harness(1, group="alpha", created=1), make_harness(2, group="beta", created=2),
               make_engine(3, group="alpha", created=3),
               make_image(4, group="alpha", created=4), make_image(5, group="beta", groups=("alpha",), created=5),
               make_image(6, group="gamma", groups=("alpha", "beta"), created=6),
               make_image(7, group="gamma", created=7))
        with backend.read() as tx:
            assert ids(tx.query("harness", "alpha")) == [str(uid(1))]
            assert ids(tx.query("harness", "beta")) == [str(uid(2))]
            assert ids(tx.query("engine", "beta")) == []
            assert ids(tx.query("image", "alpha")) == [str(uid(n)) for n in (4, 5, 6)]
            assert ids(tx.query("image", "beta")) == [str(uid(n)) for n in (5, 6)]
            assert ids(tx.query("image", "gamma")) == [str(uid(n)) for n in (6, 7)]
            assert ids(tx.query("image")) == [str(uid(n)) for n in (4, 5, 6, 7)]
            assert [d.visible for d in tx.query("image", "alpha")] == [(), ("alpha",), ("alpha", "beta")]
            assert tx.query("image", "beta")[1] == to_doc(make_image(6, group="gamma", groups=("alpha", "beta"),
                                                                     created=6))
            assert tx.find_name("harness", "beta", "harness-1") is None
        # Changing the visible groups changes who sees the document.
        with backend.write() as tx:
            tx.update(to_doc(make_image(6, group="gamma", groups=("beta",), created=6)))
            tx.update(to_doc(make_image(4, group="alpha", groups=("gamma",), created=4)))
        with backend.read() as tx:
            assert ids(tx.query("image", "alpha")) == [str(uid(n)) for n in (4, 5)]
            assert ids(tx.query("image", "beta")) == [str(uid(n)) for n in (5, 6)]
            assert ids(tx.query("image", "gamma")) == [str(uid(n)) for n in (4, 6, 7)]
            assert tx.get("image", str(uid(6))).visible == ("beta",)

    def test_visible_works_for_any_kind(self, backend):
        # The codec sets `visible` on images only, but the contract is the same for every kind.
        shared = dataclasses.replace(to_doc(make_harness(1, group="alpha")), visible=("beta", "gamma"))
        insert(backend, shared, make_harness(2, group="beta", created=1))
        with backend.read() as tx:
            assert tx.get("harness", shared.id) == shared
            assert tx.query("harness", "beta") == [shared, to_doc(make_harness(2, group="beta", created=1))]
            assert tx.query("harness", "alpha") == [shared]
            assert tx.query("harness", "gamma") == [shared]
            assert tx.query("harness")[0] == shared
            assert tx.find_name("harness", "alpha", "harness-1") == shared

    def test_order_is_created_then_id(self, backend):
        # Group ids are client-chosen names: order is by code point, whatever the collation.
        names = ["alpha", "Alpha", "alpha-2", "alpha_2", "Zeta", "zeta", "_x", "ä"]
        records = [make_group(n, created=1) for n in names] + [make_group("first", created=0),
                                                              make_group("last", created=2)]
        insert(backend, *reversed(records))
        expected = ["first"] + sorted(names) + ["last"]
        with backend.read() as tx:
            assert ids(tx.query("group")) == expected
        harnesses = [make_harness(n, created=(n * 7919) % 11, name=f"h{n}") for n in range(1, 30)]
        insert(backend, *harnesses)
        want = [str(h.id) for h in sorted(harnesses, key=lambda h: (to_doc(h).created, str(h.id)))]
        with backend.read() as tx:
            assert ids(tx.query("harness", "alpha")) == want
            assert ids(tx.query("harness")) == want

    def test_include_deleted(self, backend):
        insert(backend, make_harness(1, created=1), make_harness(2, created=2, deleted=True),
               make_image(3, created=3, is_deleted=True, groups=("beta",)), make_user("gone", deleted=True),
               make_user("here"))
        with backend.read() as tx:
            assert ids(tx.query("harness", "alpha")) == [str(uid(1)), str(uid(2))]
            assert ids(tx.query("harness", "alpha", include_deleted=False)) == [str(uid(1))]
            assert ids(tx.query("harness", include_deleted=False)) == [str(uid(1))]
            assert ids(tx.query("image", "beta")) == [str(uid(3))]
            assert tx.query("image", "beta", include_deleted=False) == []
            assert ids(tx.query("user", include_deleted=False)) == ["here"]
            assert tx.get("harness", str(uid(2))).deleted is True
            assert tx.find_name("harness", "alpha", "harness-2") is None

    def test_many_documents_and_filters(self, backend):
        records = [make_harness(n, group=f"g{n % 10}", created=n, site="A" if n % 2 else "B")
                   for n in range(1, 201)]
        insert(backend, *records)
        with backend.read() as tx:
            g3 = tx.query("harness", "g3")
            assert ids(g3) == [str(uid(n)) for n in range(3, 201, 10)]
            assert filter_docs(g3, {"site": "A"}) == g3
            assert filter_docs(tx.query("harness", "g4"), {"site": "A"}) == []
            assert len(tx.query("harness")) == 200

    def test_scan_reads_a_kind_page_by_page_in_its_snapshot(self, backend):
        # scan: every document of the kind, deleted and shared ones too, ordered by id (code point
        # order, like the ordering of query), the same documents query gives; pages of any size.
        names = ["alpha", "Alpha", "alpha-2", "Zeta", "_x", "ä", "b"]
        insert(backend, *[make_group(n, created=len(n)) for n in names],
               make_image(1, created=1, groups=("beta", "gamma")), make_image(2, created=2, is_deleted=True),
               make_harness(3, created=3))
        with backend.read() as tx:
            for page in (1, 2, 3, 7, 500):
                assert ids(list(tx.scan("group", page=page))) == sorted(names), page
            assert list(tx.scan("image", page=1)) == sorted(tx.query("image"), key=lambda d: d.id)
            assert [d.visible for d in tx.scan("image")] == [("beta", "gamma"), ()]
            assert list(tx.scan("engine")) == []
            scanning = tx.scan("group", page=2)
            first = [next(scanning), next(scanning)]
            # A write committed while the scan is under way (another thread: another connection)
            # is not in it: the scan reads the transaction's snapshot.
            done = []
            writer = threading.Thread(target=lambda: done.append(insert(backend, make_group("zz-late"))))
            writer.start()
            writer.join(30)
            assert done, "the write did not finish"
            assert ids(first + list(scanning)) == sorted(names)
        with backend.read() as tx:
            assert ids(list(tx.scan("group", page=2))) == sorted([*names, "zz-late"])
