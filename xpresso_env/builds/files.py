"""Where an image's files live (tar, log, workspace) and the rules for touching them.

Every path is derived from the configured roots and from values already validated (group
names, Docker names and tags, our own UUIDs), then checked to lie inside its root: a request
can never make the service read, write or remove anything outside ``images.nfs_root``,
``images.logs_root`` or ``images.workspace_root``.
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from uuid import UUID

from ..config import Settings
from ..core.errors import ValidationError
from .sdk.builder import PARTIAL_SUFFIX

log = logging.getLogger("xpresso_env.images")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return path != root


@dataclass(frozen=True)
class ImagePaths:
    nfs_root: Path
    logs_root: Path
    workspace_root: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> "ImagePaths":
        return cls(nfs_root=settings.resolve(settings.images.nfs_root).resolve(),
                   logs_root=settings.resolve(settings.images.logs_root).resolve(),
                   workspace_root=settings.resolve(settings.images.workspace_root).resolve())

    def nfs_path(self, group: str, name: str, tag: str) -> Path:
        """``<nfs_root>/<group>/<name>/<tag>.tar``; refused unless it resolves inside nfs_root
        (the grammar of the parts already excludes ``..`` and absolute paths; this also catches a
        symbolic link on disk that points elsewhere)."""
        path = self.nfs_root / group / name / f"{tag}.tar"
        if not _inside(path.resolve(), self.nfs_root) or not _inside(path, self.nfs_root):
            raise ValidationError.one("name", "The image path would lie outside images.nfs_root.")
        return path

    def in_nfs_root(self, path: str | Path) -> bool:
        p = Path(path)
        return p.is_absolute() and _inside(p.resolve(), self.nfs_root)

    def log_path(self, image_id: UUID | str) -> Path:
        return self.logs_root / f"{image_id}.log"

    def workspace(self, image_id: UUID | str, attempt: Optional[int] = None) -> Path:
        """``<workspace_root>/<image id>``: the folder of all attempts at a build; with
        ``attempt``, that attempt's own folder below it. An attempt never shares its folder: the
        git or builder processes of an interrupted one may still be writing into theirs."""
        folder = self.workspace_root / str(image_id)
        return folder if attempt is None else folder / str(attempt)


def remove_tar(paths: ImagePaths, nfs_path: str) -> bool:
    """Remove a published tar; True when a file was removed. A path outside nfs_root (a record
    written under another configuration) is never touched."""
    if not paths.in_nfs_root(nfs_path):
        log.warning("not removing %s: outside images.nfs_root %s", nfs_path, paths.nfs_root)
        return False
    try:
        os.unlink(nfs_path)
        return True
    except FileNotFoundError:
        return False


def _make_writable(func, path, _exc_info) -> None:
    # A git checkout can hold read-only files and folders: make them removable and retry.
    try:
        os.chmod(path, stat.S_IRWXU)
        parent = os.path.dirname(path)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
        func(path)
    except OSError:
        pass


def remove_tree(path: Path, root: Path) -> None:
    """Remove a folder inside ``root`` (a symbolic link is removed, never followed)."""
    path = Path(path)
    if not _inside(path, root):
        log.warning("not removing %s: outside %s", path, root)
        return
    if path.is_symlink():
        path.unlink()
        return
    if not path.exists():
        return
    if not _inside(path.resolve(), root):
        log.warning("not removing %s: it resolves outside %s", path, root)
        return
    shutil.rmtree(path, onerror=_make_writable)


def stale_partials(paths: ImagePaths, older_than_s: float, now: Optional[float] = None) -> list[Path]:
    """Partial tars left by a build whose process died (a live build finishes, fails or times out
    well within ``older_than_s``)."""
    now = time.time() if now is None else now
    found = []
    if not paths.nfs_root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(paths.nfs_root):
        for name in filenames:
            if name.startswith(".") and name.endswith(PARTIAL_SUFFIX):
                p = Path(dirpath, name)
                try:
                    if now - p.lstat().st_mtime > older_than_s:
                        found.append(p)
                except FileNotFoundError:
                    pass
    return found


def attempt_folders(folder: Path) -> list[tuple[int, Path]]:
    """The attempt folders (``<n>``) in an image's workspace folder, by attempt number."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    return sorted((int(sub.name), sub) for sub in folder.iterdir() if sub.name.isascii() and sub.name.isdigit())


def workspace_folders(paths: ImagePaths) -> dict[str, list[tuple[int, Path]]]:
    """The image workspace folders (named by image id), each with its attempt folders."""
    found: dict[str, list[tuple[int, Path]]] = {}
    if not paths.workspace_root.is_dir():
        return found
    for folder in paths.workspace_root.iterdir():
        try:
            UUID(folder.name)
        except ValueError:
            continue  # not one of ours
        found[folder.name] = attempt_folders(folder)
    return found
