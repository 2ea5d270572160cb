"""The wire shapes, each written once.

- The records a client receives (harness and engine v2/v1, the name look-up, the image record, a
  record's ``/state``): their keys in the order they are sent, with each value's JSON Schema.
  ``render.py`` renders records from these tables and ``http/openapi/`` documents them from the
  same tables.
- The grammar of every string a client sends (:class:`TextGrammar`), and of the names the service
  makes from them (a registry namespace): the services validate with it (``validation.py``) and
  the OpenAPI document states it, so the two cannot drift.

Patterns are written for both Python's ``re`` and ECMA-262 (the dialect of JSON Schema): explicit
character classes only (no ``\\s``, ``\\w`` or ``\\d``, whose meaning differs between the two).
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .models import ConfigurationState, EngineType, HarnessType, ImageStatus, OperationalState

Schema = dict[str, Any]

# --------------------------------------------------------------------------- value schemas

TIME: Schema = {"type": "string", "format": "date-time", "examples": ["2019-05-30T17:22:12.733397Z"]}
UUID: Schema = {"type": "string", "format": "uuid"}
STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
INTEGER: Schema = {"type": "integer"}


def enum_schema(cls: type[enum.Enum]) -> Schema:
    return {"type": "string", "enum": [m.value for m in cls]}


def nullable(schema: Schema) -> Schema:
    kind = schema.get("type")
    if "enum" in schema or "const" in schema or not isinstance(kind, str):
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [kind, "null"]}


# --------------------------------------------------------------------------- string grammars

# JSON lets a client send a lone UTF-16 surrogate ("\\ud800"); no such string is accepted or stored.
UNENCODABLE_MESSAGE = "Not valid Unicode text: lone surrogates (such as \\ud800) are not allowed."


def encodable(value: str) -> bool:
    """Whether ``value`` can be encoded as UTF-8."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def all_encodable(value: Any) -> bool:
    """Every string in a parsed JSON value, keys too, encodes as UTF-8 (iterative: a body may
    nest as deep as the JSON parser allows)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not encodable(item):
                return False
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return True


# Characters refused in every text field: C0 controls and DEL (the body of a character class).
CONTROL_CHARS = r"\x00-\x1f\x7f"
# What Python's str.isspace() calls whitespace, besides the controls above.
_SPACE = r" \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TEXT_CHAR = f"[^{CONTROL_CHARS}]"
_EDGE_CHAR = f"[^{CONTROL_CHARS}{_SPACE}]"


@dataclass(frozen=True)
class TextGrammar:
    """A string field's rule: its length bounds and a pattern the whole value must match.

    ``message`` explains a value of the right length that the pattern refuses."""

    pattern: str  # unanchored; matched against the whole value
    max_length: int
    message: str
    min_length: int = 0
    description: Optional[str] = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))

    def matches(self, value: str) -> bool:
        return self.min_length <= len(value) <= self.max_length and self.regex.fullmatch(value) is not None

    def schema(self) -> Schema:
        out: Schema = {"type": "string", "maxLength": self.max_length, "pattern": f"^(?:{self.pattern})$"}
        if self.min_length:
            out["minLength"] = self.min_length
        if self.description:
            out["description"] = self.description
        return out


def plain_text(max_length: int) -> TextGrammar:
    return TextGrammar(f"{_TEXT_CHAR}*", max_length, "Control characters are not allowed.")


# A harness or engine name: not blank, no control characters, no space at either end.
RECORD_NAME = TextGrammar(f"{_EDGE_CHAR}(?:{_TEXT_CHAR}*{_EDGE_CHAR})?", 128,
                          "May not be blank, nor start or end with a space.", min_length=1)
SITE = plain_text(64)
ABSOLUTE_PATH = TextGrammar(f"/{_TEXT_CHAR}*", 4096, "Must be an absolute path.", min_length=1)
ABSOLUTE_PATH_OR_EMPTY = TextGrammar(f"(?:/{_TEXT_CHAR}*)?", 4096, "Must be an absolute path (or empty).")
USERNAME = plain_text(256)  # an engine's credentials
API_TOKEN = plain_text(4096)
# A group's or a user's name: printable, no whitespace at the ends, no path or header trouble
# (it travels in the Group header and in URLs, and storage joins group names with \x1f).
ACCOUNT_NAME = TextGrammar("[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}", 128,
                           "Use 1-128 letters, digits and _ . @ + - (starting with a letter or digit).",
                           min_length=1)

# An http(s) URL that urllib parses with a host (and a valid port when one is given). Hosts are
# ASCII (an international name is written in punycode); IPv6 literals are bracketed.
_H16 = "[0-9A-Fa-f]{1,4}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_LS32 = f"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = "(?:" + "|".join([
    f"(?:{_H16}:){{6}}{_LS32}",
    f"::(?:{_H16}:){{5}}{_LS32}",
    f"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
    f"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
    f"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
    f"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
    f"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
    f"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
    f"(?:(?:{_H16}:){{0,6}}{_H16})?::",
]) + ")"
_REG_NAME = r"[A-Za-z0-9._~!$&'()*+,;=%-]+"
_USERINFO = r"[A-Za-z0-9._~!$&'()*+,;=%:-]*@"
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[0-5][0-9]{4}|[0-9]{1,4})"
_URL_REST = f"[/?#][^{CONTROL_CHARS}{_SPACE}]*"
HTTP_URL = TextGrammar(
    f"[Hh][Tt][Tt][Pp][Ss]?://(?:{_USERINFO})?(?:{_REG_NAME}|\\[{_IPV6}\\])(?::{_PORT})?(?:{_URL_REST})?",
    2048, "Enter a valid http or https URL.", min_length=1,
    description="an http or https URL with a host (the scheme is case-insensitive)")
# An engine's base_url: the same without user information (CONTRACT section 16): credentials go in
# the write-only username and api_token, never in a URL every reader of the record sees.
SERVER_URL = TextGrammar(
    f"[Hh][Tt][Tt][Pp][Ss]?://(?:{_REG_NAME}|\\[{_IPV6}\\])(?::{_PORT})?(?:{_URL_REST})?",
    2048, "Enter a valid http or https URL.", min_length=1,
    description="an http or https URL with a host and no user information (no user:password@)")
USERINFO_MESSAGE = ("User information (user:password@) is not allowed in this URL: give credentials in "
                    "username and api_token.")

# Docker's reference grammar (distribution/reference): path components of lower-case letters and
# digits joined by '.', '_', '__' or dashes, separated by '/'. No registry host: the image is
# built locally. Neither '..' nor a leading '/' can match, so no path can leave nfs_root.
_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# One component; a registry namespace (core/push_address.py) is made of these too.
REPOSITORY_COMPONENT = re.compile(_COMPONENT)
IMAGE_NAME = TextGrammar(f"{_COMPONENT}(?:/{_COMPONENT})*", 255,
                         "Enter a valid Docker repository name: lower-case letters and digits, separated by "
                         "'.', '_', '__', '-' or '/' (at most 255 characters).", min_length=1)
IMAGE_TAG = TextGrammar("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", 128,
                        "Enter a valid Docker tag: up to 128 letters, digits, '_', '.' and '-', "
                        "not starting with '.' or '-'.", min_length=1)
# `git check-ref-format --allow-onelevel` (refs.c) and no leading '-'; a 7-40 digit hex commit id
# is such a name too. validation.GitRef checks with it and explains refusals, when a build is
# submitted and again before git runs (builds/workspace/refs.py); tests/builders/test_workspace.py
# holds it to git itself.
# (`[^\x00]*` rather than `.*`: ECMA's `.` stops at U+2028, Python's does not; NUL never matches.)
_REF_CHAR = r"[^\x00-\x20\x7f~^:?\[\\*/]"
_ANY = r"[^\x00]*"
GIT_REF = TextGrammar(
    rf"(?!-)(?!@$)(?!{_ANY}\.\.)(?!{_ANY}@\{{)(?!{_ANY}\.$)(?!{_ANY}\.lock(?:/|$))(?!\.)(?!{_ANY}/\.)"
    f"{_REF_CHAR}+(?:/{_REF_CHAR}+)*",
    255, "Not a valid git ref or commit id.", min_length=1,
    description="a branch, tag or other ref name git accepts, or a 7-40 digit commit id; no revision "
                "expressions (~, ^, @{, .., :)")
MAX_GROUPS = 100  # further groups an image may be shared with
# X-Request-Id (CONTRACT section 10): a client's own id is echoed when it is 1-128 of these
# characters (no space, comma, quote or control: safe in a header, a log line and a JSON field);
# anything else is replaced by a new id (http/request_id.py), never refused.
REQUEST_ID = TextGrammar("[A-Za-z0-9._~:/+=@-]+", 128, "Not a safe request id.", min_length=1,
                         description="the client's X-Request-Id if it was 1-128 characters of "
                                     "A-Z a-z 0-9 . _ ~ : / + = @ -, else a new id (32 hex digits)")

# --------------------------------------------------------------------------- record shapes


@dataclass(frozen=True)
class Shape:
    """The keys of a record as a client receives it, in the order they are sent, with each
    value's schema. ``sources`` names the stored body key each wire key is read from."""

    fields: tuple[tuple[str, Schema], ...]
    sources: tuple[tuple[str, str], ...]  # (wire key, body key)

    @classmethod
    def of(cls, fields: dict[str, Schema]) -> "Shape":
        return cls(tuple(fields.items()), tuple((k, k) for k in fields))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.fields)

    def schema(self) -> Schema:
        return {"type": "object", "properties": dict(self.fields), "required": list(self.keys),
                "additionalProperties": False}

    def renamed(self, names: dict[str, str], insert: Optional[tuple[str, str, Schema]] = None) -> "Shape":
        """The same record under other key names; ``insert`` = (after key, new key, schema)."""
        fields: list[tuple[str, Schema]] = []
        sources: list[tuple[str, str]] = []
        for (key, schema), (_, source) in zip(self.fields, self.sources):
            fields.append((names.get(key, key), schema))
            sources.append((names.get(key, key), source))
            if insert is not None and key == insert[0]:
                fields.append((insert[1], insert[2]))
                sources.append((insert[1], insert[1]))
        return Shape(tuple(fields), tuple(sources))


