"""Git as a build runs it: the environment and configuration every call gets, the runner, and the
look-up of the commits that ref names name.

Every call runs without prompts, hooks or templates, in its own process group
(:mod:`xpresso_env.builds.sdk.procrun`), so a cancel or the build's deadline stops it; its
command line and output reach the build log redacted.
"""
from __future__ import annotations

import os
import re
import shlex
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from ...runtime.redact import redact
from ..sdk import procrun
from ..sdk.builder import BuildFailed, BuildTimedOut
from .refs import COMMIT_ID

__all__ = ["Log", "COMMITTER_NAME", "COMMITTER_EMAIL", "GIT_CONFIG", "WorkspaceError", "git_env",
           "Git", "fail", "resolve_refs", "is_ancestor"]

Log = Callable[[str], None]

# The identity of the merge commits the service makes (never a user's).
COMMITTER_NAME = "xpresso-env"
COMMITTER_EMAIL = "xpresso-env@localhost"

_FULL_ID = re.compile(r"[0-9a-f]{40}")

# Kept from the server's environment: how to reach the repository. Every other GIT_* variable
# (GIT_DIR, GIT_WORK_TREE, GIT_CONFIG_PARAMETERS...) would redirect or reconfigure our git calls.
_KEEP_GIT_ENV = {"GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH",
                 "GIT_PROXY_COMMAND", "GIT_HTTP_USER_AGENT"}
# Applied to every git call: no hooks (the repository's or a global core.hooksPath), no
# background maintenance left running, no fsmonitor daemon.
GIT_CONFIG = ("core.hooksPath=/dev/null", "gc.auto=0", "maintenance.auto=false",
              "core.fsmonitor=false", "advice.detachedHead=false",
              f"user.name={COMMITTER_NAME}", f"user.email={COMMITTER_EMAIL}")


class WorkspaceError(BuildFailed):
    """The workspace cannot be made: unknown ref, merge conflict, clone failure."""


def git_env(base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    src = os.environ if base is None else base
    env = {k: v for k, v in src.items() if not k.startswith("GIT_") or k in _KEEP_GIT_ENV}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true",
                "LC_ALL": "C", "LANG": "C"})
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


class Git:
    """Runs git in ``cwd`` for one build: its log, its cancel, its deadline (monotonic),
    the environment (:func:`git_env`) and where each process group is announced (``on_start``)."""

    def __init__(self, cwd: Optional[Path], log: Log, cancel: threading.Event, deadline: float,
                 env: Mapping[str, str], on_start: Optional[Callable[[int], None]]):
        self.cwd, self.log, self.cancel = cwd, log, cancel
        self.deadline, self.env, self.on_start = deadline, env, on_start

    def __call__(self, *args: str, capture: bool = False, quiet: bool = False,
                 env: Optional[Mapping[str, str]] = None) -> procrun.RunResult:
        cmd = ["git"]
        for item in GIT_CONFIG:
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


def fail(what: str, res: procrun.RunResult) -> WorkspaceError:
    """The error of a git run that failed, saying what it was doing and git's last words."""
    reason = redact(res.last_line()) or f"exit status {res.returncode}"
    return WorkspaceError(f"{what} failed: {reason}")


def _candidates(ref: str) -> list[str]:
    """Where a ref may live in a fresh clone, in the order a user means it: a branch of the
    repository (now origin/<ref>), a tag, a full ref name, a commit id."""
    out = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"]
    if ref.startswith("refs/heads/"):
        out.append("refs/remotes/origin/" + ref[len("refs/heads/"):])
    elif ref.startswith("refs/"):
        out.append(ref)
    if COMMIT_ID.fullmatch(ref):
        out.append(ref)
    return out


# Ref names hold no spaces (git's check-ref-format refuses them), so a space separates the fields safely.
_REF_FORMAT = "--format=%(refname) %(objecttype) %(objectname) %(*objecttype) %(*objectname)"


def _lookup_refs(git: Git, names: Sequence[str]) -> dict[str, Optional[str]]:
    """Every candidate ref name in ONE ``git for-each-ref`` (a process per candidate costs more
    than the lookup): name -> the commit it names, or None when only git can peel it (a tag of a
    tag). Names that do not exist, or that name no commit (a tag of a tree), are left out, as
    ``rev-parse <name>^{commit}`` would refuse them."""
    if not names:
        return {}
    res = git("for-each-ref", _REF_FORMAT, "--end-of-options", *names, capture=True, quiet=True)
    if res.returncode != 0:
        raise fail("git for-each-ref", res)
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


def resolve_refs(git: Git, refs: Sequence[str]) -> list[str]:
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


def is_ancestor(git: Git, older: str, newer: str) -> bool:
    res = git("merge-base", "--is-ancestor", older, newer, quiet=True)
    if res.returncode not in (0, 1):
        raise fail("git merge-base", res)
    return res.returncode == 0
