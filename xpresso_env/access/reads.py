"""The read scope: who is asking, and the data they read, from one read transaction.

A service's read opens the scope itself (``with reads.scope(credentials, kind) as scope:``): the
request is authenticated there (token, then group: CONTRACT section 7 order) inside the read
transaction the service then reads from (``scope.tx``, ``scope.caller``), so the caller's rights
and the data come from one snapshot. After the block, ``scope.snapshot(data, total)`` is the
answer: the data, the caller, and what the answer depends on (``Dependencies``): the change
counters of ``dependency_keys(kind, group)`` as of that snapshot. The response cache keeps them
beside the rendered answer and checks them again on every hit. They are read in the same
transaction, or taken from an earlier read when the store's change stamp shows that nothing they
depend on was written since (SQLite; the stamp follows ``STAMPED_KINDS`` only).

Nothing here knows HTTP: the API layer hands in ``Credentials`` and renders the ``Snapshot``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional, cast

from ..core.timeutil import Clock
from ..storage import STAMPED_KINDS, ChangeCounters, CountingTx, StorageBackend, Tx
from .auth import AuthService, Caller, Identity

# (kind, group) change-counter keys; group "" for documents without a group.
CounterKeys = tuple[tuple[str, str], ...]


# The records of a read are slotted: one of each is made for every read (a frozen dataclass
# without slots costs several times as much to make).
@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request brings to be authenticated: its Authorization header and the group it
    names (already chosen between `Group` and `X-Group` by the API layer)."""

    authorization: Optional[str]
    group: Optional[str]


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What an answer depends on: change counters and their values in the snapshot it was read
    from (empty without counters), and the store's change stamp when it vouches for them (it did
    not move during the read, and every key is of ``STAMPED_KINDS``), else None."""

    keys: CounterKeys
    values: tuple[int, ...]
    stamp: Optional[int] = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A read's answer: ``data`` as the service chose to return it (stored bodies for the
    registry), who asked, the unpaged count of a list, and what it depends on."""

    data: Any
    caller: Caller
    total: Optional[int]
    depends: Dependencies


# What an authentication depends on: users (roles, deletion), revocations, groups.
AUTH_KEYS: CounterKeys = (("user", ""), ("revocation", ""), ("group", ""))
MEMO_SIZE = 4096


def dependency_keys(kind: str, group: str) -> CounterKeys:
    """What an authenticated read of ``kind`` in ``group`` depends on: what the caller's
    authentication depends on, and the records of that kind visible in the group. A write to
    any of them bumps its counter in the writing transaction."""
    return AUTH_KEYS + ((kind, group),)


def stamped(keys: CounterKeys) -> bool:
    """Whether the store's change stamp follows every counter of ``keys`` (STAMPED_KINDS)."""
    return all(kind in STAMPED_KINDS for kind, _ in keys)


@dataclass(frozen=True, slots=True)
class _Memo:
    caller: Caller
    values: tuple[int, ...]  # AUTH_KEYS' counters when it was worked out


class ReadScope:
    """One read (see the module docstring). Entered, it holds ``tx`` and ``caller``; after the
    block, ``snapshot`` gives the answer with its dependencies, which are only known then."""

    __slots__ = ("tx", "caller", "_reads", "_credentials", "_kind", "_group_required", "_one_statement", "_open",
                 "_stamp", "_values", "_depends")

    def __init__(self, reads: "Reads", credentials: Credentials, kind: Optional[str], group_required: bool,
                 one_statement: bool):
        self._reads = reads
        self._credentials = credentials
        self._kind = kind
        self._group_required = group_required
        self._one_statement = one_statement
        self._depends: Optional[Dependencies] = None

    def __enter__(self) -> "ReadScope":
        reads = self._reads
        counters = reads._counters
        self._stamp = counters.change_stamp() if counters is not None else None
        self._open = reads._storage.read()
        self.tx = self._open.__enter__()
        try:
            self.caller, self._values = reads._authenticate(self._credentials, self.tx, self._kind,
                                                            self._group_required, self._stamp)
        except BaseException:
            self._open.__exit__(*sys.exc_info())  # a read transaction: nothing to keep
            raise
        if self._one_statement:
            # The caller's data is one statement: when authentication read nothing (its memo and
            # the counters known at the stamp), a backend that can runs it alone, without BEGIN
            # and COMMIT (SQLite). The dependencies stay right: their values are the stamp's,
            # checked again after the read (``_dependencies``), as for any read.
            alone = getattr(self.tx, "one_statement_left", None)
            if alone is not None:
                alone()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        suppressed = self._open.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self._depends = self._reads._dependencies(self._kind, self.caller.group, self._values, self._stamp)
            counters = self._reads._counters
            if counters is None or not counters.versions_store_wide:
                # The read is over (its transaction closed); a token's counter is its own here. A
                # store with one counter for everything (yaml) keeps no last_used: each such write
                # would drop every cached answer and every memoised authentication.
                self._reads._auth.note_use(self.caller)
        return bool(suppressed)

    def snapshot(self, data: Any, total: Optional[int] = None) -> Snapshot:
        if self._depends is None:
            raise RuntimeError("ReadScope.snapshot is the answer of a finished read: call it after the block")
        return Snapshot(data=data, caller=self.caller, total=total, depends=self._depends)


