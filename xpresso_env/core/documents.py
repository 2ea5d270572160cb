"""The storage document, and the one table of which body fields are a document's index columns.

A backend sees only :class:`Doc`: a JSON-able body plus the few index columns it must query and
constrain on (``xpresso_env.storage`` states the contract; ``codec.py`` turns records into
documents). The columns of a record's document follow from its body by the rules of
:data:`INDEX_RULES`: ``codec.to_doc`` builds every record's document with them, and a backend that
keeps only bodies (the ``yaml`` plugin) derives the columns back with the same rules, so the two
cannot drift. The table is part of the stored format: a change to it re-indexes what the ``yaml``
backend loads, as a schema migration would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

__all__ = ["Doc", "IndexRule", "INDEX_RULES", "INDEX_FIELDS", "index_rule", "index_columns"]


@dataclass(frozen=True)
class Doc:
    kind: str
    id: str
    group: Optional[str]
    name: Optional[str]
    deleted: bool
    created: str  # wire-format UTC time; sorts as text
    body: dict[str, Any]
    visible: tuple[str, ...] = field(default=())


# The index columns, in the order index_columns() returns them.
INDEX_FIELDS = ("id", "group", "name", "deleted", "created", "visible")


@dataclass(frozen=True)
class IndexRule:
    """Which body field each index column of a kind's documents is read from; None: the column
    is always None (no owning group; names not unique) or empty (no further visible groups)."""

    id: str = "id"
    group: Optional[str] = "group"
    name: Optional[str] = "name"
    deleted: str = "deleted"  # absent: False
    visible: Optional[str] = None  # a list of groups; the owning group is left out of the column


# Kinds not listed (harness, engine, and the services' own bookkeeping documents) use the default:
# id, group, name and deleted from the fields of those names. Groups, users and revocations are
# named by their id and belong to no group; several images may share a name:tag (rebuilds), and
# an image is visible in its owning group and in every group of its ``groups``.
_DEFAULT = IndexRule()
INDEX_RULES: dict[str, IndexRule] = {
    "group": IndexRule(id="name", group=None, name=None),
    "user": IndexRule(id="name", group=None, name=None),
    "revocation": IndexRule(id="jti", group=None, name=None),
    "token": IndexRule(group=None, name=None),
    "audit": IndexRule(group=None, name=None),
    "login_failures": IndexRule(id="name", group=None, name=None),
    "image": IndexRule(name=None, deleted="is_deleted", visible="groups"),
}


def index_rule(kind: str) -> IndexRule:
    return INDEX_RULES.get(kind, _DEFAULT)


Columns = Callable[[Mapping[str, Any]], tuple]


def _reader(rule: IndexRule) -> Columns:
    # One closure per kind, its field names bound once: the yaml backend derives the columns of
    # every record of the file when it loads it.
    id_f, group_f, name_f, deleted_f, visible_f = rule.id, rule.group, rule.name, rule.deleted, rule.visible

    def columns(body: Mapping[str, Any]) -> tuple:
        get = body.get
        group = None if group_f is None else get(group_f)
        visible: tuple = ()
        if visible_f is not None:
            groups = get(visible_f)
            if isinstance(groups, list) and all(isinstance(g, str) for g in groups):
                visible = tuple(g for g in groups if g != group)
        return (get(id_f), group, None if name_f is None else get(name_f), get(deleted_f, False),
                get("date_created"), visible)

    return columns


_READERS: dict[str, Columns] = {kind: _reader(rule) for kind, rule in INDEX_RULES.items()}
_DEFAULT_READER = _reader(_DEFAULT)


def index_columns(kind: str, body: Mapping[str, Any]) -> tuple:
    """The index columns a body of ``kind`` implies, in :data:`INDEX_FIELDS` order.

    Values are as the body holds them, unchecked (a hand-edited file may hold anything; the
    caller checks). ``visible`` is the body's further groups without the owning group, in their
    order, when the field is a list of strings; otherwise empty."""
    return _READERS.get(kind, _DEFAULT_READER)(body)
