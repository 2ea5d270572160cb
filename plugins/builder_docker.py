"""The ``docker`` builder: builds through a Docker daemon with the docker SDK's low-level API.

How a build is really stopped (cancel or timeout): the build runs as one streaming HTTP request
(``POST /build``). Closing that connection makes the daemon cancel the request's context, and
the classic builder then kills and removes the container of the running ``RUN`` step (tested:
a ``RUN sleep 30`` build stops within a second and no container is left). A watcher thread does
the closing, by shutting down the response's socket, because the reading thread is blocked in a
read while a quiet step runs. Saving the image (``GET /images/{name}/get``) is stopped the same
way. The SDK builds without BuildKit (it never asks for builder version 2), which is what makes
this hold. While the build context is still being uploaded the request cannot be interrupted;
the abort then happens as soon as the daemon answers.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from xpresso_env.builders import (BuildCancelled, BuildFailed, BuilderInfo, BuildRequest, BuildResult,
                                  BuildTimedOut, discard, dockerfile_path, publish, temp_path_for)
from xpresso_env.errors import ConfigError, Conflict, ServiceUnavailable
from xpresso_env.hookspecs import hookimpl

PING_TIMEOUT_S = 3.0
# Read timeout of ordinary API calls (inspect, save chunks). The build stream itself has none:
# a quiet RUN step may last; the build's own deadline bounds it instead.
API_TIMEOUT_S = 300.0
WATCH_POLL_S = 0.05
SAVE_CHUNK = 1 << 20
WRITEBACK_STEP = 8 << 20  # bytes of tar written between two writeback kicks


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


class DockerBuilder:
    name = "docker"

    def __init__(self, base_url: Optional[str] = None, environ: Optional[Mapping[str, str]] = None):
        self._docker = _import_docker()
        self.base_url = base_url
        self.environ = dict(os.environ if environ is None else environ)

    # -- connection

    def where(self) -> str:
        return self.base_url or self.environ.get("DOCKER_HOST") or "the default socket"

    def _client_kwargs(self) -> dict[str, Any]:
        if self.base_url:
            return {"base_url": self.base_url}
        return self._docker.utils.kwargs_from_env(environment=self.environ)

    def _api(self, timeout: float):
        """A new low-level client (one per build: its session carries the build's abort hook)."""
        return self._docker.APIClient(version="auto", timeout=timeout, **self._client_kwargs())

    def available(self) -> Optional[str]:
        try:
            api = self._api(PING_TIMEOUT_S)
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
        dockerfile_path(request)
        errors = self._docker.errors
        if request.cancel.is_set():
            raise BuildCancelled("cancelled")
        try:
            api = self._api(API_TIMEOUT_S)
        except Exception as exc:
            raise BuildFailed(f"docker daemon not reachable at {self.where()}: {_short(exc)}") from None
        tmp = temp_path_for(request.output_tar)
        try:
            with _Abort(request.cancel, deadline) as abort:
                api.hooks["response"].append(abort.hook)
                try:
                    built_id = self._run_build(api, request, abort)
                    request.log(f"saving {request.image_ref} to {request.output_tar}")
                    self._save(api, request, tmp, abort)
                    abort.check()
                    # By id: the sizes of the image built here, whatever the tag names by now.
                    info = api.inspect_image(built_id)
                except BuildFailed:
                    raise
                except Exception as exc:  # requests/urllib3/docker errors, or a socket we shut down
                    abort.check()  # a connection broken on purpose: say why
                    if isinstance(exc, errors.APIError):
                        raise BuildFailed(f"docker: {_short(exc)}") from None
                    raise BuildFailed(f"docker daemon connection failed: {_short(exc)}") from None
            saved = _archive_image_id(tmp)
            if saved != built_id:
                # Another build moved the tag between our build and our save.
                raise BuildFailed(f"{request.image_ref} was retagged while it was being saved "
                                  f"(built {built_id}, saved {saved})")
            size = publish(tmp, request.output_tar)
        except BaseException:
            discard(tmp)
            raise
        finally:
            api.close()
        virtual = int(info.get("VirtualSize") or info.get("Size") or 0)
        request.log(f"saved {request.output_tar} ({size} bytes), image {built_id}")
        return BuildResult(image_id=built_id, size=size, virtual_size=virtual,
                           meta={"docker_api_version": api.api_version})

    def _run_build(self, api, request: BuildRequest, abort: _Abort) -> str:
        lines = _Lines(request.log)
        built_id: Optional[str] = None
        stream = api.build(path=str(request.context_dir), dockerfile=request.dockerfile,
                           tag=request.image_ref, rm=True, forcerm=True, decode=True, timeout=None)
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

    def _save(self, api, request: BuildRequest, tmp: Path, abort: _Abort) -> None:
        request.output_tar.parent.mkdir(parents=True, exist_ok=True)
        chunks: Iterator[bytes] = api.get_image(request.image_ref, chunk_size=SAVE_CHUNK)
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

    # -- removal

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


def _archive_image_id(path: Path) -> Optional[str]:
    """The image id (config digest) recorded in a docker-archive tar's manifest.json."""
    import json
    import tarfile

    try:
        with tarfile.open(path, "r:") as tar:
            member = tar.extractfile("manifest.json")
            manifest = json.load(member) if member else None
    except (tarfile.TarError, KeyError, ValueError, OSError):
        return None
    if not manifest or len(manifest) != 1:
        return None
    config = str(manifest[0].get("Config", ""))
    config = config.rsplit("/", 1)[-1].removesuffix(".json")
    return config if config.startswith("sha256:") else f"sha256:{config}"


def _factory(settings) -> DockerBuilder:
    return DockerBuilder(base_url=settings.builder.docker.base_url)


@hookimpl
def xpresso_builders():
    return [BuilderInfo(name="docker", description="Docker daemon (docker SDK), DOCKER_HOST or builder.docker.base_url",
                        factory=_factory, auto_priority=0)]
