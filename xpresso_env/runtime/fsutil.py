"""Durable file replacement: the one home of "temp file beside it, fsync, rename, fsync the folder".

A reader sees the old file or the whole new one, never a partial one, and a crash after the call
returns keeps the new one. Used for the YAML store, ``export`` and image tars.
"""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Optional

log = logging.getLogger("xpresso_env.fsutil")


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name in ``path``'s folder (same file system, so the rename is atomic). The
    name holds no ':' (buildah's ``docker-archive:`` transport splits on it)."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable. A failure is logged: the rename is done and visible,
    only its survival of a crash is in doubt."""
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        log.warning("cannot fsync the folder %s: %s", folder, exc)


def publish(tmp: Path, path: Path) -> os.stat_result:
    """fsync the finished ``tmp``, rename it over ``path`` and fsync the folder; returns its stat."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return st


def discard(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def atomic_write(path: Path, data: bytes, mode: Optional[int] = None) -> os.stat_result:
    """Replace ``path`` with ``data`` durably. ``mode`` defaults to the existing file's
    permissions (0666 less the umask for a new file). A missing folder raises FileNotFoundError
    naming ``path``, not the temp file."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(2, "No such folder", str(path.parent))
    tmp = temp_beside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            if mode is None:
                mode = os.stat(path).st_mode & 0o7777
            os.fchmod(fd, mode)
        except FileNotFoundError:
            pass
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        st = os.fstat(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        discard(tmp)
        raise
    fsync_dir(path.parent)
    return st
