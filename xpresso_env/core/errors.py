"""The domain error hierarchy.

No HTTP lives here: ``xpresso_env.http.errors`` maps each class to a status code in one table.
"""
from __future__ import annotations


class XpressoError(Exception):
    """Base of every error the service raises on purpose."""

    default_detail = "Error."

    def __init__(self, detail: str | None = None):
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class ConfigError(XpressoError):
    """The configuration is unusable (unknown key, bad value, unknown plugin)."""


class NotAuthenticated(XpressoError):
    default_detail = "Authentication credentials were not provided."


class InvalidToken(NotAuthenticated):
    default_detail = "Invalid token."


class TokenExpired(NotAuthenticated):
    default_detail = "Token has expired."


class InvalidCredentials(NotAuthenticated):
    """A failed sign-in: the same words for an unknown user and a wrong password."""

    default_detail = "Invalid username or password."


class PermissionDenied(XpressoError):
    """The detail stays DRF's exact words (clients match them); ``why`` is for the server's log
    only: the permission that was missing and the group it was checked in."""

    default_detail = "You do not have permission to perform this action."

    def __init__(self, detail: str | None = None, *, why: str | None = None):
        super().__init__(detail)
        self.why = why


class NotFound(XpressoError):
    default_detail = "Not Found"


class Conflict(XpressoError):
    default_detail = "Conflict."


class NameConflict(Conflict):
    """A live record of the same kind already has this name in this group."""


class AlreadyExists(Conflict):
    """A record with this id (or a group/user with this name) already exists."""


class BadRequest(XpressoError):
    default_detail = "Bad request."


class ValidationError(BadRequest):
    """Field errors, rendered as ``{"field": ["message"]}``."""

    def __init__(self, fields: dict[str, list[str]] | None = None, detail: str | None = None):
        self.fields = dict(fields or {})
        super().__init__(detail or "; ".join(f"{k}: {' '.join(v)}" for k, v in self.fields.items()))

    @classmethod
    def one(cls, field: str, message: str) -> "ValidationError":
        return cls({field: [message]})


class UnencodableText(ValidationError):
    """A string that cannot be encoded as UTF-8 (a lone surrogate): never stored."""


class PayloadTooLarge(XpressoError):
    default_detail = "Request body is too large."


class UnsupportedMediaType(XpressoError):
    default_detail = "Unsupported media type in request."


class TooManyRequests(XpressoError):
    default_detail = "Too many requests of this kind at once, try again later."


class QueueFull(TooManyRequests):
    """A group has ``builds.max_queued_per_group`` builds waiting or running (429 with
    Retry-After ``retry_after_s``)."""

    def __init__(self, detail: str | None = None, *, retry_after_s: int = 30):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class LoginLocked(TooManyRequests):
    """Too many failed sign-ins for one user name (``auth.login_max_failures`` within
    ``auth.login_window_s``): 429 with Retry-After ``retry_after_s``."""

    default_detail = "Too many failed sign-ins for this user, try again later."

    def __init__(self, detail: str | None = None, *, retry_after_s: int = 60):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Unprocessable(XpressoError):
    """Well-formed, but refused for what it means (422)."""

    default_detail = "Unprocessable request."


class IdempotencyKeyReused(Unprocessable):
    """The same Idempotency-Key came with another request body within 24 hours."""


class ServiceUnavailable(XpressoError):
    """A collaborator (database, Docker daemon) cannot be reached right now."""

    default_detail = "Service temporarily unavailable, try again later."


class StorageUnavailable(ServiceUnavailable):
    default_detail = "Storage is unavailable, try again later."


class StorageError(XpressoError):
    """Storage is reachable but refused the operation (corrupt file, schema too new...)."""


class SchemaOutdated(StorageError):
    default_detail = "The storage schema is missing or outdated: run `xpresso-env init`."
