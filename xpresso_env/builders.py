"""The builder protocol every image-builder plugin implements."""
from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, runtime_checkable


@dataclass(frozen=True)
class BuildRequest:
    context_dir: Path  # the checked-out workspace
    dockerfile: str  # relative to context_dir
    image_ref: str  # "<name>:<tag>"
    output_tar: Path  # final path; the builder writes a temp file beside it and os.replace()s it
    log: Callable[[str], None]  # append one line to the build log
    cancel: threading.Event  # set when the build must stop now
    timeout_s: float


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
    # factory(settings: xpresso_env.config.Settings) -> Builder
    factory: Callable[[Any], Builder]
    auto_priority: Optional[int] = None  # lower is tried first by `auto`; None: never chosen by auto


class BuildFailed(Exception):
    """The build ran and failed; the message is the one-line ``meta.error``."""


class BuildCancelled(BuildFailed):
    pass


class BuildTimedOut(BuildFailed):
    pass


# --------------------------------------------------------------------------- helpers for builders

def temp_path_for(output_tar: Path) -> Path:
    """A fresh temporary name beside ``output_tar`` (same file system, so os.replace is atomic).
    The name holds no ':' (buildah's ``docker-archive:`` transport splits on it)."""
    return output_tar.parent / f".{uuid.uuid4().hex}.tar.part"


def publish(tmp: Path, output_tar: Path) -> int:
    """fsync ``tmp``, rename it to ``output_tar`` atomically, fsync the folder; returns the size.
    A reader sees the old tar or the whole new one, never a partial one."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    os.replace(tmp, output_tar)
    dfd = os.open(output_tar.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return size


def discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- choosing a builder

def select_builder(pm: Any, settings: Any) -> Builder:
    """The builder ``builder.backend`` names, or for ``auto`` the available one with the lowest
    ``auto_priority`` (builders without one, like dry-run, are only ever chosen by name).

    :raises ConfigError: an unknown name, or a named builder that cannot be set up.
    :raises ServiceUnavailable: ``auto`` and no builder can build now (the reasons are listed).
    """
    from .errors import ConfigError, ServiceUnavailable
    from .plugin import builders

    found = builders(pm)
    name = settings.builder.backend
    if name != "auto":
        if name not in found:
            raise ConfigError(f"builder.backend: unknown builder {name!r}; installed: "
                              f"{', '.join(sorted(found)) or 'none'} (or auto)")
        return found[name].factory(settings)
    reasons: list[str] = []
    ranked = sorted((info for info in found.values() if info.auto_priority is not None),
                    key=lambda info: (info.auto_priority, info.name))
    for info in ranked:
        try:
            builder = info.factory(settings)
        except ConfigError as exc:
            reasons.append(f"{info.name}: {exc.detail}")
            continue
        reason = builder.available()
        if reason is None:
            return builder
        reasons.append(f"{info.name}: {reason}")
    raise ServiceUnavailable("no image builder available: " + ("; ".join(reasons) or "none installed"))


def dockerfile_path(request: BuildRequest) -> Path:
    """The request's Dockerfile, checked to exist inside the build context."""
    context = request.context_dir.resolve()
    path = (context / request.dockerfile).resolve()
    if context != path and context not in path.parents:
        raise BuildFailed(f"the Dockerfile {request.dockerfile!r} lies outside the build context")
    if not path.is_file():
        raise BuildFailed(f"no Dockerfile at {request.dockerfile!r} in the workspace")
    return path
