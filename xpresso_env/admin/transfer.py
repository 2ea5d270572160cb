"""Moving everything between storage backends: export to one YAML file, import from it.

The file holds the storage documents themselves (index columns and body), so ids, timestamps,
issued and revoked tokens, deleted records and image bookkeeping all move unchanged. Build logs
are chunk documents in storage (``build_log.py``), or files under ``images.logs_root`` for logs
of earlier versions: the export carries each image's whole log under ``logs`` (text, or
``!!binary`` when it is not UTF-8), not its chunks, and the import stores each log as chunks in
the same transaction as the records. The token secret is not in the file (see README).

Both directions stream (CONTRACT §16): ``export`` reads each kind in pages (``Tx.scan``) inside
one read transaction and writes each document as it comes (one line each), ``import`` reads the
file a line at a time, or for any other YAML layout (earlier versions) an item at a time
(``yaml_stream.py``), and writes it in one write transaction; memory stays flat whatever the
store's size (one build log is held at a time). The operational rows (webhook deliveries, their
outbox and queues) are left out unless asked for: they are the bulk of a busy store and mean
nothing without the process that delivers them. Probe state (claims included) is never exported.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from yaml import events

from ..builds.files import ImagePaths
from ..builds.log import BuildLogStore
from ..core.errors import BadRequest
from ..core.models import RECORD_TYPES, Engine, Image
from ..core.timeutil import Clock, format_time
from ..core.validation import FieldError, ServerUrl
from ..core.words import count
from ..journal.journal import (
    DELIVERY_KIND,
    EVENT_KIND,
    JOURNAL_KINDS,
    OUTBOX_KIND,
    QUEUE_KIND,
    SUBSCRIPTIONS_KIND,
    WEBHOOK_KIND,
    refresh_subscriptions,
)
from ..runtime.fsutil import discard, publish, temp_beside
from ..storage import Doc, StorageBackend, Tx
from . import yaml_stream

FORMAT = "xpresso-env-export"
FORMAT_VERSION = 1
KINDS: tuple[str, ...] = tuple(RECORD_TYPES)  # groups and users first: records refer to them
# History and webhooks (with their secrets: the export is as sensitive as the store) move too.
# A group's subscriptions document is derived from its webhooks: not exported, rebuilt by import.
KINDS += tuple(k for k in JOURNAL_KINDS if k != SUBSCRIPTIONS_KIND)
# Webhook deliveries, the outbox entries still to deliver, each webhook's queue of them and the
# events not yet fanned out: only with `export --with-deliveries`. Without them an imported webhook
# starts with an empty queue.
DELIVERY_KINDS: tuple[str, ...] = (QUEUE_KIND, DELIVERY_KIND, OUTBOX_KIND, EVENT_KIND)
PAGE = 500  # documents read per statement

# How the report counts a kind whose storage name is not the noun a person reads.
KIND_WORDS: dict[str, tuple[str, ...]] = {
    "audit": ("audit entry", "audit entries"), "history": ("history entry", "history entries"),
    "login_failures": ("failed sign-in record", "failed sign-in records"),
    "webhook_queue": ("queued webhook event", "queued webhook events"),
    "outbox": ("outbox entry", "outbox entries"), "event": ("webhook event to fan out", "webhook events to fan out")}


@dataclass(frozen=True)
class TransferReport:
    counts: dict[str, int]
    logs: int = 0  # build logs carried
    left_out: tuple[str, ...] = ()  # kinds not exported (see DELIVERY_KINDS)

    def __str__(self) -> str:
        text = ", ".join([*(count(n, *KIND_WORDS.get(kind, (kind,))) for kind, n in self.counts.items()),
                          count(self.logs, "build log")])
        if self.left_out:
            text += f" (left out: {', '.join(self.left_out)}; --with-deliveries exports them)"
        return text


def _doc_out(doc: Doc) -> dict[str, Any]:
    return {"id": doc.id, "group": doc.group, "name": doc.name, "deleted": doc.deleted, "created": doc.created,
            "visible": list(doc.visible), "body": doc.body}


def _doc_in(kind: str, item: Any, where: str) -> Doc:
    if not isinstance(item, dict) or not isinstance(item.get("body"), dict) or not isinstance(item.get("id"), str):
        raise BadRequest(f"{where}: expected a document with id and body")
    if kind == Engine.KIND:  # credentials never in a URL (CONTRACT section 16), whatever the store held
        try:
            ServerUrl()(item["body"].get("base_url"))
        except FieldError as exc:
            raise BadRequest(f"{where}: base_url: {exc.message}") from None
    try:
        return Doc(kind=kind, id=item["id"], group=item.get("group"), name=item.get("name"),
                   deleted=bool(item.get("deleted", False)), created=str(item["created"]), body=item["body"],
                   visible=tuple(item.get("visible") or ()))
    except KeyError as exc:
        raise BadRequest(f"{where}: missing {exc.args[0]}") from None


def export_kinds(with_deliveries: bool) -> tuple[str, ...]:
    return KINDS if with_deliveries else tuple(k for k in KINDS if k not in DELIVERY_KINDS)


def write_export(storage: StorageBackend, tx: Tx, out: IO[str], clock: Clock, paths: ImagePaths,
                 with_deliveries: bool = False) -> TransferReport:
    """Write the export of ``tx``'s snapshot to ``out``, a document at a time."""
    kinds = export_kinds(with_deliveries)
    out.write(yaml_stream.header({"format": FORMAT, "version": FORMAT_VERSION,
                                  "exported_at": format_time(clock()), "source": storage.name}))
    out.write("kinds:\n")
    counts = {}
    for kind in kinds:
        n = 0
        for doc in tx.scan(kind, page=PAGE):
            if not n:
                out.write(f"  {kind}:\n")
            out.write(yaml_stream.item(_doc_out(doc)))
            n += 1
        if not n:
            out.write(f"  {kind}: []\n")
        counts[kind] = n
    logs = 0
    store = BuildLogStore(storage, paths.logs_root, clock)
    for image in tx.scan(Image.KIND, page=PAGE):
        raw = store.read_in(tx, image.id)
        if raw is None:
            continue
        out.write("logs:\n" if not logs else "")
        try:
            text: str | bytes = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw  # written as !!binary
        out.write(yaml_stream.entry(image.id, text))
        logs += 1
    if not logs:
        out.write("logs: {}\n")
    return TransferReport(counts, logs=logs, left_out=tuple(k for k in KINDS if k not in kinds))


