"""The export file's YAML, written and read one item at a time, so neither side holds the file.

Writing: each stored document is one line, a YAML flow mapping in JSON's syntax (YAML reads it;
``json`` writes it some twenty times faster than PyYAML's emitter), with the characters YAML does
not take raw escaped. Reading: a file laid out that way is read a line at a time, each item with
``json`` (``read_lines``); any other layout — files of earlier versions (block style, one
``yaml.dump`` of the whole), hand edits — through libyaml's parser events, each item of a list or
a mapping composed and constructed alone (``YamlStream``). Either way a file of any size is read
in the memory of its largest item.
"""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import IO, Any

import yaml
from yaml import events
from yaml.composer import Composer

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LoaderBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
# Characters JSON leaves raw that YAML refuses (non-printable) or reads as a line break (U+0085,
# U+2028, U+2029); both read the \\uXXXX escape the same way.
_NOT_YAML = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")
# A float JSON writes as 1e-05 is a string to YAML 1.1, which wants a dot: 1.0e-05. Strings are
# matched first so that text inside them is left alone.
_MAYBE_EXPONENT = re.compile(r"\d[eE][-+]\d")
_EXPONENT = re.compile(r'"(?:[^"\\]|\\.)*"|(?<![\d.])(-?\d+)([eE][-+]\d+)')


