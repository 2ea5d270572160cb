"""The suite's checks of the protocol and the schema (init, concurrent init, upgrade)."""
from __future__ import annotations

import threading
from typing import Any

import pytest

from xpresso_env.core.codec import from_doc
from xpresso_env.core.errors import SchemaOutdated
from xpresso_env.storage import StorageBackend, Tx, change_counters, change_notices, check_ready

from .base import SuiteBase
from .records import ids, insert, make_harness, make_image, uid


class SchemaChecks(SuiteBase):
    """The protocol, the claims a backend makes, and its schema: fresh, initialised, upgraded."""

    # -- protocol and schema ---------------------------------------------------------------------

    def test_protocols(self, backend):
        assert isinstance(backend, StorageBackend)
        assert isinstance(backend.name, str) and backend.name
        assert backend.schema_version >= 1
        with backend.read() as tx:
            assert isinstance(tx, Tx)
        with backend.write() as tx:
            assert isinstance(tx, Tx)

    def test_the_suite_proves_what_the_backend_claims(self, backend):
        from .counters import ChangeCounterConformance  # that class derives from this one's suite

        claims = change_counters(backend) is not None
        proves = isinstance(self, ChangeCounterConformance)
        assert claims == proves, (
            f"storage '{backend.name}' {'claims' if claims else 'does not claim'} change counters: "
            f"its conformance class must {'' if claims else 'not '}subclass ChangeCounterConformance")

    def test_the_suite_proves_the_notices_the_backend_claims(self, backend):
        from .notices import ChangeNoticeConformance  # that class derives from this one's suite

        claims = change_notices(backend) is not None
        proves = isinstance(self, ChangeNoticeConformance)
        assert claims == proves, (
            f"storage '{backend.name}' {'claims' if claims else 'does not claim'} change notices: "
            f"its conformance class must {'' if claims else 'not '}subclass ChangeNoticeConformance")

    def test_fresh_store_is_version_0_and_init_brings_it_up(self, make_backend):
        fresh = make_backend(init=False)
        assert fresh.current_version() == 0
        with pytest.raises(SchemaOutdated):
            check_ready(fresh)
        assert fresh.init() == fresh.schema_version
        assert fresh.current_version() == fresh.schema_version
        check_ready(fresh)
        check_ready(make_backend(init=False))  # another object sees the schema too

    def test_init_is_idempotent(self, backend, make_backend):
        (h,) = insert(backend, make_harness(1))
        assert backend.init() == backend.schema_version
        assert backend.init() == backend.schema_version
        other = make_backend()
        assert other.init() == other.schema_version
        with other.read() as tx:
            assert tx.get("harness", h.id) == h

    def test_concurrent_init_on_a_fresh_store(self, make_backend):
        backends = [make_backend(init=False) for _ in range(4)]
        results: list[Any] = []
        barrier = threading.Barrier(len(backends))

        def run(b: StorageBackend) -> None:
            barrier.wait()
            try:
                results.append(b.init())
            except Exception as exc:  # reported below
                results.append(exc)

        threads = [threading.Thread(target=run, args=(b,)) for b in backends]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [backends[0].schema_version] * len(backends)
        insert(backends[0], make_harness(1))

    def test_schema_upgrade_from_previous_version(self, make_backend):
        new, kept = self._upgraded_store(make_backend)
        with new.read() as tx:
            for record in kept:
                assert from_doc(tx.get(record.KIND, str(record.id))) == record
        # The newest schema's features work on the upgraded store.
        shared = make_image(4, groups=("beta",), created=4)
        insert(new, shared)
        with new.read() as tx:
            assert ids(tx.query("image", "beta")) == [str(shared.id)]
            assert ids(tx.query("image", "alpha")) == [str(uid(3)), str(shared.id)]
            assert tx.get("image", str(shared.id)).visible == ("beta",)
