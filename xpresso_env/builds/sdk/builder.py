"""The builder protocol every image-builder plugin implements, the helpers builders share (the
tar's temporary name and its durable publication, over :mod:`xpresso_env.runtime.fsutil`), and the
choice of a builder by ``builder.backend``."""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol, runtime_checkable

from ...core.errors import ConfigError
from ...runtime.fsutil import discard, temp_beside
from ...runtime.fsutil import publish as fsutil_publish
from .push import PushTarget, preflight

if TYPE_CHECKING:
    from ...config import Settings

__all__ = ["BuildRequest", "BuildResult", "Builder", "BuilderInfo", "BuilderChoice", "BuildFailed",
           "BuildCancelled", "BuildTimedOut", "PARTIAL_SUFFIX", "temp_path_for", "publish", "discard",
           "select_builder", "dockerfile_path", "PushTarget", "check_registry", "temp_ref", "stale_temp_tag", "TEMP_TAG_PREFIX"]


def _no_group(pid: int) -> None:
    pass


@dataclass(frozen=True)
class BuildRequest:
    context_dir: Path  # the checked-out workspace
    dockerfile: str  # relative to context_dir
    image_ref: str  # "<name>:<tag>"
    output_tar: Path  # final path; the builder writes a temp file beside it and os.replace()s it
    log: Callable[[str], None]  # append one line to the build log
    cancel: threading.Event  # set when the build must stop now
    timeout_s: float
    # Call with the pid of each process-group leader the build starts (procrun.run(...,
    # on_start=request.started) does it): a server that takes the build over after a crash of
    # this one ends those groups before it builds again.
    started: Callable[[int], None] = _no_group
    # With registry.url set: where the image goes. The builder pushes it after the tar is
    # written and BEFORE publishing the tar, so a refused push leaves the old tar in place.
    push: Optional[PushTarget] = None
    # Only for a builder that declares ``streams_context = True`` (the docker one): when set,
    # nothing is checked out (context_dir holds the clone's .git only) and the context is this
    # tree (builds/workspace.GitTree: ``entries``, ``read_text(path)``, ``archive()`` a
    # ``git archive`` tar whose process group goes through ``started`` like any git run). The
    # Dockerfile was checked to be a regular file inside it. Other builders always get a checkout.
    git_tree: Optional[Any] = None


@dataclass(frozen=True)
class BuildResult:
    image_id: str  # "sha256:..." for real builders; dry-run uses another prefix
    size: int  # bytes of the tar at output_tar
    virtual_size: int
    meta: dict[str, Any] = field(default_factory=dict)
    # The pinned reference the registry reported (``host/ns/name:tag@sha256:...``); None: not pushed.
    push_url: Optional[str] = None


@runtime_checkable
class Builder(Protocol):
    """What the service asks of a builder. A builder class derives from it (``class
    MyBuilder(Builder)``): it then inherits the defaults of the optional abilities below
    (``streams_context``, ``remove_stale``) and declares the ones it has by overriding them, so
    the service asks each builder directly instead of probing for attributes."""

    name: str
    # Optional ability: True when build() can take ``request.git_tree`` instead of a checked-out
    # context_dir; the build queue then skips the checkout when it can.
    streams_context: bool = False

    def available(self) -> Optional[str]:
        """None when the builder can build now, else a one-line reason (daemon unreachable...)."""

    def build(self, request: BuildRequest) -> BuildResult:
        """Build and save the image (and push it when ``request.push`` is set, before the tar is
        published); raise BuildFailed / BuildCancelled / BuildTimedOut. The image is built under
        a temporary tag (:func:`temp_ref`) and tagged ``image_ref`` at the end; a failed or
        cancelled build leaves no image, intermediate layer or working container behind."""

    def remove_image(self, image_ref: str) -> None:
        """Remove the builder's copy of the image; a missing image is not an error."""

    def remove_stale(self, older_than_s: float) -> list[str]:
        """Optional ability: remove the temporary tags (and the images only they kept) that
        builds killed with their server left, made more than ``older_than_s`` ago; returns them.
        The retention sweep calls it; the default, for a builder that keeps no such tags, removes
        nothing."""
        return []


@dataclass(frozen=True)
class BuilderInfo:
    """What a builder plugin announces through ``xpresso_builders``."""

    name: str
    description: str
    factory: Callable[["Settings"], Builder]
    auto_priority: Optional[int] = None  # lower is tried first by `auto`; None: never chosen by auto


class BuildFailed(Exception):
    """The build ran and failed; the message is the one-line ``meta.error``."""


class BuildCancelled(BuildFailed):
    pass


class BuildTimedOut(BuildFailed):
    pass


# --------------------------------------------------------------------------- helpers for builders

