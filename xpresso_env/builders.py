"""The builder protocol every image-builder plugin implements."""
from __future__ import annotations

import threading
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
