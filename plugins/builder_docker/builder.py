"""The ``docker`` builder: builds through a Docker daemon with the docker SDK's low-level API.

One build: stream the context into ``POST /build`` under a temporary tag (:mod:`.context`),
follow its output, save the image's tar (:mod:`.archive`), push it when asked (:mod:`.push`),
publish the tar, and leave the daemon's image store clean (:mod:`.store`). A cancel or the
deadline stops whichever request is running by closing its connection (:mod:`.abort`).
"""
from __future__ import annotations

import os
import re
import time
from typing import Any, Mapping, Optional

from xpresso_env.builds.sdk.builder import (
    BuildCancelled,
    Builder,
    BuildFailed,
    BuildRequest,
    BuildResult,
    check_registry,
    discard,
    dockerfile_path,
    publish,
    temp_path_for,
    temp_ref,
)

from .abort import Abort
from .archive import rename_in_archive, save
from .client import API_TIMEOUT_S, DockerClient, import_docker, short
from .context import ContextStream
from .push import DockerPush
from .store import ImageStore


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


class DockerBuilder(Builder):
    name = "docker"
    streams_context = True  # takes request.git_tree: the workspace need not check out (sdk/builder.py)

    def __init__(self, base_url: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                 network_mode: Optional[str] = None):
        self._docker = import_docker()
        self.base_url = base_url
        self.network_mode = network_mode
        self.environ = dict(os.environ if environ is None else environ)
        self._client = DockerClient(self._docker, base_url, self.environ)
        self._store = ImageStore(self._client)
        self._push = DockerPush()

    def where(self) -> str:
        return self._client.where()

    def available(self) -> Optional[str]:
        return self._client.ping()

    def remove_stale(self, older_than_s: float) -> list[str]:
        return self._store.remove_stale(older_than_s)

    def remove_image(self, image_ref: str) -> None:
        self._store.remove_image(image_ref)

    def build(self, request: BuildRequest) -> BuildResult:
        deadline = time.monotonic() + request.timeout_s
        if request.git_tree is None:  # a streamed tree's Dockerfile was checked in it (GitTree.unstreamable)
            dockerfile_path(request)
        errors = self._docker.errors
        if request.cancel.is_set():
            raise BuildCancelled("cancelled")
        try:
            api = self._client.api(API_TIMEOUT_S)
        except Exception as exc:
            raise BuildFailed(f"docker daemon not reachable at {self.where()}: {short(exc)}") from None
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
            with Abort(request.cancel, deadline) as abort:
                api.hooks["response"].append(abort.hook)
                try:
                    built_id = self._run_build(api, request, abort, temp, steps)
                    mark("build_s")
                    request.log(f"saving {request.image_ref} to {request.output_tar}")
                    save(api, temp, tmp, abort)
                    mark("save_s")
                    abort.check()
                    # By id: the sizes of the image built here, whatever the tag names by now.
                    info = api.inspect_image(built_id)
                    if request.push is not None:
                        check_registry(request, deadline)
                        pushed = self._push.push(api, request, request.push, built_id, abort)
                        mark("push_s")
                except BuildFailed:
                    raise
                except Exception as exc:  # requests/urllib3/docker errors, or a socket we shut down
                    abort.check()  # a connection broken on purpose: say why
                    if isinstance(exc, errors.APIError):
                        self._client.version_refused(exc)
                        raise BuildFailed(f"docker: {short(exc)}") from None
                    raise BuildFailed(f"docker daemon connection failed: {short(exc)}") from None
            saved = rename_in_archive(tmp, temp, request.image_ref)
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
            self._store.tidy(request, temp, built_id if done else None, steps.ours if not done else [],
                             api if done else None)
            api.close()
            mark("tidy_s")
        virtual = int(info.get("VirtualSize") or info.get("Size") or 0)
        request.log(f"saved {request.output_tar} ({size} bytes), image {built_id}")
        meta: dict[str, Any] = {"docker_api_version": api.api_version, "builder_timings": phases}
        if self.network_mode:
            meta["network_mode"] = self.network_mode
        return BuildResult(image_id=built_id, size=size, virtual_size=virtual, meta=meta, push_url=pushed)

    def _run_build(self, api, request: BuildRequest, abort: Abort, temp: str, steps: _Steps) -> str:
        lines = _Lines(steps)
        built_id: Optional[str] = None
        kwargs: dict[str, Any] = {"network_mode": self.network_mode} if self.network_mode else {}
        context = ContextStream(self._docker, request, abort)
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
