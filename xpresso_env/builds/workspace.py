"""The build workspace: clone the Polaris repository, check out a ref, merge a base ref, find files.

Everything a client sends reaches git only as a checked ref name (:func:`validate_ref`), inside an
argument list, after ``--end-of-options``; git runs without prompts, hooks or templates, in its
own process group (:mod:`xpresso_env.builds.sdk.procrun`) so a cancel or a timeout stops it.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Optional, Sequence

from ..core.errors import ValidationError
from ..runtime.redact import redact
from .sdk import procrun
from .sdk.builder import BuildFailed, BuildTimedOut

Log = Callable[[str], None]
MergeResult = Literal["none", "fast-forward", "merged"]

MAX_REF_LEN = 255
# The identity of the merge commits the service makes (never a user's).
COMMITTER_NAME = "xpresso-env"
COMMITTER_EMAIL = "xpresso-env@localhost"

_HEX_ID = re.compile(r"[0-9a-fA-F]{7,40}")
_FULL_ID = re.compile(r"[0-9a-f]{40}")
# Git's refname_disposition: control characters, space and ~ ^ : ? [ \ DEL are never allowed;
# '*' only in refspec patterns (which refs here are not).
_BAD_REF_CHARS = frozenset([chr(c) for c in range(0x20)] + [" ", "~", "^", ":", "?", "[", "\\", "*", "\x7f"])
_REVISION_HINT = "Revision expressions (~, ^, @{, .., :) are not allowed."


class WorkspaceError(BuildFailed):
    """The workspace cannot be made: unknown ref, merge conflict, clone failure."""


@dataclass(frozen=True)
class WorkspaceResult:
    commit: str  # what git_ref resolved to
    base_commit: Optional[str]  # what base_ref resolved to (None without base_ref)
    merged_commit: Optional[str]  # HEAD after the merge, when it moved (None: no merge, or nothing to merge)
    merge: MergeResult
    # Set when prepare() was asked not to check out (``stream_dockerfile``) and could avoid it:
    # the build context is this tree, read from git, and the workspace holds only ``.git``.
    tree: Optional["GitTree"] = field(default=None, compare=False)

    @property
    def head(self) -> str:
        """The commit the workspace holds."""
        return self.merged_commit or self.commit

    def as_meta(self) -> dict[str, Any]:
        return {"commit": self.commit, "base_commit": self.base_commit,
                "merged_commit": self.merged_commit, "merge": self.merge}


# --------------------------------------------------------------------------- ref names

def check_ref_format(name: str) -> bool:
    """``git check-ref-format --allow-onelevel <name>``, in Python (refs.c's rules)."""
    if name == "@" or name == "":
        return False
    components = name.split("/")
    for comp in components:
        if comp == "" or comp.startswith(".") or comp.endswith(".lock"):
            return False
    if name.endswith(".") or ".." in name or "@{" in name:
        return False
    return not any(ch in _BAD_REF_CHARS for ch in name)


def validate_ref(field: str, value: Any) -> str:
    """Accept a ref name git's check-ref-format allows (one level allowed) or a 7-40 digit hex
    commit id; refuse anything that could be read as an option or a revision expression.

    :raises ValidationError: with a message for ``field``.
    """
    if not isinstance(value, str):
        raise ValidationError.one(field, "Not a valid string.")
    if value == "":
        raise ValidationError.one(field, "This field may not be blank.")
    if len(value) > MAX_REF_LEN:
        raise ValidationError.one(field, f"Ensure this field has no more than {MAX_REF_LEN} characters.")
    if value.startswith("-"):
        raise ValidationError.one(field, "A git ref may not start with '-'.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError.one(field, "Not a valid git ref or commit id.") from None
    if _HEX_ID.fullmatch(value):
        return value
    if not check_ref_format(value):
        if any(s in value for s in ("~", "^", "@{", "..", ":")):
            raise ValidationError.one(field, f"Not a valid git ref or commit id. {_REVISION_HINT}")
        raise ValidationError.one(field, "Not a valid git ref or commit id.")
    return value


# --------------------------------------------------------------------------- git plumbing

# Kept from the server's environment: how to reach the repository. Every other GIT_* variable
# (GIT_DIR, GIT_WORK_TREE, GIT_CONFIG_PARAMETERS...) would redirect or reconfigure our git calls.
_KEEP_GIT_ENV = {"GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH",
                 "GIT_PROXY_COMMAND", "GIT_HTTP_USER_AGENT"}
# Applied to every git call: no hooks (the repository's or a global core.hooksPath), no
# background maintenance left running, no fsmonitor daemon.
_GIT_CONFIG = ("core.hooksPath=/dev/null", "gc.auto=0", "maintenance.auto=false",
               "core.fsmonitor=false", "advice.detachedHead=false",
               f"user.name={COMMITTER_NAME}", f"user.email={COMMITTER_EMAIL}")


def git_env(base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    src = os.environ if base is None else base
    env = {k: v for k, v in src.items() if not k.startswith("GIT_") or k in _KEEP_GIT_ENV}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true",
                "LC_ALL": "C", "LANG": "C"})
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


class _Git:
    def __init__(self, cwd: Optional[Path], log: Log, cancel: threading.Event, deadline: float,
                 env: Mapping[str, str], on_start: Optional[Callable[[int], None]]):
        self.cwd, self.log, self.cancel = cwd, log, cancel
        self.deadline, self.env, self.on_start = deadline, env, on_start

    def __call__(self, *args: str, capture: bool = False, quiet: bool = False,
                 env: Optional[Mapping[str, str]] = None) -> procrun.RunResult:
        cmd = ["git"]
        for item in _GIT_CONFIG:
            cmd += ["-c", item]
        cmd += list(args)
        if not quiet:
            self.log("$ " + redact(" ".join(shlex.quote(a) for a in ["git", *args])))
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise BuildTimedOut("timed out")
        sink = (lambda line: None) if quiet else (lambda line: self.log(redact(line)))
        # Quiet calls are quick read-only queries (rev-parse, for-each-ref, ls-tree...): they are
        # not recorded in the claim (two storage writes each, on the build's critical path); a
        # killed server's leftover one ends on its own in moments and writes nothing.
        return procrun.run(cmd, sink, self.cancel, remaining, cwd=self.cwd,
                           env={**self.env, **(env or {})}, capture_stdout=capture,
                           on_start=None if quiet else self.on_start)

    def resolve(self, name: str) -> Optional[str]:
        """The commit id ``name`` names, or None."""
        res = self("rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}",
                   capture=True, quiet=True)
        out = [line.strip() for line in res.stdout if line.strip()]
        if res.returncode == 0 and out and _FULL_ID.fullmatch(out[-1]):
            return out[-1]
        return None


def _candidates(ref: str) -> list[str]:
    """Where a ref may live in a fresh clone, in the order a user means it: a branch of the
    repository (now origin/<ref>), a tag, a full ref name, a commit id."""
    out = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"]
    if ref.startswith("refs/heads/"):
        out.append("refs/remotes/origin/" + ref[len("refs/heads/"):])
    elif ref.startswith("refs/"):
        out.append(ref)
    if _HEX_ID.fullmatch(ref):
        out.append(ref)
    return out


# Ref names hold no spaces (check_ref_format), so a space separates the fields safely.
_REF_FORMAT = "--format=%(refname) %(objecttype) %(objectname) %(*objecttype) %(*objectname)"


def _lookup_refs(git: _Git, names: Sequence[str]) -> dict[str, Optional[str]]:
    """Every candidate ref name in ONE ``git for-each-ref`` (a process per candidate costs more
    than the lookup): name -> the commit it names, or None when only git can peel it (a tag of a
    tag). Names that do not exist, or that name no commit (a tag of a tree), are left out, as
    ``rev-parse <name>^{commit}`` would refuse them."""
    if not names:
        return {}
    res = git("for-each-ref", _REF_FORMAT, "--end-of-options", *names, capture=True, quiet=True)
    if res.returncode != 0:
        raise _fail("git for-each-ref", res)
    wanted = set(names)
    found: dict[str, Optional[str]] = {}
    for line in res.stdout:
        fields = line.split(" ")
        if len(fields) != 5 or fields[0] not in wanted:  # a pattern also matches refs below it
            continue
        name, kind, oid, peeled_kind, peeled = fields
        if kind == "commit" and _FULL_ID.fullmatch(oid):
            found[name] = oid
        elif kind == "tag" and peeled_kind == "commit" and _FULL_ID.fullmatch(peeled):
            found[name] = peeled
        elif kind == "tag" and peeled_kind == "tag":
            found[name] = None
    return found


def _resolve_refs(git: _Git, refs: Sequence[str]) -> list[str]:
    """The commit each ref names (candidates in :func:`_candidates` order). One git call looks
    up the ref names of all of them; ``rev-parse`` runs only for commit ids and nested tags."""
    names = [c for ref in refs for c in _candidates(ref) if c.startswith("refs/")]
    found = _lookup_refs(git, list(dict.fromkeys(names)))
    commits = []
    for ref in refs:
        commit: Optional[str] = None
        for candidate in _candidates(ref):
            if not candidate.startswith("refs/"):
                commit = git.resolve(candidate)  # a commit id, full or abbreviated
            elif candidate in found:
                commit = found[candidate] or git.resolve(candidate)
            if commit:
                break
        if not commit:
            raise WorkspaceError(f"unknown ref: {ref}")
        git.log(f"{ref} -> {commit}")
        commits.append(commit)
    return commits


def _fail(what: str, res: procrun.RunResult) -> WorkspaceError:
    reason = redact(res.last_line()) or f"exit status {res.returncode}"
    return WorkspaceError(f"{what} failed: {reason}")


def prepare(repo: str, git_ref: str, base_ref: Optional[str], dest: Path, log: Log,
            cancel: threading.Event, timeout_s: float,
            on_start: Optional[Callable[[int], None]] = None,
            stream_dockerfile: Optional[str] = None) -> WorkspaceResult:
    """Clone ``repo`` into ``dest`` (which must not exist or be empty), check out ``git_ref``
    detached and, with ``base_ref``, merge it in (3-way). ``on_start`` gets the process group
    of each git run (:func:`procrun.run`).

    With ``stream_dockerfile`` (the Dockerfile's path; for a builder that reads its context as
    a tar stream), nothing is checked out when no merge is needed and the tree allows it
    (:meth:`GitTree.unstreamable`): the result's ``tree`` is then the context, read from git by
    ``git archive`` while the build uploads it (no 50 MB written to disk and read back; figures
    in benchmarks/README.md, builds).

    :raises WorkspaceError: unknown ref, merge conflict, clone failure.
    :raises BuildCancelled: ``cancel`` was set (the running git is killed).
    :raises BuildTimedOut: the whole preparation took longer than ``timeout_s``.
    """
    # The service validates refs when a build is submitted; checking again here keeps a ref that
    # came another way (a stored record, a restart) from ever reaching git as an option.
    for field, ref in (("git_ref", git_ref), ("base_ref", base_ref)):
        if ref is not None:
            try:
                validate_ref(field, ref)
            except ValidationError as exc:
                raise WorkspaceError(f"invalid {field}: {ref!r}: {' '.join(exc.fields[field])}") from None

    env = git_env()
    deadline = time.monotonic() + timeout_s
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    clone = _Git(dest.parent, log, cancel, deadline, env, on_start)
    res = clone("clone", "--no-checkout", "--template=", "--", repo, str(dest))
    if res.returncode != 0:
        raise _fail("git clone", res)

    git = _Git(dest, log, cancel, deadline, env, on_start)
    # Both refs in one lookup, before the checkout: an unknown base_ref fails without one.
    commit, *rest = _resolve_refs(git, [git_ref] if base_ref is None else [git_ref, base_ref])
    base_commit: Optional[str] = rest[0] if rest else None
    contained = False
    if base_ref is not None and base_commit is not None:
        # Asked before the checkout (it needs none): with nothing to merge, the tree may stream.
        contained = _is_ancestor(git, base_commit, commit)
    tree: Optional[GitTree] = None
    if stream_dockerfile is not None and (base_commit is None or contained):
        tree = GitTree.load(git, commit)
        reason = tree.unstreamable(stream_dockerfile)
        if reason is not None:
            log(f"checking out the tree: {reason}")
            tree = None
    if tree is None:
        res = git("checkout", "--detach", "--quiet", commit)
        if res.returncode != 0:
            raise _fail("git checkout", res)
    if base_ref is None or base_commit is None:
        return WorkspaceResult(commit=commit, base_commit=None, merged_commit=None, merge="none", tree=tree)

    if contained:
        log(f"{base_ref} ({base_commit[:12]}) is already contained in {git_ref}: nothing to merge")
        return WorkspaceResult(commit, base_commit, None, "none", tree=tree)

    # A merge commit dated like its newest parent: the same two commits always give the same id.
    dates = git("show", "-s", "--format=%ct", commit, base_commit, "--", capture=True, quiet=True)
    stamps = [int(s) for s in dates.stdout if s.strip().isdigit()]
    when = f"@{max(stamps)} +0000" if stamps else None
    date_env = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when} if when else {}
    res = git("merge", "--no-edit", "--no-verify", "--no-stat", "-m", f"Merge {base_ref} into {git_ref}",
              base_commit, env=date_env)
    if res.returncode != 0:
        conflicts = git("diff", "--name-only", "--diff-filter=U", "-z", capture=True, quiet=True)
        paths = sorted(p for p in "\n".join(conflicts.stdout).split("\0") if p.strip())
        if paths:
            log(f"merge conflict between {git_ref} and {base_ref} in:")
            for path in paths:
                log(f"  {path}")
            raise WorkspaceError(f"merge conflict between {git_ref} and {base_ref} in: {', '.join(paths)}")
        raise _fail(f"merge of {base_ref} into {git_ref}", res)

    head = git.resolve("HEAD")
    if head is None:  # pragma: no cover - git just made it
        raise WorkspaceError("merge failed: HEAD cannot be read")
    merge: MergeResult = "fast-forward" if head == base_commit else "merged"
    log(f"merge of {base_ref} into {git_ref}: {merge} ({head})")
    return WorkspaceResult(commit, base_commit, head, merge)


