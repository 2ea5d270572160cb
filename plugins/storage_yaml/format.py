"""The file format of the ``yaml`` storage backend: documents <-> the YAML document, both ways.

One YAML document, laid out for people to read and edit::

    schema_version: 2
    groups:
    - name: myGroup
      date_created: '2024-05-01T10:00:00.000000Z'
    users:
    - name: alice
      date_created: '2024-05-01T10:00:00.000000Z'
      superuser: false
      roles: {myGroup: member}
      deleted: false
    revocations: []
    harnesses:
    - id: 94f03015-5f0d-4c2e-a6e6-49ca71442a36
      group: myGroup
      name: TestHarness
      ...

Each kind has one key (its plural; a kind this code does not know gets ``<kind>s``) holding a
list of record bodies (``Doc.body``). The index columns (id, group, name, deleted, created,
visible) follow from the body by the rules ``codec.to_doc`` builds documents with
(``xpresso_env.storage.index_columns``, written once in the core), so the file holds no copy of
them; a document whose columns do not follow from its body (only ever seen in tests) carries an
``_index:`` mapping with the columns that differ, and ``_index: {body: ...}`` when the body itself
has a key named ``_index``.

Records are written in a plain subset of YAML that a strict line reader reads several times
faster than PyYAML (``subset.py``); any other YAML a person writes is read by PyYAML (with
libyaml when available).
"""
from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any, Optional

import yaml

from xpresso_env.core.errors import StorageError
from xpresso_env.storage import INDEX_FIELDS, Doc, index_columns, index_rule

from .subset import read_subset, render_yaml, top_key

# 1: documents and their index columns; 2: records visible in more groups than their owner's;
# 3: identity is not a name (xpresso_env.storage.identity_upgrade: users' uid, tokens' user_id).
SCHEMA_VERSION = 3
IDENTITY_VERSION = 3

FORMAT_HEADER = (
    "# xpresso-env data (storage backend `yaml`). You may edit this file by hand, also while the\n"
    "# server runs: the change is picked up on the next request. Fields are those of the API.\n"
    "# Comments are not kept: the server rewrites this file on every change.\n"
)
VERSION_KEY = "schema_version"
INDEX_KEY = "_index"

_PLURALS = {"group": "groups", "user": "users", "revocation": "revocations",
            "harness": "harnesses", "engine": "engines", "image": "images"}
_SINGULARS = {v: k for k, v in _PLURALS.items()}
KNOWN_KINDS = tuple(_PLURALS)  # written in this order, then other kinds by key

if yaml.__with_libyaml__:
    _BaseLoader = yaml.CSafeLoader
else:  # pragma: no cover - PyYAML built without libyaml: correct, only slower
    _BaseLoader = yaml.SafeLoader


class Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe loading; an unquoted time written by hand becomes the wire-format text we store."""


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    value = yaml.SafeLoader.construct_yaml_timestamp(loader, node)  # type: ignore[arg-type]
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.isoformat() if isinstance(value, date) else str(value)


Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


class RecordError(Exception):
    """A record that cannot be indexed: ``key``/``index`` locate it in the file."""

    def __init__(self, key: str, index: Optional[int], message: str):
        self.key, self.index, self.message = key, index, message
        super().__init__(message)


# -- kinds and keys ---------------------------------------------------------------------------

def kind_key(kind: str) -> str:
    return _PLURALS.get(kind) or kind + "s"


def key_kind(key: str) -> str:
    return _SINGULARS.get(key) or (key[:-1] if key.endswith("s") else key)


def storable_kind(kind: Any) -> bool:
    return isinstance(kind, str) and kind != "" and key_kind(kind_key(kind)) == kind


# -- index columns ----------------------------------------------------------------------------

def normalize_visible(visible: Any, group: Optional[str]) -> tuple[str, ...]:
    """As SQLite returns it: the owner left out, no duplicates, sorted."""
    return tuple(sorted({g for g in visible if g != group}))


def derive(kind: str, body: dict[str, Any], version: int) -> tuple:
    """The index columns a body implies, in INDEX_FIELDS order (values unchecked); no visible
    groups before version 2."""
    columns = index_columns(kind, body)
    visible = columns[5]
    if not visible:
        return columns
    return (*columns[:5], normalize_visible(visible, columns[1]) if version >= 2 else ())


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def to_record(doc: Doc, version: int) -> dict[str, Any]:
    """The mapping written to the file for a document."""
    actual = (doc.id, doc.group, doc.name, doc.deleted, doc.created, doc.visible)
    derived = derive(doc.kind, doc.body, version)
    differs = {f: (list(a) if f == "visible" else a)
               for f, a, d in zip(INDEX_FIELDS, actual, derived) if not _same(a, d)}
    if INDEX_KEY in doc.body:
        return {INDEX_KEY: {**differs, "body": doc.body}}
    if not differs:
        return doc.body
    return {INDEX_KEY: differs, **doc.body}


def from_record(kind: str, rec: Any, version: int, key: str, index: int) -> Doc:
    """A document from a record of the file; RecordError when it cannot be indexed."""
    if not isinstance(rec, dict):
        raise RecordError(key, index, f"a record must be a mapping of fields, not {type(rec).__name__}")
    override = rec.get(INDEX_KEY)
    if override is None:
        body = rec
        override = {}
    elif not isinstance(override, dict):
        raise RecordError(key, index, f"{INDEX_KEY} must be a mapping")
    elif "body" in override:
        body = override["body"]
        if not isinstance(body, dict):
            raise RecordError(key, index, f"{INDEX_KEY}.body must be a mapping")
    else:
        body = {k: v for k, v in rec.items() if k != INDEX_KEY}
    cols = dict(zip(INDEX_FIELDS, derive(kind, body, version)))
    for f in INDEX_FIELDS:
        if f in override:
            cols[f] = override[f]
    id_, group, name, deleted, created = (cols[f] for f in INDEX_FIELDS[:5])
    if not isinstance(id_, str) or not id_:
        raise RecordError(key, index, f"`{index_rule(kind).id}` is missing or not a string")
    if group is not None and not isinstance(group, str):
        raise RecordError(key, index, "`group` must be a string")
    if name is not None and not isinstance(name, str):
        raise RecordError(key, index, "`name` must be a string (quote it)")
    if not isinstance(deleted, bool):
        raise RecordError(key, index, f"`{index_rule(kind).deleted}` must be true or false")
    if not isinstance(created, str):
        raise RecordError(key, index, "`date_created` is missing or not a time")
    visible = cols["visible"] if version >= 2 else ()
    if not isinstance(visible, (list, tuple)) or not all(isinstance(g, str) for g in visible):
        raise RecordError(key, index, f"{INDEX_KEY}.visible must be a list of group names")
    return Doc(kind=kind, id=id_, group=group, name=name, deleted=deleted, created=created,
               body=body, visible=normalize_visible(visible, group))


def record_text(doc: Doc, version: int) -> str:
    """The file's text for a document: one list item."""
    return render_yaml(to_record(doc, version))


# -- the whole file ---------------------------------------------------------------------------

def parse(data: bytes, path: str) -> Any:
    """Parse the file: the line reader when it can, else PyYAML; a syntax error becomes a
    StorageError naming the line."""
    try:
        doc = read_subset(data.decode("utf-8"))
    except UnicodeDecodeError:
        doc = None
    if doc is not None:
        return doc
    try:
        return yaml.load(data, Loader=Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown place"
        detail = exc.problem or exc.context or "unreadable"
        if exc.context and exc.problem and exc.context_mark:  # e.g. an unclosed [ opened earlier
            detail += f" ({exc.context} started at line {exc.context_mark.line + 1})"
        raise StorageError(f"{path}: not valid YAML at {where}: {detail}") from None
    except yaml.YAMLError as exc:
        raise StorageError(f"{path}: not valid YAML: {exc}") from None


def record_line(data: bytes, key: str, index: Optional[int]) -> Optional[int]:
    """The 1-based line where ``key`` (or its index-th item) starts; used only for error messages."""
    try:
        root = yaml.compose(data, Loader=Loader)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for k, v in root.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            if index is not None and isinstance(v, yaml.SequenceNode) and index < len(v.value):
                return v.value[index].start_mark.line + 1
            return k.start_mark.line + 1
    return None


def compose_yaml(version: int, sections: list[tuple[str, list[str]]]) -> str:
    """The whole file from its rendered records, one section per kind key."""
    out = [FORMAT_HEADER, f"{VERSION_KEY}: {version}\n"]
    for key, items in sections:
        out.append(f"{top_key(key)}:" + ("\n" if items else " []\n"))
        out.extend(items)
    return "".join(out)