# Builds run under a unique temporary tag, re-tagged ``name:tag`` at the end: two groups building
# the same name:tag at once never see each other's image.
TEMP_TAG_PREFIX = "xpresso-build-"


def temp_ref(image_ref: str, now: Optional[float] = None) -> str:
    """``<name>:xpresso-build-<unix time, hex>-<16 hex>``: a tag nobody else uses, which says
    when it was made (:func:`stale_temp_tag` finds those a killed build left)."""
    name = image_ref.rsplit(":", 1)[0]
    stamp = int(time.time() if now is None else now)
    return f"{name}:{TEMP_TAG_PREFIX}{stamp:x}-{uuid.uuid4().hex[:16]}"


def stale_temp_tag(ref: str, older_than_s: float, now: Optional[float] = None) -> bool:
    """True for a temporary tag (:func:`temp_ref`) made more than ``older_than_s`` ago: no live
    build still uses it (a build ends within ``builds.timeout_s``)."""
    tag = ref.rsplit(":", 1)[-1] if ":" in ref.rsplit("/", 1)[-1] else ""
    if not tag.startswith(TEMP_TAG_PREFIX):
        return False
    stamp, _, rest = tag[len(TEMP_TAG_PREFIX):].partition("-")
    try:
        made = int(stamp, 16)
    except ValueError:
        return False
    return bool(rest) and (time.time() if now is None else now) - made > older_than_s


def check_registry(request: BuildRequest, deadline: float) -> None:
    """The pre-flight check of ``request.push``'s registry (credentials, reachability), made
    before anything is pushed; raises the build's exceptions with a one-line reason."""
    if request.push is None:
        return
    request.log(f"registry {request.push.registry}: checking access"
                + (f" as {request.push.username}" if request.push.username else " (anonymous)"))
    reason = preflight(request.push, request.cancel, deadline)
    if reason == "cancelled":
        raise BuildCancelled("cancelled")
    if reason == "timed out":
        raise BuildTimedOut("timed out")
    if reason is not None:
        request.log(reason)
        raise BuildFailed(reason)


# The suffix of a tar being written; the retention sweep removes the ones a killed build left.
PARTIAL_SUFFIX = ".tar.part"


def temp_path_for(output_tar: Path) -> Path:
    """A fresh temporary name beside ``output_tar``, for :func:`publish` to rename."""
    return temp_beside(output_tar, PARTIAL_SUFFIX)


def publish(tmp: Path, output_tar: Path) -> int:
    """Durably replace ``output_tar`` with the finished ``tmp`` (:func:`xpresso_env.runtime.fsutil.publish`);
    returns the tar's size. A reader sees the old tar or the whole new one, never a partial one."""
    return fsutil_publish(tmp, output_tar).st_size


# --------------------------------------------------------------------------- choosing a builder

@dataclass(frozen=True)
class BuilderChoice:
    """What ``builder.backend`` gave: the builder (None when ``auto`` found none that can build)
    and, for ``auto``, each builder it passed over with the reason."""

    builder: Optional[Builder]
    skipped: Mapping[str, str]


def select_builder(infos: Mapping[str, BuilderInfo], settings: "Settings") -> BuilderChoice:
    """The builder ``builder.backend`` names, or for ``auto`` the available one with the lowest
    ``auto_priority`` (builders without one, like dry-run, are only ever chosen by name).

    :param infos: the installed builders by name (``xpresso_env.plugin.builders(pm)``).
    :param settings: what the factories are given.
    :raises ConfigError: an unknown name, or a named builder that cannot be set up.
    """
    name = settings.builder.backend
    if name != "auto":
        if name not in infos:
            raise ConfigError(f"builder.backend: unknown builder {name!r}; installed: "
                              f"{', '.join(sorted(infos)) or 'none'} (or auto)")
        return BuilderChoice(infos[name].factory(settings), {})
    skipped: dict[str, str] = {}
    ranked = sorted((info for info in infos.values() if info.auto_priority is not None),
                    key=lambda info: (info.auto_priority, info.name))
    for info in ranked:
        try:
            builder = info.factory(settings)
        except ConfigError as exc:
            skipped[info.name] = exc.detail
            continue
        reason = builder.available()
        if reason is None:
            return BuilderChoice(builder, skipped)
        skipped[info.name] = reason
    return BuilderChoice(None, skipped)


def dockerfile_path(request: BuildRequest) -> Path:
    """The request's Dockerfile, checked to exist inside the build context."""
    context = request.context_dir.resolve()
    path = (context / request.dockerfile).resolve()
    if context != path and context not in path.parents:
        raise BuildFailed(f"the Dockerfile {request.dockerfile!r} lies outside the build context")
    if not path.is_file():
        raise BuildFailed(f"no Dockerfile at {request.dockerfile!r} in the workspace")
    return path
