"""The workspace a build runs in: clone the Polaris repository, check out a ref, merge a base ref
(or, for a builder that streams its context, leave the tree in git when nothing must be merged)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from ...core.errors import ValidationError
from .git import Git, Log, WorkspaceError, fail, git_env, is_ancestor, resolve_refs
from .refs import validate_ref
from .tree import GitTree

__all__ = ["MergeResult", "WorkspaceResult", "prepare"]

MergeResult = Literal["none", "fast-forward", "merged"]


@dataclass(frozen=True)
class WorkspaceResult:
    commit: str  # what git_ref resolved to
    base_commit: Optional[str]  # what base_ref resolved to (None without base_ref)
    merged_commit: Optional[str]  # HEAD after the merge, when it moved (None: no merge, or nothing to merge)
    merge: MergeResult
    # Set when prepare() was asked not to check out (``stream_dockerfile``) and could avoid it:
    # the build context is this tree, read from git, and the workspace holds only ``.git``.
    tree: Optional[GitTree] = field(default=None, compare=False)

    @property
    def head(self) -> str:
        """The commit the workspace holds."""
        return self.merged_commit or self.commit

    def as_meta(self) -> dict[str, Any]:
        return {"commit": self.commit, "base_commit": self.base_commit,
                "merged_commit": self.merged_commit, "merge": self.merge}


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
    ``git archive`` while the build uploads it (nothing written to disk and read back; figures in
    benchmarks/README.md, builds).

    :raises WorkspaceError: unknown ref, merge conflict, clone failure.
    :raises BuildCancelled: ``cancel`` was set (the running git is killed).
    :raises BuildTimedOut: the whole preparation took longer than ``timeout_s``.
    """
    # The service validates refs when a build is submitted; checking again here keeps a ref that
    # came another way (a stored record, a restart) from ever reaching git as an option.
    for key, ref in (("git_ref", git_ref), ("base_ref", base_ref)):
        if ref is not None:
            try:
                validate_ref(key, ref)
            except ValidationError as exc:
                raise WorkspaceError(f"invalid {key}: {ref!r}: {' '.join(exc.fields[key])}") from None

    env = git_env()
    deadline = time.monotonic() + timeout_s
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    clone = Git(dest.parent, log, cancel, deadline, env, on_start)
    res = clone("clone", "--no-checkout", "--template=", "--", repo, str(dest))
    if res.returncode != 0:
        raise fail("git clone", res)

    git = Git(dest, log, cancel, deadline, env, on_start)
    # Both refs in one lookup, before the checkout: an unknown base_ref fails without one.
    commit, *rest = resolve_refs(git, [git_ref] if base_ref is None else [git_ref, base_ref])
    base_commit: Optional[str] = rest[0] if rest else None
    contained = False
    if base_ref is not None and base_commit is not None:
        # Asked before the checkout (it needs none): with nothing to merge, the tree may stream.
        contained = is_ancestor(git, base_commit, commit)
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
            raise fail("git checkout", res)
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
        raise fail(f"merge of {base_ref} into {git_ref}", res)

    head = git.resolve("HEAD")
    if head is None:  # pragma: no cover - git just made it
        raise WorkspaceError("merge failed: HEAD cannot be read")
    merge: MergeResult = "fast-forward" if head == base_commit else "merged"
    log(f"merge of {base_ref} into {git_ref}: {merge} ({head})")
    return WorkspaceResult(commit, base_commit, head, merge)
