"""Tables for people (rich: sized to the terminal, plain text when output is not one)."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from rich.console import Console
from rich.table import Table

COLUMNS = {
    "harnesses": ("name", "harness", "configuration_state", "operational_state", "site", "bldg", "path", "id"),
    "engines": ("name", "type", "configuration_state", "operational_state", "site", "bldg", "base_url", "id"),
    "images": ("uuid", "name", "tag", "status", "git_ref", "group", "size", "pin_version", "date_created"),
    "history": ("at", "event", "by", "changes", "reason"),
}
# Columns given up first when the terminal is too narrow for all of them (ids never are: they are
# what a user pastes into the next command). History keeps all: its changes fold.
DROP_ORDER = {
    "harnesses": ("bldg", "site", "harness", "path", "configuration_state"),
    "engines": ("bldg", "site", "type", "base_url", "configuration_state"),
    "images": ("date_created", "group", "size", "pin_version", "git_ref", "tag"),
}
HEADERS = {"configuration_state": "config", "operational_state": "state", "pin_version": "pinned",
           "date_created": "created"}
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


def table(console: Console, kind: str, records: Sequence[dict[str, Any]], total: Optional[str] = None) -> None:
    columns = fitting(kind, records, console.width)
    t = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    for name in columns:
        # ids and paths fold rather than lose their ends: a shortened id cannot be pasted back
        t.add_column(HEADERS.get(name, name), overflow="fold",
                     no_wrap=name in ("status", "operational_state", "configuration_state", "event"))
    for record in records:
        t.add_row(*[changes_cell(record.get(c)) if c == "changes" else styled(record.get(c)) for c in columns])
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
        texts = [changes_cell(r.get(c)) if c == "changes" else cell(r.get(c)) for r in records]
        return max([len(HEADERS.get(c, c))] + [len(t) for t in texts]) + 2

    widths = {c: natural(c) for c in columns}
    for c in DROP_ORDER.get(kind, ()):
        if sum(widths[k] for k in columns) <= width:
            break
        columns.remove(c)
    return columns


def record(console: Console, data: dict[str, Any], skip: Iterable[str] = ()) -> None:
    """One record as field / value rows."""
    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    for key, value in data.items():
        if key in skip:
            continue
        if key == "last_probe" and isinstance(value, dict):
            value = cell(value)
        t.add_row(key, styled(value))
    console.print(t)
