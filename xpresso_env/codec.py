"""Records <-> storage documents.

A storage backend sees only ``Doc``: a JSON-able body plus the few index columns it must query
and constrain on. This keeps every backend small and lets one conformance suite test them all.
"""
from __future__ import annotations

import dataclasses
import enum
import typing
import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

from .models import RECORD_TYPES, Group, Image, Revocation, User
from .storage import Doc
from .timeutil import format_time, parse_time


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


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


def _decode(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(args[0], value) if len(args) == 1 else value
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_decode(inner, v) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        _, inner = typing.get_args(tp) or (Any, Any)
        return {k: _decode(inner, v) for k, v in value.items()}
    if tp is uuid.UUID:
        return uuid.UUID(value)
    if tp is datetime:
        return parse_time(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    return value


def record_body(record: Any) -> dict[str, Any]:
    return {f.name: _encode(getattr(record, f.name)) for f in dataclasses.fields(record)}


def record_from_body(cls: type, body: dict[str, Any]) -> Any:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _decode(hints[k], v) for k, v in body.items() if k in names})


def to_doc(record: Any) -> Doc:
    """The storage document for a record, with its index columns."""
    body = record_body(record)
    if isinstance(record, (Group, User, Revocation)):
        return Doc(kind=record.KIND, id=str(record.id), group=None, name=None,
                   deleted=bool(getattr(record, "deleted", False)),
                   created=body["date_created"], body=body)
    if isinstance(record, Image):
        # name:tag is not unique (rebuilds); the 409 for a running build is the service's check.
        return Doc(kind=record.KIND, id=str(record.id), group=record.group, name=None,
                   deleted=record.is_deleted, created=body["date_created"], body=body,
                   visible=tuple(g for g in record.groups if g != record.group))
    return Doc(kind=record.KIND, id=str(record.id), group=record.group, name=record.name,
               deleted=record.deleted, created=body["date_created"], body=body)


def from_doc(doc: Doc) -> Any:
    return record_from_body(RECORD_TYPES[doc.kind], doc.body)
