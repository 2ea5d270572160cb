"""The ``buildah`` builder: ``buildah build`` then ``buildah push`` to a ``docker-archive:`` tar.

Every buildah call is an argument list run through :func:`xpresso_env.services.procrun.run` in
its own process group.

How a build is really stopped (cancel or timeout): buildah itself is NOT signalled first. A
SIGTERM or SIGKILL reaching buildah outside a RUN step kills it on the spot and leaves its
working container (a full root file system copy with vfs) in the store. Instead every other
process of the group (the RUN step's chroot runtime and its command, a COPY's copier) is
killed, again and again until buildah exits: buildah sees its step fail, removes its working
container as after any failed step, and exits within a fraction of a second. Only if buildah
has not exited after ``STOP_GRACE_S`` (a long base-image pull, a commit) is the whole group
killed; the working containers it leaves are then removed if no other build of this builder
is running (otherwise they are named in the log).

Images are tagged under their fully qualified Docker name (``docker.io/library/<name>:<tag>``
for a bare name), so the saved tar carries exactly the tag ``docker load`` shows as
``<name>:<tag>``; a bare name would be stored by buildah as ``localhost/<name>`` and the tar
would carry both names.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from xpresso_env.builders import (BuildCancelled, BuildFailed, BuilderInfo, BuildRequest, BuildResult,
                                  BuildTimedOut, discard, dockerfile_path, publish, temp_path_for)
from xpresso_env.errors import ServiceUnavailable
from xpresso_env.hookspecs import hookimpl
from xpresso_env.services import procrun

STOP_GRACE_S = 30.0  # how long a stop waits for buildah to fail its step and clean up
QUICK_TIMEOUT_S = 120.0  # inspect, rmi, --version
_IMAGE_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


def normalize_ref(ref: str) -> str:
    """Docker's normalisation: ``foo:1`` -> ``docker.io/library/foo:1``,
    ``me/foo:1`` -> ``docker.io/me/foo:1``; a name with a registry host is kept."""
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return ref
    if not sep:
        return f"docker.io/library/{ref}"
    return f"docker.io/{ref}"


def global_args(storage_driver: str, root: Optional[str] = None, runroot: Optional[str] = None) -> list[str]:
    args = ["--storage-driver", storage_driver]
    if root:
        args += ["--root", root]
    if runroot:
        args += ["--runroot", runroot]
    return args


class BuildahBuilder:
    name = "buildah"

    def __init__(self, storage_driver: str = "vfs", isolation: str = "chroot", root: Optional[str] = None,
                 runroot: Optional[str] = None, executable: str = "buildah",
                 stop_grace_s: float = STOP_GRACE_S):
        self.storage_driver, self.isolation = storage_driver, isolation
        self.stop_grace_s = stop_grace_s
        self.root, self.runroot = root, runroot
        self.executable = executable
        self._lock = threading.Lock()
        self._active = 0  # builds running now (decides whether leftovers can be told apart)

    def _cmd(self, *args: str) -> list[str]:
        return [self.executable, *global_args(self.storage_driver, self.root, self.runroot), *args]

    def _quick(self, *args: str, capture: bool = True) -> procrun.RunResult:
        """A short buildah call that nobody cancels."""
        return procrun.run(self._cmd(*args), lambda line: None, threading.Event(), QUICK_TIMEOUT_S,
                           capture_stdout=capture)

    def available(self) -> Optional[str]:
        if shutil.which(self.executable) is None:
            return f"{self.executable} is not installed"
        try:
            res = procrun.run([self.executable, "--version"], lambda line: None, threading.Event(), 30)
        except BuildFailed as exc:
            return str(exc)
        if res.returncode != 0:
            return f"{self.executable} --version failed: {res.last_line()}"
        return None

    def build(self, request: BuildRequest) -> BuildResult:
        with self._lock:
            self._active += 1
        try:
            return self._build(request)
        finally:
            with self._lock:
                self._active -= 1

    def _build(self, request: BuildRequest) -> BuildResult:
        deadline = time.monotonic() + request.timeout_s
        dockerfile = dockerfile_path(request)
        ref = normalize_ref(request.image_ref)
        request.output_tar.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path_for(request.output_tar)

        def step(args: Sequence[str], cwd: Optional[Path] = None, gentle: bool = False) -> procrun.RunResult:
            remaining = deadline - time.monotonic()
            if request.cancel.is_set():
                raise BuildCancelled("cancelled")
            if remaining <= 0:
                raise BuildTimedOut("timed out")
            cmd = self._cmd(*args)
            request.log("$ " + " ".join(cmd))
            if gentle:  # see the module's docstring
                return procrun.run(cmd, request.log, request.cancel, remaining, cwd=cwd,
                                   term_grace_s=self.stop_grace_s, stop_mode="children",
                                   on_start=request.started)
            return procrun.run(cmd, request.log, request.cancel, remaining, cwd=cwd, on_start=request.started)

        before = self._containers()
        with tempfile.TemporaryDirectory(prefix="xpresso-buildah-") as scratch:
            iidfile = Path(scratch, "iid")
            try:
                try:
                    res = step(["build", "--isolation", self.isolation, "--format", "docker",
                                "--iidfile", str(iidfile), "-f", str(dockerfile), "-t", ref,
                                "--", str(request.context_dir)], gentle=True)
                except BuildFailed:
                    self._after_stop(before, iidfile, request.log)
                    raise
                if res.returncode != 0:
                    raise BuildFailed(_reason(res, "buildah build"))
                image_id = _read_image_id(iidfile)
                request.log(f"saving {request.image_ref} to {request.output_tar}")
                # Relative archive path: the transport splits on ':', which the folder may hold.
                # Pushed by id, so a concurrent build retagging the name cannot swap the image.
                res = step(["push", "--quiet", image_id, f"docker-archive:{tmp.name}:{ref}"],
                           cwd=tmp.parent)
                if res.returncode != 0:
                    raise BuildFailed(_reason(res, "buildah push"))
                if request.cancel.is_set():
                    raise BuildCancelled("cancelled")
                virtual = self._virtual_size(image_id)
                size = publish(tmp, request.output_tar)
            except BaseException:
                discard(tmp)
                raise
        request.log(f"saved {request.output_tar} ({size} bytes), image {image_id}")
        return BuildResult(image_id=image_id, size=size, virtual_size=virtual,
                           meta={"storage_driver": self.storage_driver, "isolation": self.isolation})

    def _containers(self) -> Optional[set[str]]:
        """Ids of the store's working containers (None when they cannot be listed)."""
        try:
            res = self._quick("containers", "--quiet", "--notruncate")
        except BuildFailed:
            return None
        return {line.strip() for line in res.stdout if line.strip()} if res.returncode == 0 else None

    def _after_stop(self, before: Optional[set[str]], iidfile: Path, log) -> None:
        """After a cancelled or timed-out build: drop what it left in the store."""
        if iidfile.exists():  # it had finished after all: the image is not wanted
            try:
                self._quick("rmi", "--force", "--", _read_image_id(iidfile))
            except BuildFailed:
                pass
        after = self._containers()
        if before is None or after is None:
            return
        left = sorted(after - before)
        if not left:
            return
        with self._lock:
            alone = self._active == 1
        if not alone:
            log(f"warning: working containers possibly left by this build (other builds running, "
                f"not removed): {', '.join(c[:12] for c in left)}")
            return
        self._quick("rm", "--", *left)
        log(f"removed working containers left by the stopped build: {', '.join(c[:12] for c in left)}")

    def _virtual_size(self, image_id: str) -> int:
        """Sum of the image's uncompressed layer sizes (buildah stores layers uncompressed)."""
        res = self._quick("inspect", "--type", "image", "--format", "{{.Manifest}}", "--", image_id)
        try:
            manifest = json.loads("\n".join(res.stdout))
            return sum(int(layer.get("size", 0)) for layer in manifest.get("layers", []))
        except (ValueError, TypeError, AttributeError):
            return 0

    def remove_image(self, image_ref: str) -> None:
        try:
            res = self._quick("rmi", "--force", "--", normalize_ref(image_ref), capture=False)
        except BuildFailed as exc:
            raise ServiceUnavailable(f"cannot run buildah: {exc}") from None
        if res.returncode != 0:
            text = " ".join(res.tail).lower()
            if "image not known" in text or "no such image" in text or "not found" in text:
                return
            raise ServiceUnavailable(f"buildah rmi {image_ref} failed: {res.last_line()}")


def _reason(res: procrun.RunResult, what: str) -> str:
    line = res.last_line()
    return line.removeprefix("Error: ") if line else f"{what} failed with exit status {res.returncode}"


def _read_image_id(iidfile: Path) -> str:
    try:
        text = iidfile.read_text().strip()
    except OSError:
        raise BuildFailed("buildah did not report the image id") from None
    match = _IMAGE_ID.fullmatch(text)
    if not match:
        raise BuildFailed(f"buildah reported an unexpected image id {text!r}")
    return f"sha256:{match.group(1)}"


def _factory(settings) -> BuildahBuilder:
    b = settings.builder.buildah
    return BuildahBuilder(storage_driver=b.storage_driver, isolation=b.isolation,
                          root=str(settings.resolve(b.root)) if b.root else None,
                          runroot=str(settings.resolve(b.runroot)) if b.runroot else None)


@hookimpl
def xpresso_builders():
    return [BuilderInfo(name="buildah", description="buildah CLI (build, then push to docker-archive)",
                        factory=_factory, auto_priority=1)]
