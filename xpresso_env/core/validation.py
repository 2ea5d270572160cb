"""Field validation for request bodies and list queries (DRF-style messages).

Each field of a request body has a :class:`Rule`: it checks a value and states itself as JSON
Schema, so the OpenAPI document says exactly what the server accepts. String grammars live in
``xpresso_env/core/wire.py``.
"""
from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol

from .errors import BadRequest, NotFound, ValidationError
from .wire import (
    BOOLEAN,
    CONTROL_CHARS,
    GIT_REF,
    HTTP_URL,
    RECORD_NAME,
    SERVER_URL,
    UNENCODABLE_MESSAGE,
    USERINFO_MESSAGE,
    Schema,
    TextGrammar,
    all_encodable,
    encodable,
    enum_schema,
    nullable,
)

Validator = Callable[[Any], Any]

_CONTROL = re.compile(f"[{CONTROL_CHARS}]")
READ_ONLY_MESSAGE = "This field is read-only."
UNKNOWN_MESSAGE = "Unknown field."


class FieldError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Rule(Protocol):
    """A body field's rule: called with the value (raises FieldError), states itself as a schema."""

    def __call__(self, value: Any) -> Any: ...

    def schema(self) -> Schema: ...


@dataclass(frozen=True)
class Text:
    """A string matching a grammar; each way to miss it has its own message."""

    grammar: TextGrammar

    def __call__(self, value: Any) -> str:
        g = self.grammar
        if not isinstance(value, str):
            raise FieldError("Not a valid string.")
        if not encodable(value):
            raise FieldError(UNENCODABLE_MESSAGE)
        if len(value) < g.min_length:
            raise FieldError("This field may not be blank." if g.min_length == 1
                             else f"Ensure this field has at least {g.min_length} characters.")
        if len(value) > g.max_length:
            raise FieldError(f"Ensure this field has no more than {g.max_length} characters.")
        if _CONTROL.search(value):
            raise FieldError("Control characters are not allowed.")
        if g.regex.fullmatch(value) is None:
            raise FieldError(g.message)
        return value

    def schema(self) -> Schema:
        return self.grammar.schema()


@dataclass(frozen=True)
class ServerUrl:
    """An http(s) URL without user information (``wire.SERVER_URL``): ``user:pass@host``, and any
    ``@`` before the host (``http://127.0.0.1:18901@evil.example/`` reaches evil.example), is
    refused with its own message."""

    def __call__(self, value: Any) -> str:
        value = Text(HTTP_URL)(value)  # the URL's own mistakes first, with their messages
        if SERVER_URL.regex.fullmatch(value) is None:
            raise FieldError(USERINFO_MESSAGE)
        return value

    def schema(self) -> Schema:
        return SERVER_URL.schema()


# What makes a name a revision expression rather than a ref: said when such a name is refused.
REVISION_MARKS = ("~", "^", "@{", "..", ":")
_REVISION_HINT = "Revision expressions (~, ^, @{, .., :) are not allowed."


@dataclass(frozen=True)
class GitRef:
    """A git ref or commit id (``wire.GIT_REF``), checked when a build is submitted and again
    before git runs (``builds/workspace/refs.py``): whatever reaches git can never be read as
    an option or a revision expression. Each way to miss the grammar has its own message."""

    def __call__(self, value: Any) -> str:
        g = GIT_REF
        if not isinstance(value, str):
            raise FieldError("Not a valid string.")
        if value == "":
            raise FieldError("This field may not be blank.")
        if len(value) > g.max_length:
            raise FieldError(f"Ensure this field has no more than {g.max_length} characters.")
        if value.startswith("-"):
            raise FieldError("A git ref may not start with '-'.")
        if not encodable(value):
            raise FieldError(g.message)
        if g.regex.fullmatch(value) is None:
            if any(mark in value for mark in REVISION_MARKS):
                raise FieldError(f"{g.message} {_REVISION_HINT}")
            raise FieldError(g.message)
        return value

    def schema(self) -> Schema:
        return GIT_REF.schema()


@dataclass(frozen=True)
class Choice:
    enum_cls: type[enum.Enum]

    def __call__(self, value: Any) -> Any:
        try:
            return self.enum_cls(value)
        except (ValueError, TypeError):
            raise FieldError(f'"{str(value)[:100]}" is not a valid choice.') from None

    def schema(self) -> Schema:
        return enum_schema(self.enum_cls)