def export_file(storage: StorageBackend, path: str | Path, clock: Clock, paths: ImagePaths,
                with_deliveries: bool = False) -> TransferReport:
    """Write the export to ``path`` as it is read: a temp file beside it (0600: it holds engine
    credentials), renamed over ``path`` once complete."""
    path = Path(path)
    if not path.parent.is_dir():
        raise BadRequest(f"cannot write {path}: the folder {path.parent} does not exist")
    tmp = temp_beside(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="utf-8", buffering=1 << 20) as out, storage.read() as tx:  # one snapshot
            report = write_export(storage, tx, out, clock, paths, with_deliveries)
        publish(tmp, path)
    except OSError as exc:
        discard(tmp)
        raise BadRequest(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        discard(tmp)
        raise
    return report


def _log_in(image_id: Any, text: Any, images: set[str]) -> bytes:
    """One entry of ``logs``, checked: its key an image of this export (a UUID, so the file name
    it becomes stays inside images.logs_root)."""
    try:
        canonical = str(uuid.UUID(str(image_id)))
    except ValueError:
        canonical = None
    if canonical != image_id or image_id not in images:
        raise BadRequest(f"logs.{image_id}: not the id of an image in this export")
    if not isinstance(text, (str, bytes)):
        raise BadRequest(f"logs.{image_id}: expected the log text")
    return text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text


class _Import:
    """One import: the file's items written as they are read, in the caller's write transaction."""

    def __init__(self, storage: StorageBackend, tx: Tx, paths: ImagePaths):
        self.tx = tx
        self.logs = BuildLogStore(storage, paths.logs_root)
        self.counts = {kind: 0 for kind in KINDS}
        self.images: set[str] = set()  # ids of the images imported: the logs must name one of them
        self.n_logs = 0
        self.fields: dict[str, Any] = {}
        self.webhook_groups: dict[str, str] = {}  # group -> a created time, for its subscriptions

    def field(self, key: Any, value: Any) -> None:
        self.fields[key] = value
        if key == "format" and value != FORMAT:
            raise BadRequest(f"not an xpresso-env export (expected format: {FORMAT})")
        if key == "version" and value != FORMAT_VERSION:
            raise BadRequest(f"unsupported export version {value!r}")

    def require_header(self) -> None:
        """Before the first record: the file says what it is (``version`` may follow: a file
        written with sorted keys has it last; it is checked when read)."""
        if self.fields.get("format") != FORMAT:
            raise BadRequest(f"not an xpresso-env export (expected format: {FORMAT})")

    def section(self, name: str) -> None:
        """``kinds`` or ``logs`` starts."""
        self.require_header()
        if name == "kinds":
            self.fields[name] = True

    def kind(self, name: Any) -> None:
        if name not in self.counts:
            raise BadRequest(f"unknown kind(s) in the export: {name}")

    def document(self, kind: str, i: int, item: Any) -> None:
        doc = _doc_in(kind, item, f"kinds.{kind}[{i}]")
        if self.tx.get(kind, doc.id) is None:
            self.tx.insert(doc)
        else:
            self.tx.update(doc)
        if kind == Image.KIND:
            self.images.add(doc.id)
        elif kind == WEBHOOK_KIND and doc.group:
            self.webhook_groups[str(doc.group)] = doc.created
        self.counts[kind] += 1

    def log(self, image_id: Any, text: Any) -> None:
        raw = _log_in(image_id, text, self.images)
        image = self.tx.get(Image.KIND, image_id)
        self.logs.replace_log(self.tx, image_id, image.group if image is not None else None, raw)
        self.n_logs += 1

    def finish(self) -> TransferReport:
        if "format" not in self.fields:
            raise BadRequest(f"not an xpresso-env export (expected format: {FORMAT})")
        if "version" not in self.fields:
            raise BadRequest("unsupported export version None")
        if "kinds" not in self.fields:
            raise BadRequest("the export has no kinds")
        for group, created in sorted(self.webhook_groups.items()):
            refresh_subscriptions(self.tx, group, created)  # what a write fans out to (journal.py)
        return TransferReport(self.counts, logs=self.n_logs)


def _read_into(stream: yaml_stream.YamlStream, into: _Import) -> None:
    """The file's one document, a mapping: each record and each log handed over as it is read."""
    stream.take(events.StreamStartEvent)
    if stream.at(events.StreamEndEvent):
        raise BadRequest(f"not an xpresso-env export (expected format: {FORMAT})")
    stream.take(events.DocumentStartEvent)
    if not stream.at(events.MappingStartEvent):
        raise BadRequest(f"not an xpresso-env export (expected format: {FORMAT})")
    for key in stream.mapping():
        if key == "kinds" and stream.at(events.MappingStartEvent):
            into.section(key)
            for kind in stream.mapping():
                into.kind(kind)
                if not stream.at(events.SequenceStartEvent):
                    if stream.value() is not None:
                        raise BadRequest(f"kinds.{kind} must be a list")
                    continue
                for i, item in enumerate(stream.sequence()):
                    into.document(kind, i, item)
        elif key == "kinds":
            if stream.value() is not None:
                raise BadRequest("the export has no kinds")
        elif key == "logs" and stream.at(events.MappingStartEvent):
            into.section(key)
            for image_id in stream.mapping():
                into.log(image_id, stream.value())
        elif key == "logs":
            if stream.value() is not None:
                raise BadRequest("logs must map image ids to log text")
        else:
            into.field(key, stream.value())
    stream.take(events.DocumentEndEvent)
    if not stream.at(events.StreamEndEvent):
        raise BadRequest("expected a single document in the export, found more")


def read_yaml(fh: IO[str], into: _Import) -> None:
    """Any YAML layout of the export (earlier versions' block style, hand edits), event by event."""
    stream = yaml_stream.YamlStream(fh)
    try:
        _read_into(stream, into)
    finally:
        stream.close()


def import_stream(storage: StorageBackend, fh: IO[str], paths: ImagePaths,
                  read: Callable[[IO[str], Any], None] = read_yaml) -> TransferReport:
    """Insert (or replace, by id) every document, and each build log as chunks, as ``read``
    reads the file, in one write transaction: all or nothing."""
    with storage.write() as tx:
        into = _Import(storage, tx, paths)
        read(fh, into)
        return into.finish()


def import_file(storage: StorageBackend, path: str | Path, paths: ImagePaths) -> TransferReport:
    try:
        with open(path, encoding="utf-8") as fh:
            try:  # the layout export writes, line by line; anything else (rolled back) as YAML
                return import_stream(storage, fh, paths, yaml_stream.read_lines)
            except yaml_stream.NotLines:
                fh.seek(0)
                return import_stream(storage, fh, paths, read_yaml)
    except OSError as exc:
        raise BadRequest(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except yaml.YAMLError as exc:
        raise BadRequest(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
