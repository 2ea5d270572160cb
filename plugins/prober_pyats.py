"""The ``pyats-files`` prober: is a harness's ``path`` an installation the engines can use?

* ``harness: pyATS``: ``<path>/bin/python`` exists and is executable, and a
  ``pyats-<version>.dist-info`` folder is found under ``<path>/lib/python3*/site-packages/``.
  ONLINE needs pyATS >= 19.5; ``support_liveview`` is set when it is >= 20.12.
* ``harness: Tcl-ATS``: the path is an existing folder.

Files only: no process is started, nothing is imported, and no file is opened (the version is
the dist-info folder's name), so a FIFO or a device where a file should be cannot block a probe.
Everything is looked at from the given path down: ``path`` itself may be a link (sites mount
installations under aliases), but a ``bin``, ``lib``, ``python3*``, ``site-packages`` or
dist-info link that leads out of it is not followed. The one exception is ``bin/python``, which in
every venv is a link to the interpreter the venv was made from: it is stat()ed (exists, is a
regular file, executable), never read. A symbolic-link loop anywhere is a failure that says so.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import time

from xpresso_env.hookspecs import hookimpl
from xpresso_env.probes.protocol import ProbeResult, ProberInfo, ProbeTarget, parse_version, version_text

MIN_VERSION = (19, 5)
LIVEVIEW_VERSION = (20, 12)
MAX_ENTRIES = 100_000  # entries looked at in one folder: a huge site-packages is not a reason to hang
_DIST_INFO = re.compile(r"^pyats-(.+)\.dist-info$", re.IGNORECASE)
_PYTHON_DIR = re.compile(r"^python3(\.\d+)?$")


class _Failed(Exception):
    pass


def _why(exc: OSError, what: str) -> str:
    if exc.errno == errno.ELOOP:
        return f"{what}: symbolic link loop"
    if exc.errno == errno.ENOENT:
        return f"{what}: does not exist"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{what}: permission denied"
    if exc.errno == errno.ENOTDIR:
        return f"{what}: a part of the path is not a folder"
    return f"{what}: {exc.strerror or exc}"


class _Walk:
    """Looks inside one installation root, within a deadline."""

    def __init__(self, path: str, timeout_s: float):
        self.given = path
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.root = ""

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Failed(f"timed out after {self.timeout_s:g} s")

    def folder(self) -> None:
        """The given path is an existing folder (following the path's own links)."""
        try:
            st = os.stat(self.given)
        except OSError as exc:
            raise _Failed(_why(exc, self.given)) from None
        if not stat.S_ISDIR(st.st_mode):
            raise _Failed(f"{self.given} is not a folder")
        self.root = os.path.realpath(self.given)

    def inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)

    def subfolder(self, path: str, shown: str) -> bool:
        """True when ``path`` is a folder that stays inside the root."""
        self.check_time()
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Failed(_why(exc, shown)) from None
            return False
        return stat.S_ISDIR(st.st_mode) and self.inside(path)

    def entries(self, path: str) -> list[str]:
        self.check_time()
        names: list[str] = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    names.append(entry.name)
                    if len(names) >= MAX_ENTRIES:
                        break
        except OSError:
            return []
        return sorted(names)

    def python(self) -> None:
        self.check_time()
        shown = "bin/python"
        if not self.subfolder(os.path.join(self.root, "bin"), "bin"):
            raise _Failed("no bin/ folder in the installation")
        path = os.path.join(self.root, "bin", "python")
        try:
            st = os.stat(path)  # a venv's bin/python links to its base interpreter: stat only
        except OSError as exc:
            raise _Failed(_why(exc, shown)) from None
        if not stat.S_ISREG(st.st_mode):
            raise _Failed(f"{shown} is not a regular file")
        if not st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) or not os.access(path, os.X_OK):
            raise _Failed(f"{shown} is not executable")

    def pyats_version(self) -> tuple[tuple[int, ...], str]:
        lib = os.path.join(self.root, "lib")
        if not self.subfolder(lib, "lib"):
            raise _Failed("no lib/ folder in the installation")
        found: list[tuple[tuple[int, ...], str]] = []
        broken: list[str] = []
        site_seen = False
        for name in self.entries(lib):
            if not _PYTHON_DIR.match(name):
                continue
            site = os.path.join(lib, name, "site-packages")
            if not (self.subfolder(os.path.join(lib, name), f"lib/{name}")
                    and self.subfolder(site, f"lib/{name}/site-packages")):
                continue
            site_seen = True
            for entry in self.entries(site):
                m = _DIST_INFO.match(entry)
                if m is None or not self.subfolder(os.path.join(site, entry), f"lib/{name}/site-packages/{entry}"):
                    continue
                version = parse_version(m.group(1))
                if version is None:
                    broken.append(entry)
                else:
                    found.append((version, m.group(1)))
        if not site_seen:
            raise _Failed("no lib/python3*/site-packages folder in the installation")
        if not found:
            if broken:
                raise _Failed(f"broken pyATS installation: no version in {broken[0]}")
            raise _Failed("pyATS is not installed (no pyats-*.dist-info in site-packages)")
        return max(found)


class PyatsProber:
    name = "pyats-files"

    def probe(self, target: ProbeTarget) -> ProbeResult:
        path = str(target.record.get("path") or "")
        if not os.path.isabs(path):
            return ProbeResult(ok=False, detail="the path is not absolute")
        walk = _Walk(path, target.timeout_s)
        try:
            walk.folder()
            if target.type != "pyATS":
                return ProbeResult(ok=True, detail=f"{target.type} folder found")
            walk.python()
            version, text = walk.pyats_version()
            walk.check_time()
        except _Failed as exc:
            return ProbeResult(ok=False, detail=str(exc))
        shown = text[:40]
        if version < MIN_VERSION:
            return ProbeResult(ok=False, detail=f"pyATS {shown} is older than {version_text(MIN_VERSION)}",
                               version=shown)
        return ProbeResult(ok=True, detail=f"pyATS {shown}", version=shown,
                           fields={"support_liveview": version >= LIVEVIEW_VERSION})


@hookimpl
def xpresso_probers():
    return [ProberInfo(name="pyats-files", kind="harness", types=("pyATS", "Tcl-ATS"),
                       description="pyATS: bin/python and a pyats-<version>.dist-info (>= 19.5); "
                                   "Tcl-ATS: the path is a folder",
                       factory=lambda settings: PyatsProber())]
