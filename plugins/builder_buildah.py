"""The ``buildah`` builder: ``buildah build`` then ``buildah push`` to a ``docker-archive:`` tar.

Every buildah call is an argument list run through :func:`xpresso_env.builds.sdk.procrun.run` in
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

A clean store: the image is built under a unique temporary tag and saved BY ITS ID to
``docker-archive:<tmp>:<name>:<tag>`` (the archive names it, whatever the store's tags say), so
two groups building the same ``name:tag`` at once never save each other's image. Only a build
that fully succeeded takes the tag ``<name>:<tag>``; the image it replaces is removed when no
other name keeps it. A failed build leaves nothing (no ``--layers``: no intermediate images; a
failed step's working container is removed by buildah); a stopped one is cleaned up as above.

Registry push: ``buildah push --authfile F --digestfile D <image id> docker://<host>/<ns>/<name>:<tag>``
with an authfile written for the push alone (mode 0600 in a private folder, removed after; the
password is never on a command line), ``--tls-verify=false`` for ``registry.insecure``. A cancel
stops the push like any other step.
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

from xpresso_env.builds.sdk import procrun
from xpresso_env.builds.sdk.builder import (
    BuildCancelled,
    Builder,
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
from xpresso_env.builds.sdk.push import PushTarget, authfile, push_url
from xpresso_env.core.errors import ServiceUnavailable
from xpresso_env.hookspecs import hookimpl

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


class BuildahBuilder(Builder):
    name = "buildah"
    streams_context = False  # buildah bud reads a folder: the workspace always checks out (builders.py)

    def __init__(self, storage_driver: str = "vfs", isolation: str = "chroot", root: Optional[str] = None,
                 runroot: Optional[str] = None, executable: str = "buildah",
                 stop_grace_s: float = STOP_GRACE_S, network: Optional[str] = None):
        self.storage_driver, self.isolation = storage_driver, isolation
        self.network = network
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

        temp = normalize_ref(temp_ref(request.image_ref))
        network = ["--network", self.network] if self.network else []
        image_id: Optional[str] = None
        pushed: Optional[str] = None
        done = False
        before = self._containers()
        with tempfile.TemporaryDirectory(prefix="xpresso-buildah-") as scratch:
            iidfile = Path(scratch, "iid")
            try:
                try:
                    res = step(["build", "--isolation", self.isolation, *network, "--format", "docker",
                                "--iidfile", str(iidfile), "-f", str(dockerfile), "-t", temp,
                                "--", str(request.context_dir)], gentle=True)
                except BuildFailed:
                    self._after_stop(before, iidfile, request.log)
                    raise
                if res.returncode != 0:
                    raise BuildFailed(_reason(res, "buildah build"))
                image_id = _read_image_id(iidfile)
                request.log(f"saving {request.image_ref} to {request.output_tar}")
                # Relative archive path: the transport splits on ':', which the folder may hold.
                # Pushed by id under the final name: the temporary tag never reaches the tar.
                res = step(["push", "--quiet", image_id, f"docker-archive:{tmp.name}:{ref}"],
                           cwd=tmp.parent)
                if res.returncode != 0:
                    raise BuildFailed(_reason(res, "buildah push"))
                if request.push is not None:
                    check_registry(request, deadline)
                    pushed = self._push(request, request.push, image_id, Path(scratch), step)
                if request.cancel.is_set():
                    raise BuildCancelled("cancelled")
                virtual = self._virtual_size(image_id)
                size = publish(tmp, request.output_tar)
                done = True
            except BaseException:
                discard(tmp)
                raise
            finally:
                self._tidy(request, temp, ref, image_id if done else None)
        request.log(f"saved {request.output_tar} ({size} bytes), image {image_id}")
        meta = {"storage_driver": self.storage_driver, "isolation": self.isolation}
        if self.network:
            meta["network"] = self.network
        return BuildResult(image_id=image_id, size=size, virtual_size=virtual, meta=meta, push_url=pushed)

    def _push(self, request: BuildRequest, target: PushTarget, image_id: str, scratch: Path, step) -> str:
        request.log(f"pushing {request.image_ref} to {target.ref}")
        digestfile = scratch / "digest"
        with authfile(target) as auth:
            args = ["push", "--quiet", "--retry", "0", "--digestfile", str(digestfile)]
            if auth is not None:
                args += ["--authfile", str(auth)]
            if target.insecure:
                args.append("--tls-verify=false")
            res = step([*args, image_id, f"docker://{target.ref}"])
        if res.returncode != 0:
            raise BuildFailed(_push_reason(res))
        try:
            digest = digestfile.read_text().strip()
        except OSError:
            digest = ""
        if not _DIGEST.fullmatch(digest):
            raise BuildFailed(f"push failed: buildah reported no digest for {target.ref}")
        url = push_url(target, digest)
        request.log(f"pushed {url}")
        return url

    def _tidy(self, request: BuildRequest, temp: str, ref: str, kept: Optional[str]) -> None:
        """A successful build (``kept``) takes ``ref`` and drops the image it replaces if no
        other name keeps it; every build drops its temporary tag (the image with it, when that
        was its only name)."""
        try:
            if kept is not None:
                previous = self._image_id(ref)
                res = self._quick("tag", kept, ref)
                if res.returncode != 0:
                    request.log(f"warning: buildah tag {ref} failed: {res.last_line()}")
                elif previous and previous != kept and not self._names(previous):
                    self._quick("rmi", "--", previous)
            self._quick("rmi", "--", temp)
        except BuildFailed as exc:
            request.log(f"warning: cleaning the buildah store: {exc}")

    def _image_id(self, ref: str) -> Optional[str]:
        res = self._quick("inspect", "--type", "image", "--format", "{{.FromImageID}}", "--", ref)
        found = _IMAGE_ID.fullmatch(res.stdout[0].strip()) if res.returncode == 0 and res.stdout else None
        return f"sha256:{found.group(1)}" if found else None

    def _names(self, image_id: str) -> Optional[list[str]]:
        """The names of an image (None: it could not be looked up, so treat it as named)."""
        res = self._quick("images", "--json", "--all", "--no-trunc")
        if res.returncode != 0:
            return None
        try:
            for item in json.loads("\n".join(res.stdout)) or []:
                if str(item.get("id", "")).removeprefix("sha256:") == image_id.removeprefix("sha256:"):
                    return list(item.get("names") or [])
        except (ValueError, AttributeError):
            return None
        return []

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

    def remove_stale(self, older_than_s: float) -> list[str]:
        try:
            res = self._quick("images", "--json", "--no-trunc")
        except BuildFailed as exc:
            raise ServiceUnavailable(f"cannot run buildah: {exc}") from None
        try:
            names = [n for item in (json.loads("\n".join(res.stdout)) or []) for n in (item.get("names") or [])]
        except (ValueError, AttributeError):
            return []
        removed = []
        for name in names:
            if stale_temp_tag(name, older_than_s) and self._quick("rmi", "--", name).returncode == 0:
                removed.append(name)
        return removed

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


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _push_reason(res: procrun.RunResult) -> str:
    text = " ".join(res.tail).lower()
    line = _reason(res, "buildah push")
    if "unauthorized" in text or "authentication required" in text or " 401" in text:
        return f"push refused: 401 {line}"
    if "denied" in text or " 403" in text:
        return f"push refused: 403 {line}"
    return f"push failed: {line}"


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
    return BuildahBuilder(storage_driver=b.storage_driver, isolation=b.isolation, network=b.network,
                          root=str(settings.resolve(b.root)) if b.root else None,
                          runroot=str(settings.resolve(b.runroot)) if b.runroot else None)


@hookimpl
def xpresso_builders():
    return [BuilderInfo(name="buildah", description="buildah CLI (build, then push to docker-archive)",
                        factory=_factory, auto_priority=1)]
