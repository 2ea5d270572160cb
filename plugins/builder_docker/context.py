"""The build context, streamed into the build request while it is being made, never written
whole to a temporary file first as the docker SDK does (figures: benchmarks/README.md, builds).

A stop while the context is still being uploaded ends the upload at the next chunk.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Iterator, Mapping, Optional

from xpresso_env.builds.sdk.builder import BuildFailed, BuildRequest

from .abort import Abort


class PipeWriter:
    """The write end of a pipe as the file ``tarfile`` writes to (it asks where it is)."""

    def __init__(self, fd: int):
        self.fd, self.written = fd, 0

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def seek(self, *args: Any) -> int:  # docker's create_archive rewinds its temporary file at the end
        return self.written

    def flush(self) -> None:
        pass


class ContextStream:
    """The build context as a stream, uploaded while it is being made (figures: benchmarks/README.md,
    builds), never written whole to a temporary file first as the docker SDK does:

    * from a checked-out folder: the docker SDK's own tar (honouring .dockerignore), written by a
      thread into a pipe the request uploads as it fills;
    * from a git tree (``request.git_tree``, nothing checked out): ``git archive``'s tar, sent as
      git writes it; with a .dockerignore, filtered on the way (:func:`filter_tar`, in the
      sending thread) to exactly the members the SDK's walk would keep (:func:`kept_paths`).

    A cancel or the deadline stops the upload between two chunks (and kills git archive)."""

    CHUNK = 1 << 20
    FILTER_BUF = 1 << 16  # the .dockerignore filter's reads (filter_tar)

    def __init__(self, docker_module, request: BuildRequest, abort: Abort):
        from docker.api.build import process_dockerfile

        self._docker, self._root, self._abort = docker_module, str(request.context_dir), abort
        self._tree = request.git_tree
        # (name in the context, content or None); path arithmetic only for a Dockerfile inside
        # the context, which a streamed tree's is (workspace.GitTree.unstreamable)
        self._spec = process_dockerfile(request.dockerfile, self._root)
        self.dockerfile = self._spec[0]
        self._error: Optional[BaseException] = None

    def _excludes(self) -> Optional[list[str]]:
        if self._tree is not None:
            text = self._tree.read_text(".dockerignore")
        else:
            ignore = os.path.join(self._root, ".dockerignore")
            if not os.path.exists(ignore):
                return None
            with open(ignore) as fh:  # read as the SDK reads it
                text = fh.read()
        if text is None:
            return None
        return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]

    def _write(self, fd: int, excludes: Optional[list[str]]) -> None:
        try:
            self._docker.utils.build.tar(self._root, exclude=excludes, dockerfile=self._spec,
                                         fileobj=PipeWriter(fd))
        except BaseException as exc:  # BrokenPipe after a stop, or an unreadable file
            self._error = exc
        finally:
            os.close(fd)

    def chunks(self) -> Iterator[bytes]:
        excludes = self._excludes()
        archive = self._tree.archive() if self._tree is not None else None
        try:
            if archive is not None:
                self._abort.on_stop(archive.kill)
            if archive is not None and excludes is None:
                # Nothing to leave out: git's tar is the context as it stands.
                yield from self._read(archive.stdout.fileno())
            elif archive is not None:
                keep = kept_paths(self._docker, self._tree.entries, excludes, self.dockerfile)
                source = archive.stdout.fileno()
                for chunk in filter_tar(lambda n: os.read(source, n), keep, self.FILTER_BUF):
                    self._abort.check()
                    yield chunk
            else:
                yield from self._through_pipe(excludes)
            if archive is not None:
                self._abort.check()
                archive.finish()
        finally:
            if archive is not None:
                archive.close()
        self.check()

    def _through_pipe(self, excludes: Optional[list[str]]) -> Iterator[bytes]:
        r, w = os.pipe()
        try:  # a 1 MiB pipe: fewer, larger chunks on the wire (Linux; the default is 64 KiB)
            import fcntl

            fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), self.CHUNK)
        except (ImportError, OSError):
            pass
        writer = threading.Thread(target=self._write, args=(w, excludes), name="docker-build-context", daemon=True)
        writer.start()
        try:
            with os.fdopen(r, "rb", buffering=0) as pipe:
                yield from self._read(pipe.fileno())
        finally:
            writer.join()

    def _read(self, fd: int) -> Iterator[bytes]:
        """What the pipe holds, up to CHUNK, sent at once: waiting to fill whole chunks left the
        daemon idle meanwhile (figures: benchmarks/README.md, builds)."""
        while True:
            self._abort.check()
            chunk = os.read(fd, self.CHUNK)
            if not chunk:
                return
            yield chunk

    def check(self) -> None:
        if self._error is not None and not isinstance(self._error, BrokenPipeError):
            raise BuildFailed(f"cannot send the build context: {self._error}")


def _tar_name(header: bytes) -> bytes:
    name = header[0:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
    return prefix + b"/" + name if prefix else name


def _tar_size(header: bytes) -> int:
    field = header[124:136]
    if field[0] & 0x80:  # base-256, for sizes past 8 GiB
        return int.from_bytes(field[1:], "big")
    return int(field.strip(b"\0 ") or b"0", 8)


def _pax_path(data: bytes) -> Optional[bytes]:
    """The ``path`` record of a pax extended header ("<length> path=<value>\n" records)."""
    found, pos = None, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        if key == b"path":
            found = value
        pos += length
    return found


def filter_tar(read, keep: set[str], bufsize: int) -> Iterator[bytes]:
    """A tar stream (ustar with pax extended headers, as ``git archive`` writes it) with only the
    members whose path is in ``keep``, byte for byte: headers are passed on as read, never
    re-encoded. A generator in the sending thread: no second thread and pipe, and what is ready
    is sent before the next read waits (figures: benchmarks/README.md, builds)."""
    buf = bytearray()  # read, not yet parsed
    out: list[bytes] = []  # parsed and kept, not yet sent
    pending = b""  # a pax extended header, kept or dropped with the member it describes
    path: Optional[bytes] = None
    while True:
        while len(buf) < 512:
            if out:
                yield b"".join(out)
                out.clear()
            data = read(bufsize)
            if not data:
                raise BuildFailed("git archive: the tar stream ended early")
            buf += data
        header = bytes(buf[:512])
        del buf[:512]
        if header == bytes(512):  # the end: two zero blocks (git pads the last record further)
            out.append(bytes(1024))
            yield b"".join(out)
            while read(bufsize):  # drain, so git ends well
                pass
            return
        kind, size = header[156:157], _tar_size(header)
        padded = 0 if kind in (b"1", b"2", b"3", b"4", b"5", b"6") else (size + 511) // 512 * 512  # links, folders: no data
        if kind in (b"x", b"L", b"K"):  # describes the next member
            while len(buf) < padded:
                data = read(bufsize)
                if not data:
                    raise BuildFailed("git archive: the tar stream ended early")
                buf += data
            data = bytes(buf[:padded])
            del buf[:padded]
            if kind == b"x":
                path = _pax_path(data[:size]) or path
            elif kind == b"L":
                path = data[:size].split(b"\0", 1)[0]
            pending += header + data
            continue
        if kind == b"g":  # a global header: for every member
            kept = True
        else:
            kept = os.fsdecode(path if path is not None else _tar_name(header)).rstrip("/") in keep
            header = pending + header
            pending, path = b"", None
        if kept:
            out.append(header)
        n = min(padded, len(buf))  # the member's data: what was read already, then straight on
        if kept and n:
            out.append(bytes(buf[:n]))
        del buf[:n]
        padded -= n
        while padded:
            if out:
                yield b"".join(out)
                out.clear()
            data = read(min(bufsize, padded))
            if not data:
                raise BuildFailed("git archive: the tar stream ended early")
            if kept:
                out.append(data)
            padded -= len(data)


def kept_paths(docker_module, entries: Mapping[str, str], excludes: Optional[list[str]],
                dockerfile: Optional[str]) -> set[str]:
    """The paths of a git tree that the docker SDK's context tar would hold: its
    ``PatternMatcher.walk`` (docker/utils/build.py) replayed over the tree's listing instead of
    a folder, so a .dockerignore means the same with or without a checkout."""
    build = docker_module.utils.build
    patterns = list(excludes or [])
    patterns.append(f"!{dockerfile or 'Dockerfile'}")  # as exclude_paths() adds it
    matcher = build.PatternMatcher(patterns)
    children: dict[str, list[str]] = {}
    for path in entries:
        parent, _, name = path.rpartition("/")
        children.setdefault(parent, []).append(path)
    kept: set[str] = set()
    pending = [""]
    while pending:
        for fpath in children.get(pending.pop(), []):
            match = matcher.matches(fpath)
            if not match:
                kept.add(fpath)
            if entries[fpath] != "040000":  # only folders are walked into (a link is not)
                continue
            if match and not any(p.exclusion and p.cleaned_pattern.startswith(build.normalize_slashes(fpath))
                                 for p in matcher.patterns):
                continue
            pending.append(fpath)
    return kept
