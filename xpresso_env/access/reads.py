"""The read path: who is asking, and what a GET answers, from one read transaction.

Every request is authenticated here (token, then group: CONTRACT section 7 order) inside a read
transaction that the service opens, so the caller's rights and the data come from one snapshot.
A cacheable read also reports the change counters it depends on (``dependency_keys``): the
response cache keeps them beside the answer and checks them again on every hit. They are read in
the same transaction, or taken from an earlier read when the store's change stamp shows that
nothing they depend on was written since (SQLite; the stamp follows ``STAMPED_KINDS`` only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, cast

from ..core.timeutil import Clock
from ..storage import STAMPED_KINDS, ChangeCounters, CountingTx, StorageBackend, Tx
from .auth import AuthService, Caller

# (kind, group) change-counter keys; group "" for documents without a group.
Stamp = tuple[tuple[str, str], ...]
Produce = Callable[[Tx, Caller], tuple[Any, Optional[int]]]


@dataclass(frozen=True)
class Credentials:
    """What a request brings to be authenticated: its Authorization header and the group it
    names (already chosen between `Group` and `X-Group` by the API layer)."""

    authorization: Optional[str]
    group: Optional[str]


@dataclass(frozen=True)
class Snapshot:
    caller: Caller
    data: Any
    total: Optional[int]  # the unpaged count, for lists
    keys: Stamp  # the counters the answer depends on ...
    values: tuple[int, ...]  # ... and their values in the snapshot (empty without counters)
    stamp: Optional[int] = None  # the store's change stamp, when it did not move during the read


# What an authentication depends on: users (roles, deletion), revocations, groups.
AUTH_KEYS: Stamp = (("user", ""), ("revocation", ""), ("group", ""))
MEMO_SIZE = 4096


def dependency_keys(kind: str, group: str) -> Stamp:
    """What an authenticated read of ``kind`` in ``group`` depends on: what the caller's
    authentication depends on, and the records of that kind visible in the group. A write to
    any of them bumps its counter in the writing transaction."""
    return AUTH_KEYS + ((kind, group),)


@dataclass(frozen=True)
class _Memo:
    caller: Caller
    values: tuple[int, ...]  # AUTH_KEYS' counters when it was worked out


class Reads:
    """Authentication is memoised per (Authorization, group) when the backend keeps change
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
        self._memo: dict[tuple[Optional[str], Optional[str]], _Memo] = {}
        # Counter values known to hold at a change stamp (see ChangeCounters.change_stamp): while
        # the store's stamp is still that one, nothing was written, so they need no query.
        self._known: dict[Stamp, tuple[int, tuple[int, ...]]] = {}

    def caller(self, credentials: Credentials) -> Caller:
        return self._snapshot(credentials, None, None).caller

    def read(self, credentials: Credentials, kind: str, produce: Produce) -> Snapshot:
        """Authenticate, then ``produce(tx, caller) -> (data, total or None)``, in one snapshot."""
        return self._snapshot(credentials, kind, produce)

    def _snapshot(self, credentials: Credentials, kind: Optional[str], produce: Optional[Produce]) -> Snapshot:
        stamp = self._counters.change_stamp() if self._counters is not None else None
        with self._storage.read() as tx:
            caller, values = self._authenticate(credentials, tx, kind, stamp)
            data, total = produce(tx, caller) if produce is not None else (None, None)
        keys = AUTH_KEYS if kind is None else dependency_keys(kind, caller.group)
        if (stamp is not None and self._counters is not None and self._counters.change_stamp() == stamp
                and all(k in STAMPED_KINDS for k, _ in keys)):
            self._remember(keys, stamp, values)  # no write they depend on started or ended meanwhile
        else:
            stamp = None  # the stamp does not vouch for these counters
        return Snapshot(caller=caller, data=data, total=total, keys=keys, values=values, stamp=stamp)

    def _authenticate(self, credentials: Credentials, tx: Tx, kind: Optional[str],
                      stamp: Optional[int]) -> tuple[Caller, tuple[int, ...]]:
        """The caller, and the counters of ``dependency_keys(kind, caller.group)`` (of AUTH_KEYS
        without a kind) as of this snapshot or of ``stamp``: values known at the stamp the store
        still shows need no query, else they are read in one statement (every statement costs a
        wait for the GIL when the server is busy). Counters older than the data read afterwards
        are safe: the answer is then cached under values that no longer match, and read again."""
        if self._counters is None:
            return self._auth.authenticate(credentials.authorization, credentials.group, tx), ()
        key = (credentials.authorization, credentials.group)
        memo = self._memo.get(key)
        if memo is not None and self._clock().timestamp() < memo.caller.token_expires:
            values = self._counters_of(tx, AUTH_KEYS if kind is None else dependency_keys(kind, memo.caller.group),
                                       stamp)
            if values[:len(AUTH_KEYS)] == memo.values:
                return memo.caller, values
        else:
            values = self._counters_of(tx, AUTH_KEYS, stamp)
        auth_values = values[:len(AUTH_KEYS)]
        caller = self._auth.authenticate(credentials.authorization, credentials.group, tx)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()  # many tokens at once: start over rather than track recency
        self._memo[key] = _Memo(caller, auth_values)
        if kind is None:
            return caller, auth_values
        return caller, auth_values + self._counters_of(tx, ((kind, caller.group),), stamp)

    def _counters_of(self, tx: Tx, keys: Stamp, stamp: Optional[int]) -> tuple[int, ...]:
        known = self._known.get(keys) if stamp is not None else None
        if known is not None and known[0] == stamp:
            return known[1]
        return self._versions(tx, keys)

    def _remember(self, keys: Stamp, stamp: int, values: tuple[int, ...]) -> None:
        if len(self._known) >= MEMO_SIZE:
            self._known.clear()
        self._known[keys] = (stamp, values)
        self._known[AUTH_KEYS] = (stamp, values[:len(AUTH_KEYS)])

    @staticmethod
    def _versions(tx: Tx, keys: Stamp) -> tuple[int, ...]:
        # only called when the backend keeps counters: its transactions are CountingTx
        return cast(CountingTx, tx).versions(keys)
