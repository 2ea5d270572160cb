"""Signing in (CONTRACT section 13): POST /api/v2/auth/login and logout.

The identity providers of ``auth.providers`` are asked in order; the first that vouches for an
account wins. A sign-in that none vouches for is one 401 with the same words whether the user
exists or not (the local provider checks a dummy hash for an unknown user, so the time is about
the same). Failed sign-ins are counted per user name in storage (``LoginFailures``), so every
process sees them: after ``auth.login_max_failures`` within ``auth.login_window_s`` every attempt
for that name is a 429 with Retry-After until the oldest of them leaves the window, the right
password included. The lockout is logged once, when it starts.
"""
from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Optional, Sequence

from ..core.codec import from_doc, to_doc
from ..core.errors import AlreadyExists, BadRequest, InvalidCredentials, LoginLocked, ValidationError
from ..core.models import Group, LoginFailures, Role, User
from ..core.timeutil import Clock, format_time
from ..core.wire import ACCOUNT_NAME
from ..storage import StorageBackend, Tx
from .audit import Audit
from .auth import AuthService, Caller, IssuedToken, parse_role
from .providers import Account, IdentityProvider, SignInAttempt, StoredAccount

log = logging.getLogger("xpresso_env.auth")


@dataclass(frozen=True)
class Session:
    token: IssuedToken
    user: User


@dataclass(frozen=True)
class LoginPolicy:
    session_hours: float
    max_failures: int
    window_s: float


class SignInService:
    def __init__(self, storage: StorageBackend, auth: AuthService, audit: Audit, providers: Sequence[IdentityProvider],
                 policy: LoginPolicy, clock: Clock):
        self._storage = storage
        self._auth = auth
        self._audit = audit
        self._providers = list(providers)
        self._policy = policy
        self._clock = clock

    # -- sign in ----------------------------------------------------------------------------------
    def login(self, attempt: SignInAttempt) -> Session:
        name = attempt.username
        if name is not None:
            self._check_lockout(name)
        account: Optional[Account] = None
        provider = ""
        for candidate in self._providers:
            account = candidate.sign_in(attempt, self._lookup)
            if account is not None:
                provider = candidate.name
                break
        if account is None or not ACCOUNT_NAME.matches(account.name):
            if name is None:
                raise ValidationError({"username": ["This field is required."], "password": ["This field is required."]})
            self._failed(name, attempt.address)
            raise InvalidCredentials()
        return self._signed_in(account, provider, attempt.address)

    def _lookup(self, name: str) -> Optional[StoredAccount]:
        if not ACCOUNT_NAME.matches(name):
            return None
        with self._storage.read() as tx:
            user = self._auth.live_user(tx, name)
        return None if user is None else StoredAccount(name=user.name, password_hash=user.password,
                                                       provider=user.provider)

    def _signed_in(self, account: Account, provider: str, address: str) -> Session:
        hours = timedelta(hours=self._policy.session_hours)
        with self._storage.write() as tx:
            user = self._auth.live_user(tx, account.name)
            if user is None:
                if not account.create:
                    raise InvalidCredentials()  # a provider vouched for a name nobody added
                user = User(name=account.name, date_created=self._clock(), uid=uuid.uuid4().hex, provider=provider)
                try:
                    self._auth.put_user(tx, user)
                except AlreadyExists:  # the same person signing in twice at once elsewhere
                    raise InvalidCredentials() from None
            changed = replace(user, last_login=self._clock())
            if account.email is not None:
                changed = replace(changed, email=account.email)
            if account.new_password_hash is not None:
                changed = replace(changed, password=account.new_password_hash)
            if account.directory_roles is not None:
                roles = self._directory_roles(tx, account.directory_roles)
                if roles != user.directory_roles:
                    detail = ", ".join(f"{g}:{r}" for g, r in sorted(roles.items())) or "none"
                    self._audit.record(tx, "role_changed", user.name, provider, address, f"directory roles: {detail}")
                changed = replace(changed, directory_roles=roles)
            tx.update(to_doc(changed))
            if tx.get(LoginFailures.KIND, user.name) is not None:
                tx.purge(LoginFailures.KIND, user.name)
            issued = self._auth.issue_in(tx, changed, hours, name="session", typ="session")
            self._audit.record(tx, "login", user.name, user.name, address, f"provider {provider}")
        return Session(token=issued, user=changed)

    @staticmethod
    def _directory_roles(tx: Tx, given: dict[str, str]) -> dict[str, Role]:
        roles: dict[str, Role] = {}
        for group, role in given.items():
            if tx.get(Group.KIND, group) is None:
                log.warning("auth.ldap.group_roles names group %r, which does not exist: role not given", group)
                continue
            roles[group] = parse_role(role)
        return roles

    # -- failures and lockout ---------------------------------------------------------------------
    def _recent(self, record: Optional[LoginFailures]) -> list[float]:
        since = self._clock().timestamp() - self._policy.window_s
        return [t for t in (record.times if record else []) if t > since]

    def _check_lockout(self, name: str) -> None:
        with self._storage.read() as tx:
            doc = tx.get(LoginFailures.KIND, name)
        self._raise_if_locked(self._recent(from_doc(doc) if doc else None))

    def _raise_if_locked(self, recent: list[float]) -> None:
        limit = self._policy.max_failures
        if len(recent) >= limit:
            # Locked until the oldest of the last `limit` failures leaves the window.
            until = recent[-limit] + self._policy.window_s
            raise LoginLocked(retry_after_s=max(1, math.ceil(until - self._clock().timestamp())))

    def _failed(self, name: str, address: str) -> None:
        """Count a failure in storage (one write, whichever process), audit it, and log the lockout
        it starts, if it does."""
        now = self._clock()
        for _ in range(2):  # a first failure raced by another process's first: counted on the retry
            try:
                with self._storage.write() as tx:
                    doc = tx.get(LoginFailures.KIND, name, lock=True)
                    record = from_doc(doc) if doc else None
                    recent = self._recent(record)
                    self._raise_if_locked(recent)  # locked meanwhile by another process
                    recent = (recent + [now.timestamp()])[-self._policy.max_failures:]
                    updated = LoginFailures(name=name, times=recent, date_created=record.date_created if record else now)
                    if record is None:
                        tx.insert(to_doc(updated))
                    else:
                        tx.update(to_doc(updated))
                    self._audit.record(tx, "login_failed", name, "", address)
                    locked = len(recent) >= self._policy.max_failures
                    if locked:
                        self._audit.record(tx, "login_locked", name, "", address,
                                           f"{len(recent)} failures within {self._policy.window_s:g} s")
                break
            except AlreadyExists:
                continue
        else:
            return
        if locked:
            log.warning("sign-in locked for user %r after %d failures within %g s (last from %s), until %s",
                        name, len(recent), self._policy.window_s, address,
                        format_time(now + timedelta(seconds=self._policy.window_s)))

    # -- sign out ---------------------------------------------------------------------------------
    def logout(self, caller: Caller, address: str) -> None:
        if caller.typ != "session":
            raise BadRequest("Sign-out ends a session: this is an API token (revoke it with "
                             "DELETE /api/v2/me/tokens/{jti}).")
        with self._storage.write() as tx:
            self._auth.revoke_in(tx, caller.jti, caller.user.name)
            self._audit.record(tx, "logout", caller.user.name, caller.user.name, address)
