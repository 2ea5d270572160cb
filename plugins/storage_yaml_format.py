"""The file format of the ``yaml`` storage backend: documents <-> YAML text, fast both ways.

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
visible) follow from the body, per kind, exactly as ``xpresso_env.core.codec.to_doc`` builds them; a
document whose columns do not follow from its body (only ever seen in tests) carries an
``_index:`` mapping with the columns that differ, and ``_index: {body: ...}`` when the body itself
has a key named ``_index``.

Speed: PyYAML, even with libyaml, needs some 1.5 s each way for 10,000 harnesses. So records are
written in a plain subset of YAML (one ``field: value`` line per field; values plain, quoted, or
one-line ``[...]``/``{...}`` collections of those) and a strict line reader reads that subset,
several times faster. The subset is ordinary YAML: any YAML tool reads the file, and a person may
write whatever YAML they like: the line reader gives up at the first line outside the subset and
PyYAML (with libyaml when available) reads the file instead. The reader accepts nothing whose
meaning in YAML differs from what it reads; ``tests/storage/test_yaml_specific.py`` compares it
with PyYAML on the writer's output and on mutated files.
"""
from __future__ import annotations

import math
import re
from datetime import date, datetime, timezone
from typing import Any, Optional

import yaml

from xpresso_env.core.errors import StorageError
from xpresso_env.storage import Doc

FORMAT_HEADER = (
    "# xpresso-env data (storage backend `yaml`). You may edit this file by hand, also while the\n"
    "# server runs: the change is picked up on the next request. Fields are those of the API.\n"
    "# Comments are not kept: the server rewrites this file on every change.\n"
)
VERSION_KEY = "schema_version"
INDEX_KEY = "_index"
INDEX_FIELDS = ("id", "group", "name", "deleted", "created", "visible")

_PLURALS = {"group": "groups", "user": "users", "revocation": "revocations",
            "harness": "harnesses", "engine": "engines", "image": "images"}
_SINGULARS = {v: k for k, v in _PLURALS.items()}
KNOWN_KINDS = tuple(_PLURALS)  # written in this order, then other kinds by key

# Index columns by kind (mirrors codec.to_doc): which body field is the id, which kinds have no
# owning group or no unique name, and where the deleted flag lives.
_ID_FIELD = {"group": "name", "user": "name", "revocation": "jti"}
_UNNAMED = frozenset({"group", "user", "revocation", "image"})
_DELETED_FIELD = {"image": "is_deleted"}

if yaml.__with_libyaml__:
    _BaseLoader, _BaseDumper = yaml.CSafeLoader, yaml.CSafeDumper
else:  # pragma: no cover - PyYAML built without libyaml: correct, only slower
    _BaseLoader, _BaseDumper = yaml.SafeLoader, yaml.SafeDumper


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
    """The index columns a body implies, in INDEX_FIELDS order (values unchecked)."""
    get = body.get
    if kind in _ID_FIELD:
        id_, group = get(_ID_FIELD[kind]), None
    else:
        id_, group = get("id"), get("group")
    name = None if kind in _UNNAMED else get("name")
    deleted = get(_DELETED_FIELD.get(kind, "deleted"), False)
    visible: tuple = ()
    if kind == "image" and version >= 2:
        groups = get("groups")
        if isinstance(groups, list) and all(isinstance(g, str) for g in groups):
            visible = normalize_visible(groups, group)
    return (id_, group, name, deleted, get("date_created"), visible)


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
        raise RecordError(key, index, f"`{_ID_FIELD.get(kind, 'id')}` is missing or not a string")
    if group is not None and not isinstance(group, str):
        raise RecordError(key, index, "`group` must be a string")
    if name is not None and not isinstance(name, str):
        raise RecordError(key, index, "`name` must be a string (quote it)")
    if not isinstance(deleted, bool):
        raise RecordError(key, index, f"`{_DELETED_FIELD.get(kind, 'deleted')}` must be true or false")
    if not isinstance(created, str):
        raise RecordError(key, index, "`date_created` is missing or not a time")
    visible = cols["visible"] if version >= 2 else ()
    if not isinstance(visible, (list, tuple)) or not all(isinstance(g, str) for g in visible):
        raise RecordError(key, index, f"{INDEX_KEY}.visible must be a list of group names")
    return Doc(kind=kind, id=id_, group=group, name=name, deleted=deleted, created=created,
               body=body, visible=normalize_visible(visible, group))


# -- the subset of YAML both fast paths use ---------------------------------------------------