class Reads:
    """The one read scope of every read, GETs and the authentication of writes alike.

    Authentication is memoised per (Authorization, group) when the backend keeps change
    counters: a memo is used only while the counters of users, revocations and groups, read in
    the request's own snapshot, are those it was worked out under, and the token has not expired.
    So a revocation, a role change or a deleted user still takes effect at once, everywhere, and
    a polling client costs one counter read instead of a signature check and three reads."""

    def __init__(self, storage: StorageBackend, auth: AuthService, counters: Optional[ChangeCounters],
                 clock: Clock):
        self._storage = storage
        self._auth = auth
        self._counters = counters  # None: the backend keeps no change counters (and no memo)
        self._clock = clock
        self._memo: dict[tuple[Optional[str], Optional[str], bool], _Memo] = {}
        # dependency_keys of each (kind, group) read, made once, with whether the stamp follows them
        self._keys: dict[tuple[Optional[str], str], tuple[CounterKeys, bool]] = {}
        # Counter values known to hold at a change stamp (see ChangeCounters.change_stamp): while
        # the store's stamp is still that one, nothing was written, so they need no query.
        self._known: dict[CounterKeys, tuple[int, tuple[int, ...]]] = {}

    def scope(self, credentials: Credentials, kind: Optional[str] = None, group_required: bool = True,
              one_statement: bool = False) -> ReadScope:
        """A read of ``kind`` (None: nothing cacheable, the caller alone). ``group_required``
        false: a request naming no group is still answered, with the caller's group ``""``
        unless they belong to exactly one (GET /api/v2/me). ``one_statement``: the block reads
        ``scope.tx`` with one statement at most (a ``get``, a ``find_name``)."""
        return ReadScope(self, credentials, kind, group_required, one_statement)

    def caller(self, credentials: Credentials, group_required: bool = True) -> Caller:
        """Who is asking (the authentication of a write, whose service opens its own write).
        ``group_required`` false: for what a user does for themselves (their tokens, password)."""
        with self.scope(credentials, group_required=group_required) as scope:
            return scope.caller

    def whoami(self, credentials: Credentials) -> Snapshot:
        """GET /api/v2/me: the caller's identity, read in the same scope as every other read."""
        with self.scope(credentials, group_required=False) as scope:
            identity: Identity = self._auth.identity(scope.caller, scope.tx)
        return scope.snapshot(identity)

    # -- inside a scope ---------------------------------------------------------------------------
    def _authenticate(self, credentials: Credentials, tx: Tx, kind: Optional[str], group_required: bool,
                      stamp: Optional[int]) -> tuple[Caller, tuple[int, ...]]:
        """The caller, and the counters of ``dependency_keys(kind, caller.group)`` (of AUTH_KEYS
        without a kind) as of this snapshot or of ``stamp``: values known at the stamp the store
        still shows need no query, else they are read in one statement (every statement costs a
        wait for the GIL when the server is busy). Counters older than the data read afterwards
        are safe: the answer is then cached under values that no longer match, and read again."""
        if self._counters is None:
            return self._auth.authenticate(credentials.authorization, credentials.group, tx, group_required), ()
        key = (credentials.authorization, credentials.group, group_required)
        memo = self._memo.get(key)
        if memo is not None and self._clock().timestamp() < memo.caller.token_expires:
            values = self._counters_of(tx, self._keys_of(kind, memo.caller.group)[0], stamp)
            if values[:len(AUTH_KEYS)] == memo.values:
                return memo.caller, values
        else:
            values = self._counters_of(tx, AUTH_KEYS, stamp)
        auth_values = values[:len(AUTH_KEYS)]
        caller = self._auth.authenticate(credentials.authorization, credentials.group, tx, group_required)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()  # many tokens at once: start over rather than track recency
        self._memo[key] = _Memo(caller, auth_values)
        if kind is None:
            return caller, auth_values
        return caller, auth_values + self._counters_of(tx, ((kind, caller.group),), stamp)

    def _dependencies(self, kind: Optional[str], group: str, values: tuple[int, ...],
                      stamp: Optional[int]) -> Dependencies:
        keys, followed = self._keys_of(kind, group)
        counters = self._counters
        if stamp is not None and followed and counters is not None and counters.change_stamp() == stamp:
            self._remember(keys, stamp, values)  # no write they depend on started or ended meanwhile
        else:
            stamp = None  # the stamp does not vouch for these counters
        return Dependencies(keys=keys, values=values, stamp=stamp)

    def _keys_of(self, kind: Optional[str], group: str) -> tuple[CounterKeys, bool]:
        """``dependency_keys(kind, group)`` (AUTH_KEYS without a kind), and whether they are stamped."""
        known = self._keys.get((kind, group))
        if known is None:
            keys = AUTH_KEYS if kind is None else dependency_keys(kind, group)
            if len(self._keys) >= MEMO_SIZE:
                self._keys.clear()
            known = self._keys[(kind, group)] = (keys, stamped(keys))
        return known

    def _counters_of(self, tx: Tx, keys: CounterKeys, stamp: Optional[int]) -> tuple[int, ...]:
        known = self._known.get(keys) if stamp is not None else None
        if known is not None and known[0] == stamp:
            return known[1]
        return cast(CountingTx, tx).versions(keys)  # only with counters: the transactions are CountingTx

    def _remember(self, keys: CounterKeys, stamp: int, values: tuple[int, ...]) -> None:
        if len(self._known) >= MEMO_SIZE:
            self._known.clear()
        self._known[keys] = (stamp, values)
        self._known[AUTH_KEYS] = (stamp, values[:len(AUTH_KEYS)])