def _is_ancestor(git: _Git, older: str, newer: str) -> bool:
    res = git("merge-base", "--is-ancestor", older, newer, quiet=True)
    if res.returncode not in (0, 1):
        raise _fail("git merge-base", res)
    return res.returncode == 0


# --------------------------------------------------------------------------- the tree, streamed

_TREE_LINE = re.compile(r"([0-7]{6}) (\w+) ([0-9a-f]{40,64})\t(.+)")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_REGULAR = ("100644", "100755")
PIPE_BYTES = 1 << 20  # the archive's pipe: fewer, larger reads (Linux; the default is 64 KiB)


def _unquote(path: str) -> str:
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
                procrun._kill_group(self.proc.pid)

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

    def __init__(self, git: _Git, commit: str, entries: Mapping[str, str]):
        self._git, self.commit = git, commit
        self.entries = dict(entries)  # relative path -> git mode ("040000" a folder, "120000" a link...)

    @classmethod
    def load(cls, git: _Git, commit: str) -> "GitTree":
        # quotePath forced: any byte of a path reaches us as ASCII (octal escapes), one per line.
        res = git("-c", "core.quotePath=true", "ls-tree", "-r", "-t", "--full-tree", commit,
                  capture=True, quiet=True)
        if res.returncode != 0:
            raise _fail("git ls-tree", res)
        entries: dict[str, str] = {}
        for line in res.stdout:
            found = _TREE_LINE.fullmatch(line)
            if found is None:
                raise WorkspaceError(f"git ls-tree: cannot read {line[:200]!r}")
            entries[_unquote(found.group(4))] = found.group(1)
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
            raise _fail("git cat-file", res)
        return "\n".join(res.stdout)

    def archive(self) -> GitArchive:
        """Start ``git archive`` of the tree. Given the tree (not the commit), git stamps files
        with the current time, as a checkout does, and modes follow the umask (``tar.umask=user``)
        as a checkout's do; owners are root (COPY makes them root anyway)."""
        git = self._git
        cmd = ["git", *(arg for item in _GIT_CONFIG for arg in ("-c", item)), "-c", "tar.umask=user",
               "archive", "--format=tar", f"{self.commit}^{{tree}}"]
        if time.monotonic() >= git.deadline:
            raise BuildTimedOut("timed out")
        git.log(f"$ git archive --format=tar {self.commit}^{{tree}}")
        return GitArchive(cmd, git.cwd, git.env, git.on_start)

    def discover(self, jobs_glob: str, manifests_glob: str) -> tuple[list[str], list[str]]:
        """:func:`discover` for the tree: what a checkout of it would list (files and links)."""
        return _classify((path for path, mode in self.entries.items() if mode not in ("040000", "160000")),
                         jobs_glob, manifests_glob)


