"""Records <-> storage documents.

A storage backend sees only ``Doc``: a JSON-able body plus the few index columns it must query
and constrain on. This keeps every backend small and lets one conformance suite test them all.
Which body fields are the index columns is written once, in ``documents.INDEX_RULES``.
"""
from __future__ import annotations

import dataclasses
import enum
import types
import typing
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Callable, Optional

from .documents import Doc, index_columns
from .errors import UnencodableText
from .models import RECORD_TYPES
from .timeutil import format_time, parse_time
from .wire import UNENCODABLE_MESSAGE, all_encodable


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


Converter = Optional[Callable[[Any], Any]]  # None: the stored value is used as it is


def _time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)  # the common case: our own wire format
    except (TypeError, ValueError):
        return parse_time(value)
    return parsed if parsed.tzinfo is timezone.utc else parse_time(value)


def _none_or(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else convert(v)


def _converter(tp: Any) -> Converter:
    """How to turn a stored JSON value back into a field of type ``tp``; worked out once per type
    (decoding runs for every record of every read, so no type inspection per value)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _converter(args[0]) if len(args) == 1 else None
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        item = _converter(inner) or (lambda v: v)
        if origin is tuple:
            return _none_or(lambda v: tuple(map(item, v)))
        return _none_or(lambda v: [item(x) for x in v])
    if origin is dict:
        _, inner = typing.get_args(tp) or (Any, Any)
        item = _converter(inner)
        return None if item is None else _none_or(lambda v: {k: item(x) for k, x in v.items()})
    if tp is uuid.UUID:
        return _none_or(uuid.UUID)
    if tp is datetime:
        return _none_or(_time)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = {m.value: m for m in tp}  # a dict look-up; tp(v) only for a value it lacks (an error)
        return _none_or(lambda v: members.get(v) or tp(v))
    return None


@lru_cache(maxsize=None)
def _plan(cls: type) -> dict[str, Converter]:
    hints = typing.get_type_hints(cls)
    return {f.name: _converter(hints[f.name]) for f in dataclasses.fields(cls)}


def record_body(record: Any) -> dict[str, Any]:
    return {f.name: _encode(getattr(record, f.name)) for f in dataclasses.fields(record)}


def record_from_body(cls: type, body: dict[str, Any]) -> Any:
    plan = _plan(cls)
    values = {}
    for key, value in body.items():
        if key in plan:  # fields a newer version stored and this one does not know are dropped
            convert = plan[key]
            values[key] = value if convert is None or value is None else convert(value)
    return cls(**values)


def _check_encodable(body: dict[str, Any]) -> None:
    """The last line of defence behind request validation: no backend is ever handed a string
    that cannot be written as UTF-8 (it would fail there, or later in ``export``)."""
    for key, value in body.items():
        if not all_encodable(value):
            raise UnencodableText({key: [UNENCODABLE_MESSAGE]})


def to_doc(record: Any) -> Doc:
    """The storage document for a record, with its index columns (``documents.INDEX_RULES``).

    :raises UnencodableText: a string field holds a lone surrogate.
    """
    body = record_body(record)
    _check_encodable(body)
    id_, group, name, deleted, created, visible = index_columns(record.KIND, body)
    return Doc(kind=record.KIND, id=id_, group=group, name=name, deleted=deleted, created=created, body=body,
               visible=visible)


def from_doc(doc: Doc) -> Any:
    return record_from_body(RECORD_TYPES[doc.kind], doc.body)
