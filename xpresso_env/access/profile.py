"""What a signed-in user does for themselves (CONTRACT section 13): their own API tokens, their
password, their preferences. Each call authenticates the request (no group needed), then opens
its own write transaction, which also writes the audit row."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from functools import lru_cache
from typing import Any, Callable
from zoneinfo import available_timezones

from ..core.codec import from_doc, to_doc
from ..core.errors import BadRequest, NotFound, ValidationError
from ..core.models import Revocation, TokenRecord, User
from ..core.timeutil import Clock, format_time
from ..storage import StorageBackend
from .audit import Audit
from .auth import DEFAULT_PREFERENCES, AuthService
from .passwords import Passwords, check_new_password
from .reads import Credentials, Reads

Body = Callable[[], Any]
TOKEN_NAME_MAX = 100
TIME_FORMATS = ("24h", "12h")


def token_wire(t: TokenRecord, revoked: bool) -> dict[str, Any]:
    return {"jti": t.id, "name": t.name, "typ": t.typ, "created": format_time(t.date_created),
            "expires": format_time(t.expires), "last_used": None if t.last_used is None else format_time(t.last_used),
            "revoked": revoked}


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("Expected a JSON object.")
    return body


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError({k[:100]: ["Unknown field."] for k in unknown})


@lru_cache(maxsize=1)
def time_zones() -> frozenset[str]:
    """The IANA time zone names this system knows (the OpenAPI document lists them)."""
    return frozenset(available_timezones()) | {"UTC"}


def check_time_zone(value: Any) -> str:
    """An IANA time zone name the system knows (``Europe/Paris``, ``UTC``)."""
    if not isinstance(value, str) or value not in time_zones():
        shown = value[:64] if isinstance(value, str) else value
        raise ValidationError.one("time_zone", f'"{shown}" is not a known IANA time zone name.')
    return value


class ProfileService:
    def __init__(self, storage: StorageBackend, reads: Reads, auth: AuthService, audit: Audit, passwords: Passwords,
                 clock: Clock, token_days_max: int, token_days: int):
        self._storage = storage
        self._reads = reads
        self._auth = auth
        self._audit = audit
        self._passwords = passwords
        self._clock = clock
        self._days_max = token_days_max
        self._days_default = min(token_days, token_days_max)

    # -- own tokens -------------------------------------------------------------------------------
    def tokens(self, credentials: Credentials) -> list[dict[str, Any]]:
        """The caller's tokens, oldest first: never the tokens themselves."""
        caller = self._reads.caller(credentials, group_required=False)
        with self._storage.read() as tx:
            mine = [t for t in map(from_doc, tx.query(TokenRecord.KIND)) if t.user_id == caller.user.uid]
            return [token_wire(t, tx.get(Revocation.KIND, t.id) is not None) for t in mine]

    def create_token(self, credentials: Credentials, body: Body, address: str) -> dict[str, Any]:
        caller = self._reads.caller(credentials, group_required=False)
        data = _object(body())
        _only(data, {"name", "days"})
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > TOKEN_NAME_MAX:
            raise ValidationError.one("name", f"A name of 1 to {TOKEN_NAME_MAX} characters is required.")
        days = data.get("days", self._days_default)
        if type(days) is float and days.is_integer():  # 30.0 is the JSON integer 30
            days = int(days)
        if type(days) is not int or not 1 <= days <= self._days_max:
            raise ValidationError.one("days", f"A whole number of days from 1 to {self._days_max} is required.")
        with self._storage.write() as tx:
            user = self._auth.live_user(tx, caller.user.name)
            if user is None or user.uid != caller.user.uid:
                raise NotFound()
            issued = self._auth.issue_in(tx, user, timedelta(days=days), name=name.strip(), typ="api")
            self._audit.record(tx, "token_created", user.name, user.name, address, f"{issued.jti} {name.strip()!r}")
            record = from_doc(tx.get(TokenRecord.KIND, issued.jti))
        return {"token": issued.display, **token_wire(record, False)}

    def revoke_token(self, credentials: Credentials, jti: str, address: str) -> None:
        """Revoke one of the caller's tokens; another user's (or no) token is a 404."""
        caller = self._reads.caller(credentials, group_required=False)
        with self._storage.write() as tx:
            doc = tx.get(TokenRecord.KIND, jti) if len(jti) <= 64 else None
            if doc is None or from_doc(doc).user_id != caller.user.uid:
                raise NotFound()
            if tx.get(Revocation.KIND, jti) is None:
                self._auth.revoke_in(tx, jti, caller.user.name)
                self._audit.record(tx, "token_revoked", caller.user.name, caller.user.name, address, jti)

    # -- password ---------------------------------------------------------------------------------
    def change_password(self, credentials: Credentials, body: Body, address: str) -> None:
        caller = self._reads.caller(credentials, group_required=False)
        data = _object(body())
        _only(data, {"old", "new"})
        old, new = data.get("old"), data.get("new")
        if not isinstance(old, str):
            raise ValidationError.one("old", "The current password is required.")
        why = check_new_password(new)
        if why:
            raise ValidationError.one("new", why)
        if caller.user.password is None:
            raise BadRequest("This user has no password here (signed in through a directory or a proxy, "
                             "or never given one): an administrator sets one with `xpresso-env user set-password`.")
        if not self._passwords.verify(caller.user.password, old).ok:
            raise ValidationError.one("old", "Wrong password.")
        self._set_password(caller.user, new, by=caller.user.name, address=address)

    def set_password(self, name: str, password: str, by: str) -> None:
        """`xpresso-env user set-password NAME` (the CLI reads the password)."""
        why = check_new_password(password)
        if why:
            raise BadRequest(why)
        with self._storage.read() as tx:
            user = self._auth.live_user(tx, name)
        if user is None:
            raise NotFound(f"user {name!r} does not exist")
        self._set_password(user, password, by=by, address="")

    def _set_password(self, user: User, password: str, by: str, address: str) -> None:
        hashed = self._passwords.hash(password)  # outside the transaction: it takes a while
        with self._storage.write() as tx:
            current = self._auth.live_user(tx, user.name)
            if current is None or current.uid != user.uid:
                raise NotFound()
            tx.update(to_doc(replace(current, password=hashed)))
            self._audit.record(tx, "password_changed", user.name, by, address)

    # -- preferences ------------------------------------------------------------------------------
    def set_preferences(self, credentials: Credentials, body: Body) -> None:
        caller = self._reads.caller(credentials, group_required=False)
        data = _object(body())
        _only(data, {"preferences"})
        prefs = data.get("preferences")
        if not isinstance(prefs, dict):
            raise ValidationError.one("preferences", "An object is required.")
        unknown = sorted(set(prefs) - set(DEFAULT_PREFERENCES))
        if unknown:
            raise ValidationError({k[:100]: ["Unknown preference."] for k in unknown})
        checked: dict[str, str] = {}
        if "time_zone" in prefs:
            checked["time_zone"] = check_time_zone(prefs["time_zone"])
        if "time_format" in prefs:
            if prefs["time_format"] not in TIME_FORMATS:
                raise ValidationError.one("time_format", "Must be 24h or 12h.")
            checked["time_format"] = prefs["time_format"]
        with self._storage.write() as tx:
            user = self._auth.live_user(tx, caller.user.name)
            if user is None or user.uid != caller.user.uid:
                raise NotFound()
            tx.update(to_doc(replace(user, preferences={**user.preferences, **checked})))
