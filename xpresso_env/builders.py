"""The builder protocol every image-builder plugin implements, the helpers builders share (the
tar's temporary name and its durable publication, over :mod:`xpresso_env.fsutil`), and the
choice of a builder by ``builder.backend``."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol, runtime_checkable

from .errors import ConfigError
from .fsutil import discard, temp_beside
from .fsutil import publish as fsutil_publish

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["BuildRequest", "BuildResult", "Builder", "BuilderInfo", "BuilderChoice", "BuildFailed",
           "BuildCancelled", "BuildTimedOut", "PARTIAL_SUFFIX", "temp_path_for", "publish", "discard",
           "select_builder", "dockerfile_path"]


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


@dataclass(frozen=True)
class BuildResult:
    image_id: str  # "sha256:..." for real builders; dry-run uses another prefix
    size: int  # bytes of the tar at output_tar
    virtual_size: int
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Builder(Protocol):
    name: str

    def available(self) -> Optional[str]:
        """None when the builder can build now, else a one-line reason (daemon unreachable...)."""

    def build(self, request: BuildRequest) -> BuildResult:
        """Build and save the image; raise BuildFailed / BuildCancelled / BuildTimedOut."""

    def remove_image(self, image_ref: str) -> None:
        """Remove the builder's copy of the image; a missing image is not an error."""


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

# The suffix of a tar being written; the retention sweep removes the ones a killed build left.
PARTIAL_SUFFIX = ".tar.part"


def temp_path_for(output_tar: Path) -> Path:
    """A fresh temporary name beside ``output_tar``, for :func:`publish` to rename."""
    return temp_beside(output_tar, PARTIAL_SUFFIX)


def publish(tmp: Path, output_tar: Path) -> int:
    """Durably replace ``output_tar`` with the finished ``tmp`` (:func:`xpresso_env.fsutil.publish`);
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
