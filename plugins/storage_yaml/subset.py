"""The subset of YAML the ``yaml`` backend writes, and a strict line reader for it.

PyYAML, even with libyaml, needs some 1.5 s each way for 10,000 harnesses. So records are written
in a plain subset of YAML (one ``field: value`` line per field; values plain, quoted, or one-line
``[...]``/``{...}`` collections of those) and a strict line reader reads that subset, several
times faster. The subset is ordinary YAML: any YAML tool reads the file, and a person may write
whatever YAML they like: the line reader gives up at the first line outside the subset
(:func:`read_subset` answers None) and PyYAML reads the file instead (``format.parse``). The
reader accepts nothing whose meaning in YAML differs from what it reads;
``tests/storage/test_yaml_specific.py`` compares it with PyYAML on the writer's output and on
mutated files.
"""
from __future__ import annotations

import math
import re
from typing import Any, Optional

import yaml

__all__ = ["read_subset", "render_yaml", "top_key"]

if yaml.__with_libyaml__:
    _BaseDumper = yaml.CSafeDumper
else:  # pragma: no cover - PyYAML built without libyaml: correct, only slower
    _BaseDumper = yaml.SafeDumper

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


def top_key(key: str) -> str:
    """A top-level key (at column 0, where `...` or `---` would end the document)."""
    if _TOP_LINE.match(key + ":") and _scalar(key) == key:
        return key
    return _dump(key).rstrip("\n").removesuffix("\n...")