CONFIG_STATE = enum_schema(ConfigurationState)
OPER_STATE = enum_schema(OperationalState)

HARNESS = Shape.of({
    "id": UUID, "name": STRING, "harness": enum_schema(HarnessType), "path": STRING, "supporting_path": STRING,
    "configuration_state": CONFIG_STATE, "operational_state": OPER_STATE, "site": STRING, "bldg": STRING,
    "created_by": STRING, "date_created": TIME, "date_modified": TIME, "deleted": BOOLEAN,
})
# Engine credentials are write-only: stored, never among the keys of a record a client receives.
CREDENTIALS = ("username", "api_token")
ENGINE = Shape.of({
    "id": UUID, "name": STRING, "type": enum_schema(EngineType), "base_url": STRING,
    "configuration_state": CONFIG_STATE, "operational_state": OPER_STATE, "site": STRING, "bldg": STRING,
    "created_by": STRING, "date_created": TIME, "date_modified": TIME, "deleted": BOOLEAN,
})
# v1 names (CONTRACT section 7); v1 harnesses carry support_liveview after bldg, as XPRESSO's
# v1 example shows.
V1_NAMES = {"id": "uuid", "configuration_state": "config_state", "operational_state": "oper_state"}
HARNESS_V1 = HARNESS.renamed(V1_NAMES, insert=("bldg", "support_liveview", BOOLEAN))
ENGINE_V1 = ENGINE.renamed(V1_NAMES)

