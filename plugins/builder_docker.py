"""The ``docker`` builder: builds through a Docker daemon with the docker SDK's low-level API.

How a build is really stopped (cancel or timeout): the build runs as one streaming HTTP request
(``POST /build``). Closing that connection makes the daemon cancel the request's context, and
the classic builder then kills and removes the container of the running ``RUN`` step (tested:
a ``RUN sleep 30`` build stops within a second and no container is left). A watcher thread does
the closing, by shutting down the response's socket, because the reading thread is blocked in a
read while a quiet step runs. Saving the image (``GET /images/{name}/get``) is stopped the same
way. The SDK builds without BuildKit (it never asks for builder version 2), which is what makes
this hold. The build context is streamed (:class:`_ContextStream`): a stop while it is still
being uploaded ends the upload at the next chunk.

A clean store: the image is built under a unique temporary tag (``<name>:xpresso-build-<time>-<hex>``)
and saved by that tag, the tar's ``manifest.json``/``repositories`` then naming ``<name>:<tag>``
(rewritten in place: they are the archive's last members), so two groups building the same
``name:tag`` at once never save each other's image. Only a build that fully succeeded (tar
written, push done) takes the tag ``<name>:<tag>`` in the daemon; the image it replaces there is
removed when nothing else uses it. A failed or cancelled build removes its temporary tag and
every intermediate image its own steps created (cache hits and base images are not touched);
``forcerm`` removes the step containers. Registry push: the docker SDK's push of a temporary
``<host>/<namespace>/<name>:<tag>`` tag with ``auth_config`` (the credentials travel in the
request header, never in a log), cancelled like the build by closing the stream.
"""
from __future__ import annotations

import json
import os
import re
import socket
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from xpresso_env.builds.push import PushTarget, is_loopback, push_url
from xpresso_env.builds.sdk.builder import (
    BuildCancelled,
    BuilderInfo,
    BuildFailed,
    BuildRequest,
    BuildResult,
    BuildTimedOut,
    check_registry,
    discard,
    dockerfile_path,
    publish,
    stale_temp_tag,
    temp_path_for,
    temp_ref,
)
from xpresso_env.core.errors import ConfigError, Conflict, ServiceUnavailable
from xpresso_env.hookspecs import hookimpl

PING_TIMEOUT_S = 3.0
# Read timeout of ordinary API calls (inspect, save chunks). The build stream itself has none:
# a quiet RUN step may last; the build's own deadline bounds it instead.
API_TIMEOUT_S = 300.0
WATCH_POLL_S = 0.05
SAVE_CHUNK = 1 << 20
WRITEBACK_STEP = 8 << 20  # bytes of tar written between two writeback kicks
TIDY_WAIT_S = 15.0  # how long a stopped build's leftovers are waited for (its step container's removal)


def _import_docker():
    try:
        import docker  # noqa: F401
        import docker.errors  # noqa: F401
    except ImportError:
        raise ConfigError("the docker SDK is not installed (pip install docker)") from None
    return docker


def _short(exc: BaseException) -> str:
    """A one-line reason from a docker/requests exception (they nest long messages)."""
    text = str(getattr(exc, "explanation", None) or exc) or type(exc).__name__
    for marker in ("Connection refused", "No such file or directory", "Permission denied",
                   "timed out", "Name or service not known"):
        if marker in text:
            return marker
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:197] + "..."


class _Abort:
    """Watches ``cancel`` and the deadline; when either fires, shuts down the socket of the
    streaming response in progress so the blocked reader returns and the daemon stops."""

    def __init__(self, cancel: threading.Event, deadline: float):
        self.cancel, self.deadline = cancel, deadline
        self.reason: Optional[BuildFailed] = None
        self._response: Any = None
        self._on_stop: list[Any] = []  # more to stop than the response (git archive of the context)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="docker-build-watch", daemon=True)

    def __enter__(self) -> "_Abort":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        """A requests response hook: remembers the latest response (headers received)."""
        with self._lock:
            self._response = response
            if self.reason is not None:
                _shutdown(response)
        return response

    def on_stop(self, stop) -> None:
        """Call ``stop()`` too when the build is stopped (at once if it already was)."""
        with self._lock:
            self._on_stop.append(stop)
            if self.reason is None:
                return
        stop()

    def check(self) -> None:
        if self.reason is not None:
            raise self.reason

    def _watch(self) -> None:
        while not self._done.wait(WATCH_POLL_S):
            if self.cancel.is_set():
                reason: BuildFailed = BuildCancelled("cancelled")
            elif time.monotonic() >= self.deadline:
                reason = BuildTimedOut("timed out")
            else:
                continue
            with self._lock:
                self.reason = reason
                if self._response is not None:
                    _shutdown(self._response)
                stops = list(self._on_stop)
            for stop in stops:
                stop()
            return