_STR_TAG = "tag:yaml.org,2002:str"
_RESOLVER = yaml.resolver.Resolver()
# Printable characters beyond ASCII, less those YAML takes for a line break (U+0085, U+2028,
# U+2029) and the BOM (libyaml refuses it inside text).
_WIDE = "\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff"
# Plain (unquoted) text: no indicator first, none of ,[]{}#:'"` or tab inside, no space at either
# end; then the resolver must read it as text (not true, null, 12, 1.5, a time...).
_PLAIN = re.compile(f"[A-Za-z0-9_./{_WIDE}][A-Za-z0-9_./@+ {_WIDE}-]*(?<! )\\Z")
_SINGLE_OK = re.compile(f"[ -~{_WIDE}]*\\Z")  # what single quotes hold as it is
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]*(?:e[-+][0-9]+)?\Z")
_BOOLS = yaml.constructor.SafeConstructor.bool_values
# Double quotes: printable text and these escapes only.
_DQ_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}
_DQ_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_DQ_NEEDS_ESCAPE = re.compile(f'[^ !#-\\[\\]-~{_WIDE}]')
_DQ_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[\\"ntr0])')
_MAX_DEPTH = 20
_COMMENT = re.compile(f"[\t -~{_WIDE}]*\\Z")

# Lines of the subset: a top-level key (with a scalar, a flow value or nothing: a list follows),
# or a field of a list item (`- key: value` opens the item, `  key: value` goes on with it).
_TOP_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?: (.+))?\Z", re.S)
# A scalar token inside a value: single-quoted, double-quoted, or plain up to a flow indicator.
_TOKEN = re.compile(f"'((?:[ -&(-~{_WIDE}]|'')*)'"
                    f'|"((?:[ !#-\\[\\]-~{_WIDE}]|\\\\x[0-9a-fA-F]{{2}}|\\\\u[0-9a-fA-F]{{4}}'
                    f'|\\\\U[0-9a-fA-F]{{8}}|\\\\[\\\\"ntr0])*)"'
                    f"|([^,\\[\\]{{}}:'\"]+)")


class _NotSubset(Exception):
    """The text leaves the subset the line reader knows: PyYAML reads it instead."""


# -- reading ----------------------------------------------------------------------------------

def _unescape(match: re.Match) -> str:
    code = match.group(1)
    if len(code) == 1:
        return _DQ_UNESCAPES[code]
    point = int(code[1:], 16)
    if 0xD800 <= point <= 0xDFFF or point > 0x10FFFF:
        raise _NotSubset()  # libyaml refuses these: let it say so
    return chr(point)


def _plain_value(text: str, memo: dict[str, Any]) -> Any:
    try:
        return memo[text]
    except KeyError:
        pass
    if _INT.match(text):
        value: Any = int(text)
    elif _FLOAT.match(text):
        value = float(text)
    elif not _PLAIN.match(text):
        raise _NotSubset()
    else:
        tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))
        if tag == _STR_TAG:
            value = text
        elif tag == "tag:yaml.org,2002:bool":
            value = _BOOLS[text.lower()]
        elif tag == "tag:yaml.org,2002:null":
            value = None
        else:  # times, other spellings of numbers (0x1f, 1_000, 1e3): PyYAML's business
            raise _NotSubset()
    if len(memo) < 50000:
        memo[text] = value
    return value


def _token(text: str, pos: int, memo: dict[str, Any]) -> tuple[Any, int]:
    m = _TOKEN.match(text, pos)
    if m is None:
        raise _NotSubset()
    single, double, plain = m.groups()
    if single is not None:
        return single.replace("''", "'"), m.end()
    if double is not None:
        return _DQ_ESCAPE.sub(_unescape, double), m.end()
    return _plain_value(plain, memo), m.end()


def _node(text: str, pos: int, memo: dict[str, Any], depth: int) -> tuple[Any, int]:
    """A value at ``pos``: a scalar token or a one-line flow collection of values."""
    opener = text[pos:pos + 1]
    if opener != "[" and opener != "{":
        return _token(text, pos, memo)
    if depth >= _MAX_DEPTH:
        raise _NotSubset()
    closer = "]" if opener == "[" else "}"
    out: Any = [] if opener == "[" else {}
    pos += 1
    if text.startswith(closer, pos):
        return out, pos + 1
    while True:
        if opener == "{":
            key, pos = _token(text, pos, memo)
            if type(key) is not str or not text.startswith(": ", pos):
                raise _NotSubset()
            out[key], pos = _node(text, pos + 2, memo, depth + 1)
        else:
            value, pos = _node(text, pos, memo, depth + 1)
            out.append(value)
        if text.startswith(closer, pos):
            return out, pos + 1
        if not text.startswith(", ", pos):
            raise _NotSubset()
        pos += 2


def _value(text: str, memo: dict[str, Any]) -> Any:
    """A field's whole value. Scalars are remembered by their text: many repeat."""
    value = memo.get(text, memo)
    if value is not memo:
        return value
    if text[:1] != "[" and text[:1] != "{":
        value, end = _token(text, 0, memo)
        if end != len(text):
            raise _NotSubset()
        if len(memo) < 50000:
            memo[text] = value
        return value
    value, end = _node(text, 0, memo, 0)
    if end != len(text):
        raise _NotSubset()
    return value


def read_subset(text: str) -> Optional[dict[str, Any]]:
    """The document, if the text keeps to the subset the writer uses; None otherwise."""
    try:
        return _read_subset(text)
    except _NotSubset:
        return None


