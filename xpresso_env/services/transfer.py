"""Moving everything between storage backends: export to one YAML file, import from it.

The file holds the storage documents themselves (index columns and body), so ids, timestamps,
token revocations, deleted records and image bookkeeping all move unchanged.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import BadRequest
from ..models import RECORD_TYPES
from ..storage import Doc, StorageBackend
from ..timeutil import Clock, format_time

FORMAT = "xpresso-env-export"
FORMAT_VERSION = 1
KINDS: tuple[str, ...] = tuple(RECORD_TYPES)  # groups and users first: records refer to them

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class TransferReport:
    counts: dict[str, int]

    def __str__(self) -> str:
        return ", ".join(f"{n} {kind}(s)" for kind, n in self.counts.items())


def _doc_out(doc: Doc) -> dict[str, Any]:
    return {"id": doc.id, "group": doc.group, "name": doc.name, "deleted": doc.deleted, "created": doc.created,
            "visible": list(doc.visible), "body": doc.body}


def _doc_in(kind: str, item: Any, where: str) -> Doc:
    if not isinstance(item, dict) or not isinstance(item.get("body"), dict) or not isinstance(item.get("id"), str):
        raise BadRequest(f"{where}: expected a document with id and body")
    try:
        return Doc(kind=kind, id=item["id"], group=item.get("group"), name=item.get("name"),
                   deleted=bool(item.get("deleted", False)), created=str(item["created"]), body=item["body"],
                   visible=tuple(item.get("visible") or ()))
    except KeyError as exc:
        raise BadRequest(f"{where}: missing {exc.args[0]}") from None


def export_data(storage: StorageBackend, clock: Clock) -> dict[str, Any]:
    with storage.read() as tx:  # one snapshot
        kinds = {kind: [_doc_out(d) for d in tx.query(kind)] for kind in KINDS}
    return {"format": FORMAT, "version": FORMAT_VERSION, "exported_at": format_time(clock()),
            "source": storage.name, "kinds": kinds}


def export_file(storage: StorageBackend, path: str | Path, clock: Clock) -> TransferReport:
    data = export_data(storage, clock)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.dump(data, fh, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return TransferReport({k: len(v) for k, v in data["kinds"].items()})


def import_data(storage: StorageBackend, data: Any) -> TransferReport:
    """Insert (or replace, by id) every document, in one transaction: all or nothing."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadRequest(f"not an xpresso-env export (expected format: {FORMAT})")
    if data.get("version") != FORMAT_VERSION:
        raise BadRequest(f"unsupported export version {data.get('version')!r}")
    kinds = data.get("kinds")
    if not isinstance(kinds, dict):
        raise BadRequest("the export has no kinds")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise BadRequest(f"unknown kind(s) in the export: {', '.join(sorted(map(str, unknown)))}")
    counts = {}
    with storage.write() as tx:
        for kind in KINDS:
            items = kinds.get(kind) or []
            if not isinstance(items, list):
                raise BadRequest(f"kinds.{kind} must be a list")
            for i, item in enumerate(items):
                doc = _doc_in(kind, item, f"kinds.{kind}[{i}]")
                if tx.get(kind, doc.id) is None:
                    tx.insert(doc)
                else:
                    tx.update(doc)
            counts[kind] = len(items)
    return TransferReport(counts)


def import_file(storage: StorageBackend, path: str | Path) -> TransferReport:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_Loader)
    except OSError as exc:
        raise BadRequest(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise BadRequest(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return import_data(storage, data)
