"""Build logs, kept in storage so every process reads and follows them, wherever the build runs.

A log is a chain of chunk documents of kind ``build_log``: id ``<image id>:<seq:08d>``, owned by
the image's group, body ``{"image", "seq", "offset", "size", "text"}``. ``offset`` is the byte
offset (of the UTF-8 text) where the chunk starts, ``size`` its length in bytes, so the byte
offsets of ``GET .../logs?offset=N`` stay what they were when logs were files.

Rules that keep offsets stable while several processes append (the worker that builds, a server
that queues or cancels, a worker that takes a build over):

* Only the LAST chunk grows, and only while it holds less than ``CHUNK_BYTES``; then the next one
  starts at ``offset + size`` of the last. Bytes once written never change or move.
* An append runs in one write transaction: it finds the last chunk, locks it
  (``get(lock=True)``: SQLite's write lock, PostgreSQL's ``FOR UPDATE``, the YAML file lock),
  checks no chunk follows it yet, then grows it or inserts the next. Two appenders serialise on
  that lock; two racing to insert the same new chunk meet ``AlreadyExists`` and one retries.
* Readers use point look-ups only (``tx.get``): the chunk holding an offset is found by a
  galloping then binary search over ``seq``; a follower remembers its chunk and polls it and the
  next one. No query over a group's chunks runs on any read path.

The build's own writer (:class:`BuildLog`) buffers lines and appends them every ``flush_s``
(0.5 s) or ``CHUNK_BYTES``, and at the end, so a follower sees a line about half a second after
the build wrote it, in every process. A follower waits between looks on its image's event in
``waits`` (``runtime/notices.py``): an append in this process wakes it, and so does one in another
process on a storage with change notices (each append announces ``BUILD_LOG`` with its commit);
otherwise it looks every ``poll_s``.

Logs written by earlier versions as files (``<images.logs_root>/<image id>.log``) are still read
when an image has no chunk yet; the first append to such an image copies the file into chunks
first (the file itself is left alone), so nothing is lost and offsets keep their meaning.

A log lives as long as its image is live; the retention sweep purges the log of a deleted image
once its retention has passed since the deletion (``retention.py``; :meth:`BuildLogStore.purge`).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..core.errors import AlreadyExists, XpressoError
from ..core.timeutil import Clock, format_time, utcnow
from ..runtime.notices import KeyedWaits
from ..storage import BUILD_LOG, Doc, StorageBackend, Tx, announce

log = logging.getLogger("xpresso_env.images")

KIND = "build_log"
CHUNK_BYTES = 65536  # a chunk grows up to this size (one append may take it a little past it)
READ_BYTES = 65536  # what a follower sends at most per step
FLUSH_S = 0.5
APPEND_TRIES = 5


def chunk_id(image_id: str, seq: int) -> str:
    return f"{image_id}:{seq:08d}"


def _clean(text: str) -> str:
    """The text as it will read back: a lone surrogate (from a badly decoded process output)
    becomes '?', so the stored string is valid UTF-8 and its byte size is what readers count."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def format_lines(stamp: str, text: str) -> str:
    # A message spanning lines gets one stamp per line: the log stays line-oriented.
    lines = _clean(str(text)).replace("\r\n", "\n").split("\n")
    return "".join(f"{stamp} {line}\n" for line in lines)