@dataclass(frozen=True)
class Boolean:
    def __call__(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise FieldError("Must be a valid boolean.")
        return value

    def schema(self) -> Schema:
        return dict(BOOLEAN)


@dataclass(frozen=True)
class Nullable:
    inner: Rule

    def __call__(self, value: Any) -> Any:
        return None if value is None else self.inner(value)

    def schema(self) -> Schema:
        return nullable(self.inner.schema())


boolean = Boolean()
git_ref = GitRef()


def choice(enum_cls: type[enum.Enum]) -> Choice:
    return Choice(enum_cls)


def name_text(max_len: int = 128) -> Text:
    """A record or user name: not blank, no control characters, no space at either end."""
    return Text(RECORD_NAME if max_len == RECORD_NAME.max_length else replace(RECORD_NAME, max_length=max_len))


def validate_body(body: Any, fields: Mapping[str, Validator], required: set[str],
                  read_only: set[str], partial: bool) -> dict[str, Any]:
    """Validate a JSON object against field validators; every problem is collected."""
    if not isinstance(body, dict):
        raise BadRequest(f"Invalid data. Expected a dictionary, but got {_json_type(body)}.")
    errors: dict[str, list[str]] = {}
    out: dict[str, Any] = {}
    for key, value in body.items():
        if not encodable(key):
            errors[_printable_key(key)] = [UNENCODABLE_MESSAGE]
        elif not all_encodable(value):
            errors[key] = [UNENCODABLE_MESSAGE]
        elif key in read_only:
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


def _printable_key(key: str) -> str:
    return key[:200].encode("utf-8", "backslashreplace").decode("utf-8")


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


# A query string's integer: ASCII digits only (CONTRACT section 16). int() alone would also read
# "٣" (Arabic-Indic), "３" (fullwidth), " 3", "+3" and "1_0"; a leading "-" is read only to say
# the value is below the range.
_QUERY_INT = re.compile(r"(-?)([0-9]+)")
QUERY_INT_CEILING = 2 ** 64  # what more digits than that stand for: past the end of any list or log
_MAX_DIGITS = len(str(QUERY_INT_CEILING))


def query_int(name: str, raw: Any, low: int, high: Optional[int] = None) -> int:
    """The one home of query-string integers: ``[0-9]+`` in ``low..high`` (``high`` None: no upper
    bound, and a number too long to be meant is :data:`QUERY_INT_CEILING`)."""
    if not isinstance(raw, str):
        raise ValidationError.one(name, "Give this parameter once.")
    match = _QUERY_INT.fullmatch(raw)
    if match is None:
        raise ValidationError.one(name, "A valid integer is required.")
    sign, digits = match.groups()
    digits = digits.lstrip("0") or "0"
    value = int(digits) if len(digits) <= _MAX_DIGITS else QUERY_INT_CEILING + 1
    if sign and value:
        value = -value
    if value < low or (high is not None and value > high):
        raise ValidationError.one(name, f"Must be between {low} and {high}." if high else f"Must be at least {low}.")
    return min(value, QUERY_INT_CEILING)


def reject_unknown_params(params: Mapping[str, Any], allowed: Iterable[str] = ()) -> None:
    """The one check for query parameters a route does not take (CONTRACT section 7: 400)."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise BadRequest(f"Unknown query parameter(s): {', '.join(u[:100] for u in unknown)}.")


def parse_list_query(params: Mapping[str, Any], filters: Mapping[str, Optional[type[enum.Enum]]],
                     extra: set[str] = frozenset()) -> ListQuery:
    """Query parameters of a list: equality filters, limit (1..1000), offset (>= 0), deleted."""
    reject_unknown_params(params, {*filters, "limit", "offset", "deleted", *extra})
    for key, value in params.items():
        if not isinstance(value, str):
            raise ValidationError.one(key, "Give this parameter once.")
        if not encodable(value):
            raise ValidationError.one(key, UNENCODABLE_MESSAGE)
    limit = query_int("limit", params["limit"], 1, 1000) if "limit" in params else None
    offset = query_int("offset", params["offset"], 0) if "offset" in params else 0
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
