"""Tokens, users, groups and permissions.

Tokens are HS256 JWTs (PyJWT) carrying ``sub`` (user name), ``uid`` (the user's stable id),
``typ`` (``api`` or ``session``), ``jti``, ``iat`` and ``exp``. Every request re-reads the user and
the revocation list inside one read transaction, so a revocation or a deleted user takes effect at
once in every process (no cache to go stale). A token binds to the user's ``uid``, not the name:
a user deleted and added again under the same name is a new identity, and the old tokens stay
refused (CONTRACT section 16).
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Mapping, Optional

import jwt

from ..config import Settings
from ..core.codec import from_doc, to_doc
from ..core.errors import (
    AlreadyExists,
    BadRequest,
    ConfigError,
    InvalidToken,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    StorageError,
    StorageUnavailable,
    TokenExpired,
    ValidationError,
)
from ..core.models import ALL_PERMISSIONS, Group, Revocation, Role, TokenRecord, User, role_permissions
from ..core.timeutil import Clock, format_time
from ..core.wire import ACCOUNT_NAME
from ..storage import StorageBackend, Tx
from .audit_rows import CLI, record_row

log = logging.getLogger("xpresso_env.auth")
ALGORITHM = "HS256"
_SCHEMES = {"jwt", "bearer"}


DEFAULT_PREFERENCES = {"time_zone": "UTC", "time_format": "24h"}

# The group of a caller whose request named none, where that is allowed (GET /api/v2/me): no group
# name is empty, so it holds no role and no permission.
NO_GROUP = ""


@dataclass(frozen=True)
class Caller:
    """Who is asking, and in which group: the result of authenticating a request."""

    user: User
    group: str
    token_expires: float = float("inf")  # unix time the token stops being valid
    jti: str = ""  # the token's id (logout revokes it; last_used follows it)
    typ: str = "api"  # api | session

    def can(self, permission: str) -> bool:
        if self.user.superuser:
            return True
        role = self.user.role_in(self.group)
        return role is not None and permission in role_permissions(role)


@dataclass(frozen=True)
class Identity:
    """What GET /api/v2/me answers (AuthService.whoami)."""

    user: str
    superuser: bool
    groups: dict[str, Optional[str]]  # group name -> role (None: a superuser who is not a member)
    group: Optional[str]  # the request's group, if it named one (or has exactly one)
    permissions: list[str]  # held in ``group``
    email: Optional[str] = None
    date_joined: Optional[str] = None  # wire-format UTC times
    last_login: Optional[str] = None
    preferences: dict[str, str] = field(default_factory=dict)  # time_zone, time_format (defaults filled in)
    provider: str = "local"  # who keeps the password: the page offers a password change for local only


@dataclass(frozen=True)
class TokenInfo:
    """One line of `token list`. A revoked id with no record of its issue (revoked by hand, or
    issued before tokens were recorded) has no user, issued or expires."""

    jti: str
    user: Optional[str]
    issued: Optional[datetime]
    expires: Optional[datetime]
    revoked: bool


@dataclass(frozen=True)
class IssuedToken:
    token: str  # the bare JWT
    jti: str
    user: str
    expires: str

    @property
    def display(self) -> str:
        return f"Jwt {self.token}"


def load_secret(settings: Settings, create: bool = False) -> bytes:
    """The signing secret: configured directly, or read from ``auth.secret_file`` (``init``
    creates it, mode 0600)."""
    if settings.auth.secret:
        return settings.auth.secret.encode()
    path: Path = settings.resolve(settings.auth.secret_file)
    if not path.exists():
        if not create:
            raise ConfigError(f"auth.secret_file: {path} does not exist: run `xpresso-env init`")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"auth.secret_file: cannot read {path}: {exc.strerror}") from None
    if len(secret) < 32:
        raise ConfigError(f"auth.secret_file: {path} holds a secret shorter than 32 characters")
    return secret.encode()


def parse_role(value: object) -> Role:
    """A role by its name: the one place a role is read from text (CLI, fixtures, services)."""
    try:
        return Role(value)
    except (ValueError, TypeError):
        raise BadRequest(f"unknown role {value!r}; roles: {', '.join(r.value for r in Role)}") from None


def parse_membership(item: str) -> tuple[str, str]:
    """``GROUP:ROLE`` as the CLI takes it, split at the last colon (the role is checked by
    ``parse_role`` where it is used)."""
    group, sep, role = item.rpartition(":")
    if not sep or not group or not role:
        raise BadRequest(f"expected GROUP:ROLE, got {item!r}")
    return group, role


def split_authorization(header: Optional[str]) -> str:
    """The bare token from an Authorization header: ``Jwt t``, ``Bearer t`` or just ``t``."""
    if header is None or not header.strip():
        raise NotAuthenticated()
    parts = header.strip().split()
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and parts[0].lower() in _SCHEMES:
        return parts[1]
    raise InvalidToken()


def check_name(field: str, value: object) -> str:
    """A group's or a user's name (``wire.ACCOUNT_NAME``)."""
    if not isinstance(value, str) or not ACCOUNT_NAME.matches(value):
        raise ValidationError.one(field, ACCOUNT_NAME.message)
    return value


LAST_USED_EVERY_S = 60.0  # a token's last_used is written at most this often by one process


class AuthService:
    def __init__(self, storage: StorageBackend, secret: bytes, clock: Clock, token_days: int):
        self._storage = storage
        self._secret = secret
        self._clock = clock
        self._token_days = token_days
        self._used: dict[str, float] = {}  # jti -> when this process last wrote its last_used (monotonic)
        self._used_lock = threading.Lock()

    def note_use(self, caller: Caller) -> None:
        """Record that ``caller``'s token answered a request: ``last_used`` of its record, written
        at most once a minute per token and process (after the request's read, never inside it).
        Best effort: a store that cannot take the write now is tried again at the next use."""
        if not caller.jti:
            return
        now = time.monotonic()
        with self._used_lock:
            last = self._used.get(caller.jti)
            if last is not None and now - last < LAST_USED_EVERY_S:
                return
            if len(self._used) >= 65536:
                self._used.clear()
            self._used[caller.jti] = now
        try:
            with self._storage.write() as tx:
                doc = tx.get(TokenRecord.KIND, caller.jti)
                if doc is not None:
                    tx.update(to_doc(replace(from_doc(doc), last_used=self._clock())))
        except (StorageUnavailable, StorageError) as exc:
            with self._used_lock:
                self._used.pop(caller.jti, None)
            log.debug("last_used of token %s not written: %s", caller.jti, exc)

    # -- tokens ---------------------------------------------------------------------------
    def issue_token(self, user_name: str, days: Optional[int] = None, by: str = CLI) -> IssuedToken:
        """Sign a token and record its issue (jti, user, times: never the token) for `token list`."""
        days = self._token_days if days is None else days
        if days <= 0:
            raise BadRequest("--days must be positive")
        with self._storage.write() as tx:
            user = self._user(tx, user_name)
            if user is None:
                raise NotFound(f"user {user_name!r} does not exist")
            issued = self.issue_in(tx, user, timedelta(days=days))
            record_row(tx, self._clock(), "token_created", user.name, by, detail=issued.jti)
            return issued

    def issue_in(self, tx: Tx, user: User, lifetime: timedelta, name: str = "", typ: str = "api") -> IssuedToken:
        """Sign a token for ``user`` and record its issue in ``tx`` (the caller's write)."""
        now = self._clock()
        exp = now + lifetime
        jti = uuid.uuid4().hex
        tx.insert(to_doc(TokenRecord(id=jti, user=user.name, date_created=now, expires=exp, user_id=user.uid,
                                     name=name, typ=typ)))
        token = jwt.encode({"sub": user.name, "uid": user.uid, "typ": typ, "jti": jti, "iat": int(now.timestamp()),
                            "exp": int(exp.timestamp())}, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token=token, jti=jti, user=user.name, expires=exp.isoformat())

    def list_tokens(self, user_name: Optional[str] = None) -> list[TokenInfo]:
        """Issued tokens (of one user, if given), oldest first, with whether each is revoked."""
        with self._storage.read() as tx:
            if user_name is not None and tx.get(User.KIND, user_name) is None:
                raise NotFound(f"user {user_name!r} does not exist")
            issued: list[TokenRecord] = [from_doc(d) for d in tx.query(TokenRecord.KIND)]
            revoked: list[Revocation] = [from_doc(d) for d in tx.query(Revocation.KIND)]
        revoked_ids = {r.jti for r in revoked}
        with self._storage.read() as tx:
            live = {u.name: u.uid for u in map(from_doc, tx.query(User.KIND)) if not u.deleted}
        # A token of another identity under the same name (deleted, then added again) is dead
        # whatever the revocation list says.
        revoked_ids |= {t.id for t in issued if t.user_id and live.get(t.user) != t.user_id}
        known = {t.id for t in issued}
        out = [TokenInfo(jti=t.id, user=t.user, issued=t.date_created, expires=t.expires, revoked=t.id in revoked_ids)
               for t in issued if user_name is None or t.user == user_name]
        out += [TokenInfo(jti=r.jti, user=r.user, issued=None, expires=None, revoked=True)
                for r in revoked if r.jti not in known and (user_name is None or r.user == user_name)]
        return out

    def revoke(self, jti: str, user: Optional[str] = None) -> None:
        if not isinstance(jti, str) or not re.fullmatch(r"[0-9a-fA-F-]{8,64}", jti):
            raise BadRequest(f"not a token id: {jti!r}")
        with self._storage.write() as tx:
            if tx.get(Revocation.KIND, jti) is None:
                owner = tx.get(TokenRecord.KIND, jti)
                record_row(tx, self._clock(), "token_revoked", user or (owner.body.get("user") if owner else "") or "",
                           CLI, detail=jti)
            self.revoke_in(tx, jti, user)

    def revoke_in(self, tx: Tx, jti: str, user: Optional[str]) -> None:
        if tx.get(Revocation.KIND, jti) is None:
            tx.insert(to_doc(Revocation(jti=jti, date_created=self._clock(), user=user)))

    def _decode(self, token: str) -> dict:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": ["exp", "iat", "sub", "jti"]},
                                # our clock, so tests with an injected clock see expiry for real
                                leeway=0)
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.PyJWTError:
            raise InvalidToken() from None
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti"), str):
            raise InvalidToken()
        if claims["exp"] <= self._clock().timestamp():
            raise TokenExpired()
        return claims

    # -- requests -------------------------------------------------------------------------
    def authenticate(self, authorization: Optional[str], group_header: Optional[str], tx: Tx,
                     group_required: bool = True) -> Caller:
        """Check the token, then the group (CONTRACT section 7 order), inside ``tx``. Without
        ``group_required`` (GET /api/v2/me) a request naming no group is answered too: by a
        user of exactly one group in that group, else with ``NO_GROUP``."""
        user, claims = self._token_user(authorization, tx)
        if group_required or group_header or (not user.superuser and len(user.memberships) == 1):
            group = self._pick_group(user, group_header, tx)
        else:
            group = NO_GROUP
        return Caller(user=user, group=group, token_expires=float(claims["exp"]), jti=claims["jti"],
                      typ="session" if claims.get("typ") == "session" else "api")

    def _token_user(self, authorization: Optional[str], tx: Tx) -> tuple[User, dict]:
        claims = self._decode(split_authorization(authorization))
        if tx.get(Revocation.KIND, claims["jti"]) is not None:
            raise InvalidToken()
        user = self._user(tx, claims["sub"])
        if user is None or not self._same_identity(user, claims):
            raise InvalidToken()
        return user, claims

    @staticmethod
    def _same_identity(user: User, claims: dict) -> bool:
        """Whether the token was issued to this user, not to an earlier one of the same name. A
        token issued before tokens carried ``uid`` is judged by its issue time: it must not be
        older than the user (the upgrade revoked those of gone users already)."""
        uid = claims.get("uid")
        if uid is not None:
            return uid == user.uid
        return isinstance(claims.get("iat"), int) and claims["iat"] >= int(user.date_created.timestamp())

    @staticmethod
    def identity(caller: Caller, tx: Tx) -> "Identity":
        """GET /api/v2/me: the caller's user, their groups and what they may do in the request's
        group (None, with no permission listed, for ``NO_GROUP``: see ``authenticate``). A
        superuser's groups are every group; the role is None in the ones they are not a member
        of (they act there as system administrator)."""
        user = caller.user
        group = None if caller.group == NO_GROUP else caller.group
        names = [g.id for g in tx.query(Group.KIND)] if user.superuser else list(user.memberships)
        groups = {name: (None if user.role_in(name) is None else str(user.role_in(name))) for name in sorted(names)}
        permissions = [] if group is None else sorted(p for p in ALL_PERMISSIONS if caller.can(p))
        return Identity(user=user.name, superuser=user.superuser, groups=groups, group=group, permissions=permissions,
                        email=user.email, date_joined=format_time(user.date_created),
                        last_login=None if user.last_login is None else format_time(user.last_login),
                        preferences={**DEFAULT_PREFERENCES, **user.preferences}, provider=user.provider)

    def _pick_group(self, user: User, header: Optional[str], tx: Tx) -> str:
        if header is None or header == "":
            if not user.superuser and len(user.memberships) == 1:
                return next(iter(user.memberships))
            raise BadRequest("The Group header is required: name the group this request is for.")
        # A name no group could have is simply not there (and never reaches storage).
        if not ACCOUNT_NAME.matches(header) or tx.get(Group.KIND, header) is None:
            raise PermissionDenied(why=f"group {header!r} does not exist (user {user.name!r})")
        if not user.superuser and header not in user.memberships:
            raise PermissionDenied(why=f"user {user.name!r} is not a member of group {header!r}")
        return header

    @staticmethod
    def require(caller: Caller, permission: str) -> None:
        if not caller.can(permission):
            raise PermissionDenied(why=f"missing permission {permission!r} in group {caller.group!r} "
                                       f"for user {caller.user.name!r}")

    # -- users and groups (CLI and fixtures) ------------------------------------------------
    @staticmethod
    def _user(tx: Tx, name: str) -> Optional[User]:
        doc = tx.get(User.KIND, name)
        if doc is None:
            return None
        user = from_doc(doc)
        return None if user.deleted else user

    live_user = _user  # the user of that name, None if there is none or it was deleted

    @staticmethod
    def put_user(tx: Tx, user: User) -> None:
        """Store a new user, in place of a deleted one of the same name if there is one (the old
        one's tokens were revoked when it was deleted). AlreadyExists if a live one has the name."""
        existing = tx.get(User.KIND, user.name)
        if existing is not None and not existing.body.get("deleted"):
            raise AlreadyExists(f"user {user.name!r} already exists")
        if existing is not None:
            tx.update(to_doc(user))
        else:
            tx.insert(to_doc(user))

    def add_group(self, name: str) -> Group:
        check_name("group", name)
        group = Group(name=name, date_created=self._clock())
        with self._storage.write() as tx:
            if tx.get(Group.KIND, name) is not None:
                raise AlreadyExists(f"group {name!r} already exists")
            tx.insert(to_doc(group))
        return group

    def list_groups(self) -> list[Group]:
        with self._storage.read() as tx:
            return [from_doc(d) for d in tx.query(Group.KIND)]

    def list_users(self) -> list[User]:
        """Live users (deleted ones are kept in storage, not listed)."""
        with self._storage.read() as tx:
            return [u for u in map(from_doc, tx.query(User.KIND, include_deleted=False)) if not u.deleted]

    def add_user(self, name: str, superuser: bool = False, roles: Optional[Mapping[str, str]] = None) -> User:
        check_name("user", name)
        parsed = {group: parse_role(role) for group, role in (roles or {}).items()}
        user = User(name=name, date_created=self._clock(), superuser=superuser, roles=parsed, uid=uuid.uuid4().hex)
        with self._storage.write() as tx:
            for group in parsed:
                if tx.get(Group.KIND, group) is None:
                    raise NotFound(f"group {group!r} does not exist")
            self.put_user(tx, user)
        return user

    def delete_user(self, name: str) -> None:
        """Soft-delete a user and revoke every token issued to them, for good: a user added
        later under the same name is another identity (CONTRACT section 16)."""
        with self._storage.write() as tx:
            user = self._user(tx, name)
            if user is None:
                raise NotFound(f"user {name!r} does not exist")
            tx.update(to_doc(replace(user, deleted=True)))
            now = self._clock()
            for token in map(from_doc, tx.query(TokenRecord.KIND)):
                # A token recorded before uids (user_id "", in a store imported from an older
                # export) is the user's by name.
                mine = token.user_id == user.uid if token.user_id else token.user == user.name
                if mine and tx.get(Revocation.KIND, token.id) is None:
                    tx.insert(to_doc(Revocation(jti=token.id, date_created=now, user=user.name)))

    def set_role(self, user_name: str, group: str, role: Optional[str]) -> User:
        """Give ``user_name`` the ``role`` in ``group``; None removes them from the group."""
        new_role = None if role is None else parse_role(role)
        with self._storage.write() as tx:
            user = self._user(tx, user_name)
            if user is None:
                raise NotFound(f"user {user_name!r} does not exist")
            if tx.get(Group.KIND, group) is None:
                raise NotFound(f"group {group!r} does not exist")
            roles = dict(user.roles)
            if new_role is None:
                roles.pop(group, None)
            else:
                roles[group] = new_role
            changed = replace(user, roles=roles)
            if changed.roles != user.roles:
                record_row(tx, self._clock(), "role_changed", user.name, CLI,
                           detail=f"{group}: {user.roles.get(group) or 'none'} -> {new_role or 'none'}")
            tx.update(to_doc(changed))
        return changed
