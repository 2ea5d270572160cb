"""Tables for people (rich: sized to the terminal, plain text when output is not one)."""
from __future__ import annotations

import ast
import json
from typing import Any, Iterable, Optional, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

COLUMNS = {
    "harnesses": ("name", "harness", "configuration_state", "operational_state", "site", "bldg", "path", "id"),
    "engines": ("name", "type", "configuration_state", "operational_state", "site", "bldg", "base_url", "id"),
    "images": ("uuid", "name", "tag", "status", "git_ref", "group", "size", "pin_version", "date_created"),
    "history": ("at", "event", "by", "changes", "reason"),
    "tokens": ("jti", "name", "typ", "created", "expires", "last_used", "revoked"),
}
# Ids are never cut or wrapped: they are what a user pastes into the next command.
ID_COLUMNS = frozenset({"id", "uuid", "jti"})
# Columns given up first when the terminal is too narrow for all of them (never an id). History
# keeps all: its changes fold.
DROP_ORDER = {
    "harnesses": ("bldg", "site", "harness", "path", "configuration_state"),
    "engines": ("bldg", "site", "type", "base_url", "configuration_state"),
    "images": ("date_created", "group", "size", "pin_version", "git_ref", "tag"),
    "tokens": ("last_used", "created", "typ", "expires"),
}
HEADERS = {"configuration_state": "config", "operational_state": "state", "pin_version": "pinned",
           "date_created": "created"}
DELETED_MARK = " (deleted)"
STATUS_STYLE = {"successful": "green", "failed": "red", "cancelled": "yellow", "building": "cyan",
                "ONLINE": "green", "OFFLINE": "red", "UNKNOWN": "dim", "ENABLED": "green", "DISABLED": "dim",
                "MAINTENANCE": "yellow"}


def make_console(stderr: bool = False) -> Console:
    # highlight off: rich would colour numbers and UUIDs in names at random
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def changes_cell(changes: Optional[dict]) -> str:
    """A history entry's changes, `field: old -> new` each."""
    if not changes:
        return "-"
    def value(v: Any) -> str:
        return '""' if v == "" else cell(v)  # an emptied field, not a missing one

    return "; ".join(f"{field}: {value(pair[0])} -> {value(pair[1])}" if isinstance(pair, list) and len(pair) == 2
                     else f"{field}: {value(pair)}" for field, pair in changes.items())


def styled(value: Any) -> str:
    text = cell(value)
    style = STATUS_STYLE.get(text)
    return f"[{style}]{text}[/]" if style else text.replace("[", r"\[")


def deleted(record: dict[str, Any]) -> bool:
    return bool(record.get("deleted") or record.get("is_deleted"))


def pinned_cell(record: dict[str, Any]) -> str:
    """yes or no for an image whose tar retention may remove (a successful one not yet deleted:
    a null pin_version is "never pinned", so no); - where pinning keeps nothing."""
    if deleted(record) or record.get("status") != "successful":
        return "-"
    return "yes" if record.get("pin_version") else "no"


def text_of(record: dict[str, Any], column: str) -> str:
    """A table cell's plain text."""
    if column == "changes":
        return changes_cell(record.get(column))
    if column == "pin_version":
        return pinned_cell(record)
    text = cell(record.get(column))
    if column == "name" and deleted(record):
        text += DELETED_MARK
    return text


def _styled_cell(record: dict[str, Any], column: str) -> str:
    text = text_of(record, column)
    if column == "name" and deleted(record):
        return f"[dim]{escape(text)}[/]"
    if column in ("changes", "pin_version"):
        return escape(text)
    return styled(record.get(column))


def table(console: Console, kind: str, records: Sequence[dict[str, Any]], total: Optional[str] = None) -> None:
    columns = fitting(kind, records, console.width)
    t = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    for name in columns:
        if name in ID_COLUMNS:  # never cut, never wrapped: the other columns give way
            width = max([len(HEADERS.get(name, name))] + [len(cell(r.get(name))) for r in records])
            t.add_column(HEADERS.get(name, name), no_wrap=True, min_width=width, overflow="ignore")
        else:  # paths and names fold rather than lose their ends
            t.add_column(HEADERS.get(name, name), overflow="fold",
                         no_wrap=name in ("status", "operational_state", "configuration_state", "event"))
    for record in records:
        t.add_row(*[_styled_cell(record, c) for c in columns])
    console.print(t)
    if total is not None and total.isdigit() and int(total) > len(records):
        console.print(f"({len(records)} of {total})", style="dim")
    elif not records:
        console.print("(none)", style="dim")


def fitting(kind: str, records: Sequence[dict[str, Any]], width: int) -> list[str]:
    """The kind's columns that fit ``width`` at their natural widths, dropping the least useful
    first; what still does not fit is folded by rich."""
    columns = list(COLUMNS[kind])

    def natural(c: str) -> int:
        return max([len(HEADERS.get(c, c))] + [len(text_of(r, c)) for r in records]) + 2

    widths = {c: natural(c) for c in columns}
    for c in DROP_ORDER.get(kind, ()):
        if sum(widths[k] for k in columns) <= width:
            break
        columns.remove(c)
    return columns


def as_json(value: Any) -> Optional[str]:
    """A structured value as JSON for people: dicts (and an image's ``data``, a string holding a
    Python literal dict as XPRESSO writes it) indented; None for anything else."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    if isinstance(value, dict) and value:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return None


def record(console: Console, data: dict[str, Any], skip: Iterable[str] = ()) -> None:
    """One record as field / value rows (a deleted one says so; structured values as JSON)."""
    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    for key, value in data.items():
        if key in skip:
            continue
        structured = as_json(value)
        if key == "pin_version" and "status" in data:
            t.add_row(key, pinned_cell(data))
        elif structured is not None:
            t.add_row(key, escape(structured))
        elif key == "name" and deleted(data):
            t.add_row(key, f"[bold red]{escape(text_of(data, key))}[/]")
        else:
            t.add_row(key, styled(value))
    console.print(t)
