"""The tree of one commit read straight from git, for a builder that streams its build context:
no checkout, no copy of the context written to disk and read back (figures:
benchmarks/README.md, builds)."""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from ...runtime.redact import redact
from ..sdk import procrun
from ..sdk.builder import BuildTimedOut
from .discovery import classify
from .git import GIT_CONFIG, Git, WorkspaceError, fail

__all__ = ["GitTree", "GitArchive", "unquote"]

_TREE_LINE = re.compile(r"([0-7]{6}) (\w+) ([0-9a-f]{40,64})\t(.+)")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_REGULAR = ("100644", "100755")
PIPE_BYTES = 1 << 20  # the archive's pipe: fewer, larger reads (Linux; the default is 64 KiB)


def unquote(path: str) -> str:
    """A path as git prints it with ``core.quotePath``: C-quoted (``"..."``, octal escapes for
    bytes) when it holds anything but printable ASCII."""
    if len(path) < 2 or path[0] != '"' or path[-1] != '"':
        return path
    body, out, i = path[1:-1], bytearray(), 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
        elif body[i + 1:i + 2] in _C_ESCAPES:
            out.append(_C_ESCAPES[body[i + 1]])
            i += 2
        else:
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
    return os.fsdecode(bytes(out))  # as os.walk would name it


class GitArchive:
    """``git archive`` of a tree: the tar on :attr:`stdout`. Like every git run it has a process
    group of its own, announced through ``on_start`` (a server taking the build over kills it);
    :meth:`kill` stops it from any thread (a cancel, the deadline), :meth:`finish` checks it
    ended well, :meth:`close` never leaves it running."""

    def __init__(self, cmd: Sequence[str], cwd: Path, env: Mapping[str, str],
                 on_start: Optional[Callable[[int], None]]):
        self._errors = tempfile.TemporaryFile()  # git's messages: read when it fails
        self._reaping = threading.Lock()  # a kill from another thread never meets a reaped pid
        try:
            self.proc = subprocess.Popen(list(cmd), cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=self._errors, start_new_session=True,
                                         close_fds=True)
        except OSError as exc:
            self._errors.close()
            raise WorkspaceError(f"cannot run git: {exc.strerror or exc}") from None
        self.stdout = self.proc.stdout
        try:
            import fcntl

            fcntl.fcntl(self.stdout.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
        except (ImportError, OSError):
            pass
        try:
            if on_start is not None:
                on_start(self.proc.pid)
        except BaseException:
            self.close()
            raise

    def kill(self) -> None:
        """End the group (git and anything it started). Until it is reaped (close), the leader's
        pid, and so the group id, cannot be reused: killing by group id stays safe."""
        with self._reaping:
            if self.proc.returncode is None:
                procrun.kill_group(self.proc.pid)

    def _reap(self) -> None:
        with self._reaping:
            self.proc.wait()

    def finish(self) -> None:
        """After the whole tar was read: wait for git and say why it failed, if it did."""
        try:  # exited, not reaped: strays left in its group are ended by close()
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        self.kill()
        self._reap()
        if self.proc.returncode != 0 and not self._errors.closed:
            self._errors.seek(0)
            lines = [ln.strip() for ln in self._errors.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            self.close()
            reason = redact(lines[-1]) if lines else f"exit status {self.proc.returncode}"
            raise WorkspaceError(f"git archive failed: {reason}")
        self.close()

    def close(self) -> None:
        self.kill()
        self._reap()
        self.stdout.close()
        self._errors.close()


class GitTree:
    """The tree of one commit in a clone that holds no checkout: what is in it (``git ls-tree``),
    a file's text (``git cat-file``), the whole tree as a tar (``git archive``). A builder that
    streams its context reads it from here instead of from a checked-out folder."""

    def __init__(self, git: Git, commit: str, entries: Mapping[str, str]):
        self._git, self.commit = git, commit
        self.entries = dict(entries)  # relative path -> git mode ("040000" a folder, "120000" a link...)

    @classmethod
    def load(cls, git: Git, commit: str) -> "GitTree":
        # quotePath forced: any byte of a path reaches us as ASCII (octal escapes), one per line.
        res = git("-c", "core.quotePath=true", "ls-tree", "-r", "-t", "--full-tree", commit,
                  capture=True, quiet=True)
        if res.returncode != 0:
            raise fail("git ls-tree", res)
        entries: dict[str, str] = {}
        for line in res.stdout:
            found = _TREE_LINE.fullmatch(line)
            if found is None:
                raise WorkspaceError(f"git ls-tree: cannot read {line[:200]!r}")
            entries[unquote(found.group(4))] = found.group(1)
        return cls(git, commit, entries)

    def unstreamable(self, dockerfile: str) -> Optional[str]:
        """Why this tree must be checked out after all (None: it may stream). ``git archive``
        writes what a checkout writes, except where export attributes apply or for submodules;
        an unusual Dockerfile or .dockerignore (a link, missing, outside) is left to the checkout
        and its usual checks."""
        if any(path.rsplit("/", 1)[-1] == ".gitattributes" for path in self.entries):
            return "it has .gitattributes (git archive honours export attributes, a checkout does not)"
        if any(mode == "160000" for mode in self.entries.values()):
            return "it has submodules"
        name = os.path.normpath(dockerfile)
        if self.entries.get(name) not in _REGULAR:
            return f"{dockerfile} is not a regular file in it"
        if self.entries.get(".dockerignore", "100644") not in _REGULAR:
            return ".dockerignore is not a regular file in it"
        return None

    def read_text(self, path: str) -> Optional[str]:
        """The text of a file at the tree's top (None when there is none), as a checkout has it."""
        if self.entries.get(path) not in _REGULAR:
            return None
        res = self._git("cat-file", "blob", f"{self.commit}:{path}", capture=True, quiet=True)
        if res.returncode != 0:
            raise fail("git cat-file", res)
        return "\n".join(res.stdout)

    def archive(self) -> GitArchive:
        """Start ``git archive`` of the tree. Given the tree (not the commit), git stamps files
        with the current time, as a checkout does, and modes follow the umask (``tar.umask=user``)
        as a checkout's do; owners are root (COPY makes them root anyway)."""
        git = self._git
        cmd = ["git", *(arg for item in GIT_CONFIG for arg in ("-c", item)), "-c", "tar.umask=user",
               "archive", "--format=tar", f"{self.commit}^{{tree}}"]
        if time.monotonic() >= git.deadline:
            raise BuildTimedOut("timed out")
        git.log(f"$ git archive --format=tar {self.commit}^{{tree}}")
        return GitArchive(cmd, git.cwd, git.env, git.on_start)

    def discover(self, jobs_glob: str, manifests_glob: str) -> tuple[list[str], list[str]]:
        """:func:`~xpresso_env.builds.workspace.discovery.discover` for the tree: what a checkout of it
        would list (files and links)."""
        return classify((path for path, mode in self.entries.items() if mode not in ("040000", "160000")),
                        jobs_glob, manifests_glob)
