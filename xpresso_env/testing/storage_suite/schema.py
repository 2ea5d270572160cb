"""The suite's checks of the protocol and the schema (init, concurrent init, upgrade)."""
from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from xpresso_env.core.codec import from_doc, to_doc
from xpresso_env.core.errors import SchemaOutdated
from xpresso_env.core.models import Revocation, TokenRecord, User
from xpresso_env.storage import (
    StorageBackend,
    Tx,
    change_counters,
    change_notices,
    check_ready,
)

from .base import SuiteBase
from .records import at, ids, insert, make_harness, make_image, make_user, uid


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

    def _proves_what_it_claims(self, backend, capability: str, claims: bool, suite: type) -> None:
        """A backend offering ``capability`` runs its conformance suite, and one without does not."""
        proves = isinstance(self, suite)
        assert claims == proves, (
            f"storage '{backend.name}' {'claims' if claims else 'does not claim'} {capability}: "
            f"its conformance class must {'' if claims else 'not '}subclass {suite.__name__}")

    def test_the_suite_proves_what_the_backend_claims(self, backend):
        from .counters import ChangeCounterConformance  # that class derives from this one's suite

        self._proves_what_it_claims(backend, "change counters", change_counters(backend) is not None,
                                    ChangeCounterConformance)

    def test_the_suite_proves_the_notices_the_backend_claims(self, backend):
        from .notices import ChangeNoticeConformance  # that class derives from this one's suite

        self._proves_what_it_claims(backend, "change notices", change_notices(backend) is not None,
                                    ChangeNoticeConformance)

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
                stored = from_doc(tx.get(record.KIND, str(record.id)))
                if isinstance(record, User):  # the upgrade gave the user a stable id
                    assert stored.uid and stored == dataclasses.replace(record, uid=stored.uid)
                else:
                    assert stored == record
        # The newest schema's features work on the upgraded store.
        shared = make_image(4, groups=("beta",), created=4)
        insert(new, shared)
        with new.read() as tx:
            assert ids(tx.query("image", "beta")) == [str(shared.id)]
            assert ids(tx.query("image", "alpha")) == [str(uid(3)), str(shared.id)]
            assert tx.get("image", str(shared.id)).visible == ("beta",)

    # -- identity is not a name (CONTRACT section 16) --------------------------------------------

    def test_upgrade_binds_tokens_to_identities_and_revokes_those_of_gone_users(self, make_backend):
        """From the previous schema: users get a stable ``uid``; a token gets its user's uid, or
        is revoked when its user is deleted, gone, or was added again after it was issued."""
        old = make_backend(init=False)
        old.init(target_version=old.schema_version - 1)

        def token(jti: str, user: str, issued: float) -> TokenRecord:
            return TokenRecord(id=jti, user=user, date_created=at(issued), expires=at(issued + 86400))

        insert(old, make_user("alice", created=0), make_user("bob", created=10),
               dataclasses.replace(make_user("dave", created=0), deleted=True),
               token("a1", "alice", 5), token("b0", "bob", 5), token("b1", "bob", 11), token("d1", "dave", 5),
               token("x1", "nobody", 5), Revocation(jti="a0", date_created=at(1), user="alice"))
        old.close()
        new = make_backend(init=False)
        assert new.init() == new.schema_version
        with new.read() as tx:
            users = {d.id: from_doc(d) for d in tx.query("user")}
            tokens = {d.id: from_doc(d) for d in tx.query("token")}
            revoked = {d.id for d in tx.query("revocation")}
        assert all(u.uid for u in users.values()) and len({u.uid for u in users.values()}) == 3
        assert tokens["a1"].user_id == users["alice"].uid and tokens["b1"].user_id == users["bob"].uid
        assert revoked == {"a0", "b0", "d1", "x1"}  # bob's b0 predates this bob; dave is deleted
        assert new.init() == new.schema_version  # again: nothing changes
        with new.read() as tx:
            assert {d.id: from_doc(d) for d in tx.query("user")} == users
            assert {d.id for d in tx.query("revocation")} == revoked

    def test_a_uid_bound_token_record_is_kept_as_written(self, backend):
        user = dataclasses.replace(make_user("erin"), uid="u-erin")
        record = TokenRecord(id="e1", user="erin", date_created=at(1), expires=at(2), user_id="u-erin",
                             name="laptop", typ="session", last_used=at(1.5))
        insert(backend, user, record)
        with backend.read() as tx:
            assert from_doc(tx.get("token", "e1")) == record
            assert from_doc(tx.get("user", "erin")).uid == "u-erin"
        assert to_doc(record).group is None