class BuildLogStore:
    """Appends to, reads and follows build logs kept in storage.

    :param legacy_root: ``images.logs_root``, where logs of earlier versions lie as files.
    :param waits: the followers of this process, woken when a log grows (here, or in another
        process on a storage with change notices); None where nobody follows (a CLI command).
    """

    def __init__(self, storage: StorageBackend, legacy_root: Optional[Path] = None, clock: Clock = utcnow,
                 waits: Optional[KeyedWaits] = None):
        self.storage = storage
        self.legacy_root = Path(legacy_root) if legacy_root is not None else None
        self.clock = clock
        self.waits = waits

    # -- documents ----------------------------------------------------------------------
    def _doc(self, image_id: str, group: Optional[str], seq: int, offset: int, text: str,
             created: Optional[str] = None) -> Doc:
        return Doc(kind=KIND, id=chunk_id(image_id, seq), group=group, name=None, deleted=False,
                   created=created or format_time(self.clock()),
                   body={"image": image_id, "seq": seq, "offset": offset, "size": len(text.encode("utf-8")),
                         "text": text})

    @staticmethod
    def _get(tx: Tx, image_id: str, seq: int, lock: bool = False) -> Optional[Doc]:
        return tx.get(KIND, chunk_id(image_id, seq), lock=lock) if seq >= 0 else None

    def _last(self, tx: Tx, image_id: str, hint: int = 0) -> Optional[Doc]:
        """The last chunk (None: the log has none), by point look-ups from ``hint``."""
        start = self._get(tx, image_id, hint) if hint > 0 else None
        if start is None:
            hint = 0
            start = self._get(tx, image_id, 0)
            if start is None:
                return None
        lo, lo_doc, step = hint, start, 1
        while True:  # gallop: lo exists, find a missing hi
            doc = self._get(tx, image_id, lo + step)
            if doc is None:
                break
            lo, lo_doc, step = lo + step, doc, step * 2
        hi = lo + step
        while hi - lo > 1:  # lo exists, hi does not; chunks have no gaps
            mid = (lo + hi) // 2
            doc = self._get(tx, image_id, mid)
            if doc is None:
                hi = mid
            else:
                lo, lo_doc = mid, doc
        return lo_doc

    def _locate(self, tx: Tx, image_id: str, offset: int, hint: Optional[Doc] = None) -> Optional[Doc]:
        """The chunk holding byte ``offset`` (the last chunk when ``offset`` is at or past the
        end); None when the log has no chunk."""
        current = self._get(tx, image_id, hint.body["seq"]) if hint is not None else None  # it may have grown
        if current is not None:
            start, size = current.body["offset"], current.body["size"]
            if start <= offset < start + size:
                return current
            if offset >= start + size:
                nxt = self._get(tx, image_id, current.body["seq"] + 1)
                if nxt is None:
                    return current
                if offset < nxt.body["offset"] + nxt.body["size"]:
                    return nxt
        last = self._last(tx, image_id, hint.body["seq"] if hint is not None else 0)
        if last is None or offset >= last.body["offset"]:
            return last
        lo, hi = 0, last.body["seq"]  # the largest seq whose chunk starts at or before offset
        lo_doc = None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            doc = self._get(tx, image_id, mid)
            if doc is not None and doc.body["offset"] <= offset:
                lo, lo_doc = mid, doc
            else:
                hi = mid - 1
        return lo_doc if lo_doc is not None else self._get(tx, image_id, lo)

    # -- legacy files -----------------------------------------------------------------------
    def legacy_path(self, image_id: str) -> Optional[Path]:
        return self.legacy_root / f"{image_id}.log" if self.legacy_root is not None else None

    def _legacy(self, image_id: str, offset: int = 0, limit: Optional[int] = None) -> bytes:
        path = self.legacy_path(image_id)
        if path is None:
            return b""
        try:
            with open(path, "rb") as fh:
                # Compared first: seek() refuses offsets past the file system's limit (EINVAL) or
                # past 2**63 (OverflowError), which a client may well send.
                if offset >= os.fstat(fh.fileno()).st_size:
                    return b""
                fh.seek(offset)
                return fh.read() if limit is None else fh.read(limit)
        except OSError:
            return b""

    # -- writing ------------------------------------------------------------------------------
    def append(self, image_id: str, group: Optional[str], text: str) -> None:
        """Append already formatted text (whole lines) to the log."""
        image_id = str(image_id)
        text = _clean(text)
        if not text:
            return
        for attempt in range(APPEND_TRIES):
            try:
                with self.storage.write() as tx:
                    self._append(tx, image_id, group, text)
                if self.waits is not None:
                    self.waits.wake(image_id)  # this process's followers; other processes' get the notice
                return
            except AlreadyExists:  # another process inserted the same new chunk first: retry after it
                if attempt == APPEND_TRIES - 1:
                    raise

    def _append(self, tx: Tx, image_id: str, group: Optional[str], text: str) -> None:
        announce(tx, BUILD_LOG, image_id)  # followers in other processes look when this commits
        last = self._last(tx, image_id)
        if last is None:
            # A log of an earlier version, kept as a file: its bytes become the first chunk(s).
            old = self._legacy(image_id).decode("utf-8", errors="replace")
            offset = 0
            for seq, piece in enumerate(_pieces(old)):
                doc = self._doc(image_id, group, seq, offset, piece)
                tx.insert(doc)
                offset += doc.body["size"]
                last = doc
            if last is None:
                tx.insert(self._doc(image_id, group, 0, 0, text))
                return
        while True:
            last = tx.get(KIND, last.id, lock=True)
            nxt = self._get(tx, image_id, last.body["seq"] + 1)
            if nxt is None:
                break
            last = self._last(tx, image_id, nxt.body["seq"])  # someone appended meanwhile
        body = last.body
        if body["size"] < CHUNK_BYTES:
            tx.update(self._doc(image_id, last.group, body["seq"], body["offset"], body["text"] + text,
                                created=last.created))
        else:
            tx.insert(self._doc(image_id, last.group if group is None else group, body["seq"] + 1,
                                body["offset"] + body["size"], text))

    def line(self, image_id: str, group: Optional[str], text: str) -> None:
        """One timestamped line, from code that holds no open BuildLog (submit, cancel, take-over).
        A line that cannot be stored is logged, never raised: the request or step that writes it
        has already done its work (the record is committed)."""
        try:
            self.append(image_id, group, format_lines(format_time(self.clock()), text))
        except XpressoError as exc:
            log.warning("build log of %s: cannot append %r: %s", image_id, text[:200], exc.detail)

    def line_in(self, tx: Tx, image_id: str, group: Optional[str], text: str) -> None:
        """One timestamped line in the caller's write transaction: the first line of a new image's
        log commits with the image, so no worker writes before it."""
        self._append(tx, str(image_id), group, _clean(format_lines(format_time(self.clock()), text)))

    def writer(self, image_id: str, group: Optional[str], flush_s: float = FLUSH_S) -> "BuildLog":
        return BuildLog(self, str(image_id), group, self.clock, flush_s)

    def replace_log(self, tx: Tx, image_id: str, group: Optional[str], raw: bytes) -> None:
        """Make the log exactly ``raw`` (export/import), in the caller's transaction. Chunks past
        the new end (a longer log stored before) are emptied; only the retention sweep purges
        chunks (:meth:`purge`)."""
        text = raw.decode("utf-8", errors="replace")
        offset, seq = 0, 0
        for seq, piece in enumerate(_pieces(text) or [""]):
            doc = self._doc(image_id, group, seq, offset, piece)
            (tx.insert if self._get(tx, image_id, seq) is None else tx.update)(doc)
            offset += doc.body["size"]
        while True:
            seq += 1
            if self._get(tx, image_id, seq) is None:
                return
            tx.update(self._doc(image_id, group, seq, offset, ""))

    def purge(self, tx: Tx, image_id: str) -> int:
        """Remove the log's chunks for good, in the caller's write transaction (the retention
        sweep, for images deleted past their retention). Chunks have no gaps, so point look-ups
        from seq 0 find them all. Returns how many there were."""
        seq = 0
        while tx.purge(KIND, chunk_id(str(image_id), seq)):
            seq += 1
        return seq

    # -- reading ------------------------------------------------------------------------------
    def _read(self, tx: Tx, image_id: str, offset: int, limit: Optional[int],
              hint: Optional[Doc] = None) -> tuple[bytes, Optional[Doc], bool]:
        """(bytes from ``offset``, the chunk where reading stopped, whether the log has chunks)."""
        doc = self._locate(tx, image_id, offset, hint)
        if doc is None:
            return b"", None, False
        out: list[bytes] = []
        total = 0
        while doc is not None and (limit is None or total < limit):
            data = doc.body["text"].encode("utf-8")
            start = max(0, offset - doc.body["offset"])
            if start < len(data):
                piece = data[start:] if limit is None else data[start:start + limit - total]
                out.append(piece)
                total += len(piece)
            if limit is not None and total >= limit:
                break
            nxt = self._get(tx, image_id, doc.body["seq"] + 1)
            if nxt is None:
                break
            doc = nxt
        return b"".join(out), doc, True

    def read_from(self, image_id: str, offset: int = 0, limit: Optional[int] = None) -> bytes:
        """Bytes of the log from ``offset`` (an offset at or past the end gives b"")."""
        image_id = str(image_id)
        with self.storage.read() as tx:
            data, _, stored = self._read(tx, image_id, offset, limit)
        return data if stored else self._legacy(image_id, offset, limit)

    def read_in(self, tx: Tx, image_id: str) -> Optional[bytes]:
        """The whole log read in the caller's transaction (export: the records' snapshot), or
        None when the image has none."""
        image_id = str(image_id)
        data, _, stored = self._read(tx, image_id, 0, None)
        if stored:
            return data
        path = self.legacy_path(image_id)
        return self._legacy(image_id) if path is not None and path.is_file() else None

    def exists(self, image_id: str) -> bool:
        with self.storage.read() as tx:
            if self._get(tx, str(image_id), 0) is not None:
                return True
        path = self.legacy_path(str(image_id))
        return path is not None and path.is_file()

    def follow(self, image_id: str, offset: int, still_running: Callable[[], bool], stopping: Callable[[], bool],
               poll_s: float = 0.2, status_every_s: float = 1.0) -> Iterator[bytes]:
        """Yield the log from ``offset``, then new bytes as they come, until the build has ended
        (``still_running`` false) and everything written is sent, or the service stops."""
        image_id = str(image_id)
        pos = offset
        hint: Optional[Doc] = None

        def step() -> bytes:
            nonlocal hint, pos
            with self.storage.read() as tx:
                data, hint, stored = self._read(tx, image_id, pos, READ_BYTES, hint)
            data = data if stored else self._legacy(image_id, pos, READ_BYTES)
            pos += len(data)
            return data

        # Woken when the log grows (see ``waits``); else it looks every poll_s.
        waits = self.waits
        grown = waits.register(image_id) if waits is not None else None
        try:
            yield from self._follow(step, grown, still_running, stopping, poll_s, status_every_s)
        finally:
            if waits is not None and grown is not None:
                waits.unregister(image_id, grown)

    @staticmethod
    def _follow(step: Callable[[], bytes], grown: Optional[threading.Event], still_running: Callable[[], bool],
                stopping: Callable[[], bool], poll_s: float, status_every_s: float) -> Iterator[bytes]:
        next_status = 0.0
        while True:
            if grown is not None:
                grown.clear()  # before the look: a wake during it makes the wait below return at once
            data = step()
            if data:
                yield data
                continue
            now = time.monotonic()
            if now >= next_status:
                next_status = now + status_every_s
                if not still_running() or stopping():
                    # The build ended: whatever it wrote before ending is sent, then we stop.
                    while True:
                        data = step()
                        if not data:
                            return
                        yield data
            if grown is not None:
                grown.wait(poll_s)
            else:
                time.sleep(poll_s)