# --------------------------------------------------------------------------- discovery

def _matcher(pattern: str) -> Callable[[str, str], bool]:
    # A glob without '/' matches file names anywhere; one with '/' matches the relative path.
    if "/" in pattern:
        return lambda rel, name: fnmatch.fnmatchcase(rel, pattern)
    return lambda rel, name: fnmatch.fnmatchcase(name, pattern)


def discover(dest: Path, jobs_glob: str, manifests_glob: str) -> tuple[list[str], list[str]]:
    """Relative paths (``/``-separated, sorted) of the job files and manifest files in the tree,
    ``.git`` excluded. Symbolic links are listed, never followed."""
    root = Path(dest)

    def walk() -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            names = list(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for name in names:
                yield Path(dirpath, name).relative_to(root).as_posix()

    return _classify(walk(), jobs_glob, manifests_glob)


def _classify(paths: Iterable[str], jobs_glob: str, manifests_glob: str) -> tuple[list[str], list[str]]:
    want_jobs, want_manifests = _matcher(jobs_glob), _matcher(manifests_glob)
    jobs: list[str] = []
    manifests: list[str] = []
    for rel in paths:
        name = rel.rsplit("/", 1)[-1]
        if want_jobs(rel, name):
            jobs.append(rel)
        if want_manifests(rel, name):
            manifests.append(rel)
    return sorted(jobs), sorted(manifests)


__all__: Sequence[str] = ("WorkspaceError", "WorkspaceResult", "validate_ref", "check_ref_format",
                          "prepare", "discover", "git_env", "GitTree", "GitArchive")