CATEGORIES = ("harnesses", "engines")  # of the name look-up
RESOURCE_META = Shape(
    fields=(("id", UUID), ("name", STRING), ("group", STRING),
            ("category", {"type": "string", "enum": list(CATEGORIES)}),
            ("owner", STRING), ("date_created", TIME), ("deleted", BOOLEAN)),
    sources=(("id", "id"), ("name", "name"), ("group", "group"), ("category", "category"),
             ("owner", "created_by"), ("date_created", "date_created"), ("deleted", "deleted")),
)
RESOURCE_META_V1 = RESOURCE_META.renamed({"id": "uuid"})

# CONTRACT section 4: exactly these keys, in this order.
IMAGE = Shape.of({
    "credentials": {"type": "null"}, "uuid": UUID, "name": STRING, "tag": STRING,
    "data": {"type": "string", "description": "a Python literal dict, as XPRESSO writes it"},
    "status": enum_schema(ImageStatus), "group": STRING, "git_ref": STRING, "date_created": TIME,
    "date_updated": TIME, "container_details": {"type": ["object", "null"]},
    "yaml_content": {"type": ["string", "null"]}, "worker_meta": {"type": ["object", "null"]},
    "size": INTEGER, "virtual_size": INTEGER, "image_id": STRING,
    "jobs": {"type": ["array", "null"], "items": STRING}, "manifests": {"type": ["array", "null"], "items": STRING},
    "push_url": {"type": ["string", "null"]}, "pin_version": {"type": ["boolean", "null"]},
    "is_nfs_storage": BOOLEAN, "nfs_path": STRING, "is_deleted": BOOLEAN,
    "is_polaris_image": {"type": "boolean", "const": True}, "base_ref": {"type": ["string", "null"]},
    "meta": {"type": ["object", "null"]}, "type": {"type": "string", "const": "genie"},
    "custom": {"type": "boolean", "const": True},
})
# What a client learns about a build's worker; the rest (boot id, pid namespace) serves take-over.
WORKER_KEYS = ("worker_id", "host", "pid", "claimed_at")

