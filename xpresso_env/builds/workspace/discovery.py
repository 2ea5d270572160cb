"""Which files of a build's tree are job files and manifests (``images.jobs_glob``,
``images.manifests_glob``): from a checkout (:func:`discover`) or a tree listing read from git
(:meth:`xpresso_env.builds.workspace.tree.GitTree.discover`), with the same result."""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

__all__ = ["discover", "classify"]


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

    return classify(walk(), jobs_glob, manifests_glob)


def classify(paths: Iterable[str], jobs_glob: str, manifests_glob: str) -> tuple[list[str], list[str]]:
    """The job files and the manifests among ``paths`` (relative, ``/``-separated), sorted."""
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
