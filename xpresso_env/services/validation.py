"""Field validation for request bodies and list queries (DRF-style messages)."""
from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit

from ..errors import BadRequest, NotFound, ValidationError

Validator = Callable[[Any], Any]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
READ_ONLY_MESSAGE = "This field is read-only."
UNKNOWN_MESSAGE = "Unknown field."


class FieldError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def text(max_len: int, blank: bool = True) -> Validator:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise FieldError("Not a valid string.")
        if not blank and value.strip() == "":
            raise FieldError("This field may not be blank.")
        if len(value) > max_len:
            raise FieldError(f"Ensure this field has no more than {max_len} characters.")
        if _CONTROL.search(value):
            raise FieldError("Control characters are not allowed.")
        return value
    return check


def name_text(max_len: int = 128) -> Validator:
    base = text(max_len, blank=False)

    def check(value: Any) -> str:
        value = base(value)
        if value != value.strip():
            raise FieldError("Leading or trailing spaces are not allowed.")
        return value
    return check


def optional(inner: Validator) -> Validator:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)
    return check


def absolute_path(blank: bool = False) -> Validator:
    base = text(4096, blank=blank)

    def check(value: Any) -> str:
        value = base(value)
        if value == "" and blank:
            return value
        if not value.startswith("/"):
            raise FieldError("Must be an absolute path.")
        return value
    return check


def http_url(value: Any) -> str:
    value = text(2048, blank=False)(value)
    if any(c.isspace() for c in value):
        raise FieldError("Enter a valid URL.")
    try:
        parts = urlsplit(value)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        raise FieldError("Enter a valid URL.") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise FieldError("Enter a valid http or https URL.")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FieldError("Must be a valid boolean.")
    return value


def choice(enum_cls: type[enum.Enum]) -> Validator:
    def check(value: Any) -> Any:
        try:
            return enum_cls(value)
        except (ValueError, TypeError):
            raise FieldError(f'"{value}" is not a valid choice.') from None
    return check


def validate_body(body: Any, fields: Mapping[str, Validator], required: set[str],
                  read_only: set[str], partial: bool) -> dict[str, Any]:
    """Validate a JSON object against field validators; every problem is collected."""
    if not isinstance(body, dict):
        raise BadRequest(f"Invalid data. Expected a dictionary, but got {_json_type(body)}.")
    errors: dict[str, list[str]] = {}
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in read_only:
            errors[key] = [READ_ONLY_MESSAGE]
        elif key not in fields:
            errors[str(key)[:200]] = [UNKNOWN_MESSAGE]
        else:
            try:
                out[key] = fields[key](value)
            except FieldError as exc:
                errors[key] = [exc.message]
    if not partial:
        for key in sorted(required - body.keys()):
            errors[key] = ["This field is required."]
    if errors:
        raise ValidationError(errors)
    return out


def _json_type(value: Any) -> str:
    return {list: "list", str: "str", int: "int", float: "float", bool: "bool", type(None): "null"}.get(type(value), type(value).__name__)


def parse_uuid(value: str) -> uuid.UUID:
    """A path id: anything but a UUID is simply not found."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound() from None


@dataclass(frozen=True)
class ListQuery:
    filters: dict[str, Any]
    limit: Optional[int]
    offset: int
    include_deleted: bool


def _int_param(name: str, raw: str, low: int, high: Optional[int]) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValidationError.one(name, "A valid integer is required.") from None
    if value < low or (high is not None and value > high):
        raise ValidationError.one(name, f"Must be between {low} and {high}." if high else f"Must be at least {low}.")
    return value


def parse_list_query(params: Mapping[str, Any], filters: Mapping[str, Optional[type[enum.Enum]]],
                     extra: set[str] = frozenset()) -> ListQuery:
    """Query parameters of a list: equality filters, limit (1..1000), offset (>= 0), deleted."""
    unknown = sorted(set(params) - set(filters) - {"limit", "offset", "deleted"} - set(extra))
    if unknown:
        raise BadRequest(f"Unknown query parameter(s): {', '.join(u[:100] for u in unknown)}.")
    for key, value in params.items():
        if not isinstance(value, str):
            raise ValidationError.one(key, "Give this parameter once.")
    limit = _int_param("limit", params["limit"], 1, 1000) if "limit" in params else None
    offset = _int_param("offset", params["offset"], 0, None) if "offset" in params else 0
    deleted_raw = params.get("deleted", "false").lower()
    if deleted_raw not in ("true", "false", "1", "0"):
        raise ValidationError.one("deleted", "Must be true or false.")
    where: dict[str, Any] = {}
    for key, enum_cls in filters.items():
        if key in params:
            value = params[key]
            if enum_cls is not None:
                try:
                    value = enum_cls(value).value
                except ValueError:
                    raise ValidationError.one(key, f'"{value[:100]}" is not a valid choice.') from None
            where[key] = value
    return ListQuery(filters=where, limit=limit, offset=offset, include_deleted=deleted_raw in ("true", "1"))


def page(items: list, query: ListQuery) -> tuple[list, int]:
    total = len(items)
    end = None if query.limit is None else query.offset + query.limit
    return items[query.offset:end], total