def _escape(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"


def _dot(match: re.Match) -> str:
    return match.group(0) if match.group(1) is None else f"{match.group(1)}.0{match.group(2)}"


def flow(value: Any) -> str:
    """``value`` (JSON-able: what a stored body holds) as one line of YAML flow style."""
    text = _encode(value)
    if _NOT_YAML.search(text):
        text = _NOT_YAML.sub(_escape, text)
    if _MAYBE_EXPONENT.search(text):
        text = _EXPONENT.sub(_dot, text)
    return text


def block(value: Any, indent: int) -> str:
    """``value`` as PyYAML writes it, indented: for what ``flow`` cannot write (NaN)."""
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    pad = " " * indent
    # Empty lines stay empty: inside a scalar, extra spaces there would become content.
    return "".join(pad + line if line.strip("\n") else line for line in text.splitlines(keepends=True))


def item(value: Any, indent: int = 2) -> str:
    """One item of a block sequence at ``indent``."""
    try:
        return f"{' ' * indent}- {flow(value)}\n"
    except ValueError:  # NaN or infinity: JSON has no spelling for them, YAML has
        return block([value], indent)


def entry(key: str, value: str | bytes, indent: int = 2) -> str:
    """One ``key: text`` line of a block mapping at ``indent``; bytes as ``!!binary``."""
    if isinstance(value, bytes):
        return f'{" " * indent}{flow(key)}: !!binary "{base64.b64encode(value).decode("ascii")}"\n'
    return f"{' ' * indent}{flow(key)}: {flow(value)}\n"


def header(fields: dict[str, Any]) -> str:
    return yaml.dump(fields, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


class _StreamLoader(_LoaderBase, Composer):  # type: ignore[misc, valid-type]
    """libyaml's parser (when installed) with PyYAML's composer, which composes one node at a time
    (libyaml's own composes only whole documents)."""


class YamlStream:
    """Walks a YAML file's events: the caller steps into mappings and sequences and takes their
    items one at a time. yaml.YAMLError on a file that is not YAML."""

    def __init__(self, fh: IO[str]):
        self._loader = _StreamLoader(fh)
        self._loader.anchors = {}  # kept across items: an alias may name an earlier item's anchor

    def at(self, *kinds: type) -> bool:
        return self._loader.check_event(*kinds)

    def take(self, kind: type) -> events.Event:
        if not self._loader.check_event(kind):
            event = self._loader.peek_event()
            raise yaml.YAMLError(f"expected {kind.__name__[:-5].lower()}, found {type(event).__name__[:-5].lower()} "
                                 f"at line {event.start_mark.line + 1}")
        return self._loader.get_event()

    def value(self) -> Any:
        """The next node, composed and constructed whole."""
        node = self._loader.compose_node(None, None)
        return self._loader.construct_document(node)

    def sequence(self) -> Iterator[Any]:
        """The items of the sequence that starts here, one at a time."""
        self.take(events.SequenceStartEvent)
        while not self.at(events.SequenceEndEvent):
            yield self.value()
        self.take(events.SequenceEndEvent)

    def mapping(self) -> Iterator[Any]:
        """The keys of the mapping that starts here, one at a time: the caller reads each key's
        value (``value``, ``sequence``, ``mapping``) before asking for the next key."""
        self.take(events.MappingStartEvent)
        while not self.at(events.MappingEndEvent):
            yield self.value()
        self.take(events.MappingEndEvent)

    def close(self) -> None:
        self._loader.dispose()


class NotLines(Exception):
    """The file is not laid out as ``export`` writes it: read it as YAML (``YamlStream``)."""


_ITEM = "  - "
_KIND = re.compile(r"  ([A-Za-z_][A-Za-z0-9_]*):( \[\])?\n?$")
_json_value = json.JSONDecoder().raw_decode


def _header_field(line: str) -> tuple[Any, Any]:
    try:
        value = yaml.load(line, Loader=_LoaderBase)
    except yaml.YAMLError:
        raise NotLines() from None
    if not isinstance(value, dict) or len(value) != 1:
        raise NotLines()
    return next(iter(value.items()))


def _log_entry(line: str) -> tuple[Any, str | bytes]:
    try:
        key, end = _json_value(line, 2)
        if line[end:end + 2] != ": ":
            raise NotLines()
        rest = line[end + 2:].rstrip("\n")
        if rest.startswith('!!binary "') and rest.endswith('"'):
            return key, base64.b64decode(rest[10:-1], validate=True)
        value, end = _json_value(rest)
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        raise NotLines() from None
    if end != len(rest) or not isinstance(value, str):
        raise NotLines()
    return key, value


class LineSink:
    """What the line reader hands over (``transfer._Import``)."""

    def field(self, key: Any, value: Any) -> None: ...
    def section(self, name: str) -> None: ...
    def kind(self, name: str) -> None: ...
    def document(self, kind: str, i: int, item: Any) -> None: ...
    def log(self, image_id: Any, text: Any) -> None: ...


def read_lines(fh: IO[str], sink: LineSink) -> None:
    """Read a file as ``export`` writes it, a line at a time, each item with ``json`` (its lines
    are JSON too; some twenty times faster than composing YAML events in Python). Raises NotLines
    at the first line that is not of that layout (a file of an earlier version, a hand edit):
    the caller then reads the whole file again as YAML."""
    section = None
    kind = None
    n = 0
    for line in fh:
        if line.startswith(_ITEM) and section == "kinds" and kind is not None:
            try:
                value, end = _json_value(line, 4)
            except ValueError:
                raise NotLines() from None
            if line[end:].strip():
                raise NotLines()
            sink.document(kind, n, value)
            n += 1
        elif line.startswith('  "') and section == "logs":
            sink.log(*_log_entry(line))
        elif line.startswith("  ") and section == "kinds":
            match = _KIND.match(line)
            if match is None:
                raise NotLines()
            sink.kind(match.group(1))
            kind, n = (None, 0) if match.group(2) else (match.group(1), 0)
        elif line in ("kinds:\n", "logs:\n"):
            section, kind = line[:-2], None
            sink.section(section)
        elif line in ("logs: {}\n", "logs: {}"):
            section, kind = None, None
        elif line[:1].isalpha():
            section, kind = None, None
            key, value = _header_field(line)
            if key in ("kinds", "logs"):
                raise NotLines()  # kinds: {} and the like: not what export writes
            sink.field(key, value)
        else:
            raise NotLines()