def _pieces(text: str, size: int = CHUNK_BYTES) -> list[str]:
    """Text cut at line ends into pieces of about ``size`` bytes (for whole logs written at once)."""
    out: list[str] = []
    current: list[str] = []
    n = 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        n += len(line.encode("utf-8"))
        if n >= size:
            out.append("".join(current))
            current, n = [], 0
    if current:
        out.append("".join(current))
    return out


class BuildLog:
    """The log a running build writes: a callable that adds one timestamped line, safe to call
    from several threads (a builder may stream stdout and stderr from two). Lines are buffered
    and appended to storage every ``flush_s`` or ``CHUNK_BYTES``, and at :meth:`close`."""

    def __init__(self, store: BuildLogStore, image_id: str, group: Optional[str], clock: Clock,
                 flush_s: float = FLUSH_S):
        self.store = store
        self.image_id = image_id
        self.group = group
        self._clock = clock
        self._flush_s = flush_s
        self._lock = threading.Lock()  # the buffer
        self._flushing = threading.Lock()  # one append at a time, in order
        self._buffer: list[str] = []
        self._buffered = 0
        self._closed = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"xpresso-build-log-{image_id[:8]}", daemon=True)
        self._thread.start()

    def __call__(self, text: str) -> None:
        data = format_lines(format_time(self._clock()), text)
        with self._lock:
            if self._closed:
                return
            self._buffer.append(data)
            self._buffered += len(data)
            full = self._buffered >= CHUNK_BYTES
        if full:
            self._wake.set()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self._flush_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                text = "".join(self._buffer)
                self._buffer, self._buffered = [], 0
            if not text:
                return
            try:
                self.store.append(self.image_id, self.group, text)
            except XpressoError as exc:
                # Storage is away for a moment: keep the lines for the next flush.
                log.warning("build log of %s: cannot append (%s); will retry", self.image_id, exc.detail)
                with self._lock:
                    self._buffer.insert(0, text)
                    self._buffered += len(text)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        self._thread.join(10)
        for attempt in range(3):
            self.flush()
            with self._lock:
                if not self._buffer:
                    return
            time.sleep(0.5 * (attempt + 1))
        log.error("build log of %s: %d bytes could not be stored", self.image_id, self._buffered)

    def __enter__(self) -> "BuildLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
