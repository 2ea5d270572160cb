"""The build workspace: clone the Polaris repository, check out a ref, merge a base ref, find files.

Everything a client sends reaches git only as a checked ref name (:mod:`.refs`), inside an
argument list, after ``--end-of-options``; git runs without prompts, hooks or templates, in its
own process group (:mod:`.git`, over :mod:`xpresso_env.builds.sdk.procrun`) so a cancel or a
timeout stops it. :mod:`.checkout` makes the workspace (:func:`prepare`); :mod:`.tree` reads a
commit's tree straight from git for a builder that streams its context; :mod:`.discovery` finds
the job files and manifests.
"""
from __future__ import annotations

from .checkout import MergeResult, WorkspaceResult, prepare
from .discovery import discover
from .git import COMMITTER_EMAIL, COMMITTER_NAME, WorkspaceError, git_env
from .refs import MAX_REF_LEN, validate_ref
from .tree import GitArchive, GitTree

__all__ = ["WorkspaceError", "WorkspaceResult", "MergeResult", "validate_ref", "MAX_REF_LEN",
           "prepare", "discover", "git_env", "GitTree", "GitArchive", "COMMITTER_NAME", "COMMITTER_EMAIL"]
