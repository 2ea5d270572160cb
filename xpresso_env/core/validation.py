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
    RECORD_NAME,
    UNENCODABLE_MESSAGE,
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


def _int_param(name: str, raw: str, low: int, high: Optional[int]) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValidationError.one(name, "A valid integer is required.") from None
    if value < low or (high is not None and value > high):
        raise ValidationError.one(name, f"Must be between {low} and {high}." if high else f"Must be at least {low}.")
    return value


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