# --------------------------------------------------------------------------- operational state
# GET /api/v2/{harnesses,engines}/{id}/state (CONTRACT section 8): probes/state.describe makes it,
# render.probe_state puts it in this order; last_probe is what probes/service.py stores.

LAST_PROBE = Shape.of({
    "at": STRING, "ok": BOOLEAN, "latency_ms": {"type": "number", "minimum": 0}, "detail": STRING,
    "version": {"type": ["string", "null"]},
})
PROBE_STATE = Shape.of({
    "operational_state": OPER_STATE,
    "since": {"type": ["string", "null"], "description": "when the record entered this state"},
    "reason": {"type": ["string", "null"],
               "description": "why: the last probe that agrees with the state (e.g. `connection refused`, "
                              "`pyATS 24.3`), or why the record is not probed"},
    "last_probe": {"oneOf": [{"type": "null"}, LAST_PROBE.schema()]},
    "consecutive_failures": {"type": "integer", "minimum": 0},
    "consecutive_successes": {"type": "integer", "minimum": 0},
})

# --------------------------------------------------------------------------- history and webhooks
# (CONTRACT sections 8 and 9; journal/journal.py writes them, journal/webhooks.py validates)

EVENT_NAMES: tuple[str, ...] = (
    "harness.created", "harness.updated", "harness.deleted", "harness.state",
    "engine.created", "engine.updated", "engine.deleted", "engine.state",
    "image.submitted", "image.finished",
)
EVENT_PATTERNS: tuple[str, ...] = ("*", "harness.*", "engine.*", "image.*") + EVENT_NAMES
MAX_WEBHOOK_EVENTS = 32  # patterns in one webhook: more can only be repeats
WEBHOOK_SECRET = TextGrammar(f"{_TEXT_CHAR}*", 1024, "Control characters are not allowed.", min_length=16,
                             description="the HMAC-SHA256 key (write-only; at least 16 characters)")
WEBHOOK_URL = HTTP_URL
HISTORY_ENTRY = Shape.of({
    "at": TIME, "event": {"type": "string", "enum": ["created", "updated", "deleted", "state"]},
    "by": {"type": ["string", "null"], "description": "the user; null for the service's own probes"},
    "changes": {"type": "object", "additionalProperties": {"type": "array", "minItems": 2, "maxItems": 2},
                "description": "field -> [old, new]; credentials as \"***\""},
    "reason": {"type": ["string", "null"], "description": "the probe's reason (state events), else null"},
})
WEBHOOK = Shape.of({
    "id": UUID, "url": STRING, "events": {"type": "array", "items": {"type": "string", "enum": list(EVENT_PATTERNS)}},
    "active": BOOLEAN, "created_by": STRING, "date_created": TIME, "date_modified": TIME,
})
DELIVERY = Shape.of({
    "id": UUID, "event": {"type": "string", "enum": list(EVENT_NAMES)},
    "status": {"type": "string", "enum": ["pending", "delivered", "failed"]}, "attempts": INTEGER,
    "last_status_code": {"type": ["integer", "null"]}, "last_error": {"type": ["string", "null"]},
    "date_created": TIME, "date_delivered": nullable(TIME),
})