def _shutdown(response: Any) -> None:
    raw = getattr(response, "raw", None)
    conn = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is None:  # urllib3 without .connection: reach the socket through the file object
        sock = getattr(getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Lines:
    """Joins the daemon's ``stream`` fragments into whole log lines."""

    def __init__(self, log):
        self.log, self.buf = log, ""

    def feed(self, text: str) -> None:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self.log(line.rstrip("\r"))

    def flush(self) -> None:
        if self.buf:
            self.log(self.buf)
            self.buf = ""


class _Steps:
    """Follows the classic builder's output to learn which intermediate images THIS build made
    (a cache hit or a FROM names an image that is not ours to remove)."""

    _STEP = re.compile(r"Step \d+/\d+ : (\w+)")
    _ID = re.compile(r" ---> ([0-9a-f]{12,64})$")

    def __init__(self, log):
        self.log = log
        self.ours: list[str] = []
        self._foreign = True

    def __call__(self, line: str) -> None:
        self.log(line)
        step = self._STEP.match(line)
        if step:
            self._foreign = step.group(1).upper() == "FROM"
        elif line.startswith(" ---> Using cache"):
            self._foreign = True
        else:
            found = self._ID.match(line)
            if found and not self._foreign:
                self.ours.append(found.group(1))


class _PipeWriter:
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


class _ContextStream:
    """The build context as a stream, uploaded while it is being made (figures: benchmarks/README.md,
    builds), never written whole to a temporary file first as the docker SDK does:

    * from a checked-out folder: the docker SDK's own tar (honouring .dockerignore), written by a
      thread into a pipe the request uploads as it fills;
    * from a git tree (``request.git_tree``, nothing checked out): ``git archive``'s tar, sent as
      git writes it; with a .dockerignore, filtered on the way (:func:`_filter_tar`, in the
      sending thread) to exactly the members the SDK's walk would keep (:func:`_kept_paths`).

    A cancel or the deadline stops the upload between two chunks (and kills git archive)."""

    CHUNK = 1 << 20
    FILTER_BUF = 1 << 16  # the .dockerignore filter's reads (_filter_tar)

    def __init__(self, docker_module, request: BuildRequest, abort: "_Abort"):
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
                                         fileobj=_PipeWriter(fd))
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
                keep = _kept_paths(self._docker, self._tree.entries, excludes, self.dockerfile)
                source = archive.stdout.fileno()
                for chunk in _filter_tar(lambda n: os.read(source, n), keep, self.FILTER_BUF):
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
        daemon idle meanwhile (builder-level A/B, 8 and 12 builds each: 0.80 s against 0.76 s,
        1.00 s against 0.95 s)."""
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


def _filter_tar(read, keep: set[str], bufsize: int) -> Iterator[bytes]:
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


def _kept_paths(docker_module, entries: Mapping[str, str], excludes: Optional[list[str]],
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


class DockerBuilder:
    name = "docker"
    streams_context = True  # takes request.git_tree: the workspace need not check out (builders.py)

    def __init__(self, base_url: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                 network_mode: Optional[str] = None):
        self._docker = _import_docker()
        self.base_url = base_url
        self.network_mode = network_mode
        self.environ = dict(os.environ if environ is None else environ)
        self._version: Optional[str] = None  # the daemon's API version, once asked (_api)
        # The daemon pushes by tag: two builds pushing the same registry reference at once (a
        # namespace without {group}) take turns, so each pushes its own image.
        self._push_locks: dict[str, threading.Lock] = {}
        self._push_locks_guard = threading.Lock()

    # -- connection

    def where(self) -> str:
        return self.base_url or self.environ.get("DOCKER_HOST") or "the default socket"

    def _client_kwargs(self) -> dict[str, Any]:
        if self.base_url:
            return {"base_url": self.base_url}
        return self._docker.utils.kwargs_from_env(environment=self.environ)

    def _api(self, timeout: float, negotiate: bool = False):
        """A new low-level client (one per build: its session carries the build's abort hook).
        The API version is asked by :meth:`available` and the first build (``auto`` costs a
        ``GET /version``: 10-30 ms a build here), then reused; asked again after a refusal."""
        version = "auto" if negotiate or self._version is None else self._version
        api = self._docker.APIClient(version=version, timeout=timeout, **self._client_kwargs())
        self._version = api.api_version
        return api

    def _version_refused(self, exc: BaseException) -> None:
        """A refused API version (the daemon was replaced by an older one): ask again next time."""
        if "client version" in str(getattr(exc, "explanation", None) or exc).lower():
            self._version = None

    def available(self) -> Optional[str]:
        try:
            api = self._api(PING_TIMEOUT_S, negotiate=True)
        except Exception as exc:  # DockerException, requests errors: the daemon does not answer
            return f"docker daemon not reachable at {self.where()}: {_short(exc)}"
        try:
            api.ping()
        except Exception as exc:
            return f"docker daemon not reachable at {self.where()}: {_short(exc)}"
        finally:
            api.close()
        return None

    # -- build

    def build(self, request: BuildRequest) -> BuildResult:
        deadline = time.monotonic() + request.timeout_s
        if request.git_tree is None:  # a streamed tree's Dockerfile was checked in it (workspace.py)
            dockerfile_path(request)
        errors = self._docker.errors
        if request.cancel.is_set():
            raise BuildCancelled("cancelled")
        try:
            api = self._api(API_TIMEOUT_S)
        except Exception as exc:
            raise BuildFailed(f"docker daemon not reachable at {self.where()}: {_short(exc)}") from None
        tmp = temp_path_for(request.output_tar)
        temp = temp_ref(request.image_ref)
        steps = _Steps(request.log)
        phases: dict[str, float] = {}  # where the builder's time goes (benchmarks/builds.py)
        last = [time.monotonic()]

        def mark(phase: str) -> None:
            now = time.monotonic()
            phases[phase] = round(now - last[0], 3)
            last[0] = now

        built_id: Optional[str] = None
        pushed: Optional[str] = None
        done = False
        try:
            with _Abort(request.cancel, deadline) as abort:
                api.hooks["response"].append(abort.hook)
                try:
                    built_id = self._run_build(api, request, abort, temp, steps)
                    mark("build_s")
                    request.log(f"saving {request.image_ref} to {request.output_tar}")
                    self._save(api, request, temp, tmp, abort)
                    mark("save_s")
                    abort.check()
                    # By id: the sizes of the image built here, whatever the tag names by now.
                    info = api.inspect_image(built_id)
                    if request.push is not None:
                        check_registry(request, deadline)
                        pushed = self._push(api, request, request.push, built_id, abort)
                        mark("push_s")
                except BuildFailed:
                    raise
                except Exception as exc:  # requests/urllib3/docker errors, or a socket we shut down
                    abort.check()  # a connection broken on purpose: say why
                    if isinstance(exc, errors.APIError):
                        self._version_refused(exc)
                        raise BuildFailed(f"docker: {_short(exc)}") from None
                    raise BuildFailed(f"docker daemon connection failed: {_short(exc)}") from None
            saved = _rename_in_archive(tmp, temp, request.image_ref)
            mark("rename_s")
            if saved != built_id:  # cannot happen with a tag of our own; never publish a stranger's image
                raise BuildFailed(f"the saved tar holds {saved}, not the image built ({built_id})")
            if request.cancel.is_set():
                raise BuildCancelled("cancelled")
            size = publish(tmp, request.output_tar)
            mark("publish_s")
            done = True
        except BaseException:
            discard(tmp)
            raise
        finally:
            # A successful build's connection is sound: the tidying reuses it (saves a round trip).
            self._tidy(request, temp, built_id if done else None, steps.ours if not done else [],
                       api if done else None)
            api.close()
            mark("tidy_s")
        virtual = int(info.get("VirtualSize") or info.get("Size") or 0)
        request.log(f"saved {request.output_tar} ({size} bytes), image {built_id}")
        meta: dict[str, Any] = {"docker_api_version": api.api_version, "builder_timings": phases}
        if self.network_mode:
            meta["network_mode"] = self.network_mode
        return BuildResult(image_id=built_id, size=size, virtual_size=virtual, meta=meta, push_url=pushed)

    def _run_build(self, api, request: BuildRequest, abort: _Abort, temp: str, steps: _Steps) -> str:
        lines = _Lines(steps)
        built_id: Optional[str] = None
        kwargs: dict[str, Any] = {"network_mode": self.network_mode} if self.network_mode else {}
        context = _ContextStream(self._docker, request, abort)
        stream = api.build(fileobj=context.chunks(), custom_context=True, dockerfile=context.dockerfile,
                           tag=temp, rm=True, forcerm=True, decode=True, timeout=None, **kwargs)
        context.check()
        try:
            for item in stream:
                abort.check()
                if "stream" in item:
                    lines.feed(item["stream"])
                elif "error" in item:
                    lines.flush()
                    message = " ".join(str(item["error"]).split())
                    request.log(f"error: {message}")
                    raise BuildFailed(message or "the docker build failed")
                elif "aux" in item and isinstance(item["aux"], dict) and "ID" in item["aux"]:
                    built_id = str(item["aux"]["ID"])
                elif "status" in item and not item.get("progressDetail"):
                    lines.flush()
                    request.log(" ".join(filter(None, (item.get("id"), str(item["status"])))))
        finally:
            lines.flush()
            stream.close()
        abort.check()
        if not built_id:
            raise BuildFailed("the docker build ended without an image (daemon connection lost?)")
        return built_id

    def _save(self, api, request: BuildRequest, ref: str, tmp: Path, abort: _Abort) -> None:
        request.output_tar.parent.mkdir(parents=True, exist_ok=True)
        chunks: Iterator[bytes] = api.get_image(ref, chunk_size=SAVE_CHUNK)
        with open(tmp, "wb") as out:
            written = flushed = 0
            for chunk in chunks:
                abort.check()
                out.write(chunk)
                written += len(chunk)
                if written - flushed >= WRITEBACK_STEP:
                    _start_writeback(out.fileno(), flushed, written - flushed)
                    flushed = written
        abort.check()

    # -- push

    def _push(self, api, request: BuildRequest, target: PushTarget, built_id: str, abort: _Abort) -> str:
        """Push the built image as ``target.ref`` (a tag made for the push and removed after)."""
        request.log(f"pushing {request.image_ref} to {target.ref}")
        with self._push_locks_guard:
            lock = self._push_locks.setdefault(target.ref, threading.Lock())
        while not lock.acquire(timeout=WATCH_POLL_S * 4):
            abort.check()
        try:
            return self._push_locked(api, request, target, built_id, abort)
        finally:
            lock.release()

    def _push_locked(self, api, request: BuildRequest, target: PushTarget, built_id: str, abort: _Abort) -> str:
        api.tag(built_id, target.repository, target.tag, force=True)
        digest: Optional[str] = None
        try:
            stream = api.push(target.repository, target.tag, stream=True, decode=True, auth_config=target.auth)
            try:
                for item in stream:
                    abort.check()
                    if "error" in item:
                        raise BuildFailed(self._push_error(" ".join(str(item["error"]).split()), target))
                    aux = item.get("aux")
                    if isinstance(aux, dict) and aux.get("Digest"):
                        digest = str(aux["Digest"])
                    elif "status" in item and not item.get("progressDetail"):
                        request.log(" ".join(filter(None, (item.get("id"), str(item["status"])))))
            finally:
                stream.close()
            abort.check()
        finally:
            try:  # the push tag only: the image keeps its other tags
                api.remove_image(target.ref, noprune=True)
            except Exception:  # noqa: BLE001 — a leftover tag is logged, never the build's failure
                if not abort.reason:
                    request.log(f"warning: could not remove the push tag {target.ref}")
        if not digest or not digest.startswith("sha256:"):
            raise BuildFailed(f"push failed: the docker daemon reported no digest for {target.ref}")
        url = push_url(target, digest)
        request.log(f"pushed {url}")
        return url

    def _push_error(self, message: str, target: PushTarget) -> str:
        low = message.lower()
        if low.startswith("unauthorized") or "authentication required" in low:
            return f"push refused: 401 {message}"
        if low.startswith("denied") or "requested access to the resource is denied" in low:
            return f"push refused: 403 {message}"
        if "http response to https client" in low and not is_loopback(target.registry):
            return (f"push failed: {message} (the docker daemon talks HTTPS to {target.registry}: add it to "
                    f"\"insecure-registries\" in its daemon.json)")
        return f"push failed: {message}"

    # -- the image store

    def _tidy(self, request: BuildRequest, temp: str, kept: Optional[str], ours: list[str], api=None) -> None:
        """After the build (on a fresh connection unless ``api`` is given: a stopped build's was
        shut down): a successful build (``kept``) takes ``name:tag``; every build drops its
        temporary tag; a failed one drops its own layers. The image a successful build replaced
        is removed in the background, if nothing else uses it: the build need not wait for it."""
        errors = self._docker.errors
        own = api is None
        if own:
            try:
                api = self._api(API_TIMEOUT_S)
            except Exception:
                request.log(f"warning: docker daemon not reachable: {temp} and its layers are left")
                return
        try:
            if kept is not None:
                name, tag = request.image_ref.rsplit(":", 1)
                previous = _image_id(api, errors, request.image_ref)
                api.tag(kept, name, tag, force=True)
                if previous and previous != kept:
                    threading.Thread(target=self._remove_replaced, args=(previous,), daemon=True,
                                     name="docker-remove-replaced").start()
            try:
                api.remove_image(temp, noprune=kept is not None)
            except errors.NotFound:
                pass
            # A stopped build's step container may still be on its way out (the daemon kills
            # and removes it after the request closed): retry the images it holds a while.
            pending, until = list(reversed(ours)), time.monotonic() + TIDY_WAIT_S
            while pending:
                pending = [image for image in pending if _remove_if_unused(api, errors, image) == "busy"]
                if not pending or time.monotonic() > until:
                    break
                time.sleep(0.2)
            if ours:
                request.log("removed the intermediate images of the unfinished build" if not pending else
                            f"warning: intermediate images still in use, left: {', '.join(i[:12] for i in pending)}")
        except Exception as exc:  # noqa: BLE001 — a leftover is logged, never the build's failure
            request.log(f"warning: cleaning the docker image store: {_short(exc)}")
        finally:
            if own:
                api.close()

    def _remove_replaced(self, image_id: str) -> None:
        try:
            api = self._api(API_TIMEOUT_S)
        except Exception:
            return
        try:
            _remove_if_unused(api, self._docker.errors, image_id)
        except Exception:  # noqa: BLE001 — a background tidy-up: a leftover, never an error
            pass
        finally:
            api.close()

    # -- removal

    def remove_stale(self, older_than_s: float) -> list[str]:
        errors = self._docker.errors
        removed: list[str] = []
        try:
            api = self._api(API_TIMEOUT_S)
        except Exception as exc:
            raise ServiceUnavailable(f"docker daemon not reachable at {self.where()}: {_short(exc)}") from None
        try:
            for image in api.images():
                for ref in image.get("RepoTags") or []:
                    if stale_temp_tag(ref, older_than_s):
                        try:
                            api.remove_image(ref, noprune=False)
                            removed.append(ref)
                        except errors.APIError:
                            pass
        finally:
            api.close()
        return removed

    def remove_image(self, image_ref: str) -> None:
        errors = self._docker.errors
        try:
            api = self._api(API_TIMEOUT_S)
        except Exception as exc:
            raise ServiceUnavailable(f"docker daemon not reachable at {self.where()}: {_short(exc)}") from None
        try:
            api.remove_image(image_ref, force=True)
        except errors.NotFound:
            pass
        except errors.APIError as exc:
            if exc.status_code == 409:
                raise Conflict(f"cannot remove {image_ref}: {_short(exc)}") from None
            raise ServiceUnavailable(f"cannot remove {image_ref}: {_short(exc)}") from None
        except Exception as exc:
            raise ServiceUnavailable(f"docker daemon not reachable at {self.where()}: {_short(exc)}") from None
        finally:
            api.close()


def _image_id(api, errors, ref: str) -> Optional[str]:
    try:
        return str(api.inspect_image(ref)["Id"])
    except errors.NotFound:
        return None


def _remove_if_unused(api, errors, image_id: str) -> str:
    """Remove an untagged image (and its untagged parents) unless a tag, a child image or a
    container still uses it. Returns ``removed``, ``kept`` (tagged, or has children) or
    ``busy`` (a container uses it: the daemon may be removing that container right now)."""
    try:
        if api.inspect_image(image_id).get("RepoTags"):
            return "kept"
        api.remove_image(image_id, force=False, noprune=False)
        return "removed"
    except errors.NotFound:
        return "removed"
    except errors.APIError as exc:
        text = str(getattr(exc, "explanation", "") or exc).lower()
        return "busy" if exc.status_code == 409 and "container" in text else "kept"


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of the tar to disk now, without waiting: the fsync that publishes
    it then finds little left to write (figures: benchmarks/README.md, builds). Linux starts
    writeback of dirty pages on POSIX_FADV_DONTNEED (PostgreSQL's pg_flush_data does the same
    where sync_file_range is missing); durability still rests on publish()'s fsync."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


_RENAMED = ("manifest.json", "repositories", "index.json")  # the members that name the image


def _rename_in_archive(path: Path, temp: str, final: str) -> Optional[str]:
    """Make the docker-archive at ``path``, saved as ``temp`` (``name:<temporary tag>``), name
    ``final`` (``name:tag``) instead; returns the image id its manifest records.

    The members that carry the name are small and, as ``docker save`` writes them, the last
    ones: they are rewritten in place (truncate, append); otherwise the archive is copied."""
    old_tag, new_tag = temp.rsplit(":", 1)[1], final.rsplit(":", 1)[1]
    with tarfile.open(path, "r:") as tar:
        members = sorted(tar.getmembers(), key=lambda m: m.offset)
        texts = {m.name: tar.extractfile(m).read() for m in members if m.name in _RENAMED and m.isfile()}
        fmt = tar.format
    if "manifest.json" not in texts:
        raise BuildFailed("the saved image archive has no manifest.json")
    new = {name: data.replace(old_tag.encode(), new_tag.encode()) for name, data in texts.items()}
    first = next(i for i, m in enumerate(members) if m.name in new)
    if all(m.name in new for m in members[first:]):
        with open(path, "r+b") as fh:
            fh.truncate(members[first].offset)
            fh.seek(members[first].offset)
            with tarfile.open(fileobj=fh, mode="w", format=fmt) as out:
                for m in members[first:]:
                    _add_bytes(out, m, new[m.name])
    else:  # another layout: copy every member, the renamed ones changed
        copy = path.with_name(path.name + ".rename")
        try:
            with tarfile.open(path, "r:") as tar, tarfile.open(copy, "w", format=fmt) as out:
                for m in tar:
                    if m.name in new:
                        _add_bytes(out, m, new[m.name])
                    else:
                        out.addfile(m, tar.extractfile(m) if m.isfile() else None)
            os.replace(copy, path)
        finally:
            discard(copy)
    try:
        manifest = json.loads(new["manifest.json"])
    except ValueError:
        return None
    if not isinstance(manifest, list) or len(manifest) != 1 or manifest[0].get("RepoTags") != [final]:
        return None
    config = str(manifest[0].get("Config", ""))
    config = config.rsplit("/", 1)[-1].removesuffix(".json")
    return config if config.startswith("sha256:") else f"sha256:{config}"


def _add_bytes(out: tarfile.TarFile, like: tarfile.TarInfo, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(like.name)
    info.mode, info.mtime, info.uid, info.gid, info.size = like.mode, like.mtime, like.uid, like.gid, len(data)
    out.addfile(info, io.BytesIO(data))


def _factory(settings) -> DockerBuilder:
    d = settings.builder.docker
    return DockerBuilder(base_url=d.base_url, network_mode=d.network_mode)


@hookimpl
def xpresso_builders():
    return [BuilderInfo(name="docker", description="Docker daemon (docker SDK), DOCKER_HOST or builder.docker.base_url",
                        factory=_factory, auto_priority=0)]