def _read_subset(text: str) -> dict[str, Any]:
    memo: dict[str, Any] = {}
    doc: dict[str, Any] = {}
    list_key: Optional[str] = None  # the top-level key whose list is being read
    items: Optional[list] = None
    record: Optional[dict] = None  # the list item being read
    for line in text.split("\n"):
        first = line[:1]
        if first == "-" or first == " ":
            lead = line[:2]
            if lead != "- " and lead != "  " or line[2:3] == " ":
                if line.strip(" "):
                    raise _NotSubset()
                continue  # a blank line
            if lead == "- ":
                if items is None:
                    raise _NotSubset()
                record = {}
                items.append(record)
            elif record is None:
                raise _NotSubset()
            key, end = _token(line, 2, memo)
            if type(key) is not str or end > 1000 or not line.startswith(": ", end) or end + 2 == len(line):
                raise _NotSubset()
            record[key] = _value(line[end + 2:], memo)
        elif line == "":
            continue
        elif first == "#":
            if not _COMMENT.match(line):  # YAML would see a line break (U+2028...) or refuse a character
                raise _NotSubset()
        else:
            m = _TOP_LINE.match(line)
            if m is None:
                raise _NotSubset()
            key, value = m.groups()
            if _plain_value(key, memo) != key:
                raise _NotSubset()
            if list_key is not None and not items:
                doc[list_key] = None  # `key:` with nothing under it is null in YAML
            record = None
            if value is None:
                list_key, items = key, []
                doc[key] = items
            else:
                list_key = items = None
                doc[key] = _value(value, memo)
    if list_key is not None and not items:
        doc[list_key] = None
    if not doc:
        raise _NotSubset()  # empty, or comments only: null in YAML
    return doc


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


# -- writing ----------------------------------------------------------------------------------

def _double_quoted(text: str) -> str:
    def escape(m: re.Match) -> str:
        ch = m.group(0)
        if ch in _DQ_ESCAPES:
            return _DQ_ESCAPES[ch]
        point = ord(ch)
        return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"
    return '"' + _DQ_NEEDS_ESCAPE.sub(escape, text) + '"'


def _scalar(value: Any) -> Optional[str]:
    """The subset's text for a scalar, or None when PyYAML's emitter must do it."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    tp = type(value)
    if tp is int:
        return str(value)
    if tp is str:
        if _PLAIN.match(value) and _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG:
            return value
        if _SINGLE_OK.match(value):
            return "'" + value.replace("'", "''") + "'"
        if not any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            return _double_quoted(value)
        return None
    if tp is float and math.isfinite(value):
        text = repr(value)
        if "e" in text and "." not in text:
            text = text.replace("e", ".0e")  # YAML 1.1 floats need the dot: 1e-05 -> 1.0e-05
        return text if _FLOAT.match(text) else None
    return None


def _key(key: Any) -> Optional[str]:
    # YAML caps implicit keys at 1024 characters: leave long ones to PyYAML.
    return _scalar(key) if type(key) is str and len(key) <= 256 else None


def _flow(value: Any, depth: int) -> Optional[str]:
    """A value on one line: a scalar, or a flow collection of values."""
    tp = type(value)
    if tp is list or tp is dict:
        if depth >= _MAX_DEPTH:
            return None
        parts = []
        for item in (value.items() if tp is dict else value):
            if tp is dict:
                ks, vs = _key(item[0]), _flow(item[1], depth + 1)
                if ks is None or vs is None:
                    return None
                parts.append(f"{ks}: {vs}")
            else:
                vs = _flow(item, depth + 1)
                if vs is None:
                    return None
                parts.append(vs)
        return ("[" if tp is list else "{") + ", ".join(parts) + ("]" if tp is list else "}")
    return _scalar(value)


def _dump(value: Any) -> str:
    return yaml.dump(value, Dumper=_BaseDumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=1 << 30)


def render_yaml(rec: dict[str, Any]) -> str:
    """One list item (``- field: value`` lines) for a record."""
    lines = []
    for k, v in rec.items():
        ks, vs = _key(k), _flow(v, 1)
        if ks is None or vs is None:
            return _dump([rec])  # outside the subset: still YAML, read by PyYAML
        lines.append(("  " if lines else "- ") + ks + ": " + vs + "\n")
    return "".join(lines) if lines else "- {}\n"


def _top_key(key: str) -> str:
    """A top-level key (at column 0, where `...` or `---` would end the document)."""
    if _TOP_LINE.match(key + ":") and _scalar(key) == key:
        return key
    return _dump(key).rstrip("\n").removesuffix("\n...")


def compose_yaml(version: int, sections: list[tuple[str, list[str]]]) -> str:
    """The whole file from its rendered records, one section per kind key."""
    out = [FORMAT_HEADER, f"{VERSION_KEY}: {version}\n"]
    for key, items in sections:
        out.append(f"{_top_key(key)}:" + ("\n" if items else " []\n"))
        out.extend(items)
    return "".join(out)
