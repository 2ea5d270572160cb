"""Moving everything between storage backends: export to one YAML file, import from it.

The file holds the storage documents themselves (index columns and body), so ids, timestamps,
issued and revoked tokens, deleted records and image bookkeeping all move unchanged. Build logs
are chunk documents in storage (``build_log.py``), or files under ``images.logs_root`` for logs
of earlier versions: the export carries each image's whole log under ``logs`` (text, or
``!!binary`` when it is not UTF-8), not its chunks, and the import stores each log as chunks in
the same transaction as the records. The token secret is not in the file (see README).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..builds.files import ImagePaths
from ..builds.log import BuildLogStore
from ..core.errors import BadRequest
from ..core.models import RECORD_TYPES, Image
from ..core.timeutil import Clock, format_time
from ..core.words import count
from ..journal.journal import JOURNAL_KINDS
from ..runtime.fsutil import atomic_write
from ..storage import Doc, StorageBackend

FORMAT = "xpresso-env-export"
FORMAT_VERSION = 1
KINDS: tuple[str, ...] = tuple(RECORD_TYPES)  # groups and users first: records refer to them
# History, webhooks (with their secrets: the export is as sensitive as the store) and pending
# deliveries move too, so an imported store goes on delivering what was queued.
KINDS += JOURNAL_KINDS

# How the report counts a kind whose storage name is not the noun a person reads.
KIND_WORDS: dict[str, tuple[str, ...]] = {
    "audit": ("audit entry", "audit entries"), "history": ("history entry", "history entries"),
    "login_failures": ("failed sign-in record", "failed sign-in records"),
    "webhook_queue": ("queued webhook event", "queued webhook events"),
    "outbox": ("outbox entry", "outbox entries")}

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class TransferReport:
    counts: dict[str, int]
    logs: int = 0  # build logs carried

    def __str__(self) -> str:
        return ", ".join([*(count(n, *KIND_WORDS.get(kind, (kind,))) for kind, n in self.counts.items()),
                          count(self.logs, "build log")])


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


def _read_log(logs: BuildLogStore, image_id: str) -> str | bytes | None:
    if not logs.exists(image_id):
        return None
    raw = logs.read_from(image_id, 0)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw  # written as !!binary


def export_data(storage: StorageBackend, clock: Clock, paths: ImagePaths) -> dict[str, Any]:
    with storage.read() as tx:  # one snapshot
        kinds = {kind: [_doc_out(d) for d in tx.query(kind)] for kind in KINDS}
    logs = {}
    store = BuildLogStore(storage, paths.logs_root, clock)
    for item in kinds[Image.KIND]:
        text = _read_log(store, item["id"])
        if text is not None:
            logs[item["id"]] = text
    return {"format": FORMAT, "version": FORMAT_VERSION, "exported_at": format_time(clock()),
            "source": storage.name, "kinds": kinds, "logs": logs}


def export_file(storage: StorageBackend, path: str | Path, clock: Clock, paths: ImagePaths) -> TransferReport:
    data = export_data(storage, clock, paths)
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    path = Path(path)
    try:
        # 0600: the file holds engine credentials.
        atomic_write(path, text.encode("utf-8"), mode=0o600)
    except FileNotFoundError:
        raise BadRequest(f"cannot write {path}: the folder {path.parent} does not exist") from None
    except OSError as exc:
        raise BadRequest(f"cannot write {path}: {exc.strerror}") from None
    return TransferReport({k: len(v) for k, v in data["kinds"].items()}, logs=len(data["logs"]))


def _logs_in(data: dict[str, Any], kinds: dict[str, Any]) -> dict[str, bytes]:
    """The ``logs`` section, checked: each key an image of this export (a UUID, so the file name
    it becomes stays inside images.logs_root)."""
    logs = data.get("logs") or {}
    if not isinstance(logs, dict):
        raise BadRequest("logs must map image ids to log text")
    images = {item.get("id") for item in kinds.get(Image.KIND) or [] if isinstance(item, dict)}
    out = {}
    for image_id, text in logs.items():
        try:
            canonical = str(uuid.UUID(str(image_id)))
        except ValueError:
            canonical = None
        if canonical != image_id or image_id not in images:
            raise BadRequest(f"logs.{image_id}: not the id of an image in this export")
        if not isinstance(text, (str, bytes)):
            raise BadRequest(f"logs.{image_id}: expected the log text")
        out[image_id] = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return out


def import_data(storage: StorageBackend, data: Any, paths: ImagePaths) -> TransferReport:
    """Insert (or replace, by id) every document, and each build log as chunks, in one
    transaction: all or nothing."""
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
    logs = _logs_in(data, kinds)
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
        store = BuildLogStore(storage, paths.logs_root)
        for image_id, raw in logs.items():
            image = tx.get(Image.KIND, image_id)
            store.replace_log(tx, image_id, image.group if image is not None else None, raw)
    return TransferReport(counts, logs=len(logs))


def import_file(storage: StorageBackend, path: str | Path, paths: ImagePaths) -> TransferReport:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_Loader)
    except OSError as exc:
        raise BadRequest(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise BadRequest(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return import_data(storage, data, paths)
