"""Fixtures for the build machinery: real git repositories, build requests, process helpers.

The private dockerd and the buildah store (``docker_url``, ``docker_api``, ``docker_busybox``,
``buildah_store``) are session fixtures of tests/daemon_fixtures.py, shared with every folder.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from tests.git_repo import GitRepo
from tests.waiting import worker_sleep_s
from xpresso_env.builds.sdk.builder import BuildRequest

# A sleep length no other test on the machine is likely to use: lets a test find leftovers.
SLEEP_S = worker_sleep_s(37)


# --------------------------------------------------------------------------- git repositories

Repo = GitRepo  # the builder tests' name for it


@pytest.fixture
def make_repo(tmp_path: Path):
    counter = iter(range(1000))

    def make(name: Optional[str] = None) -> Repo:
        path = tmp_path / (name or f"repo{next(counter)}")
        path.mkdir()
        repo = Repo(path)
        repo.git("init", "-q", "-b", "main")
        return repo

    return make


# --------------------------------------------------------------------------- build requests

@dataclass
class Capture:
    """A build log kept in memory, with an event a test can wait on."""

    lines: list[str] = field(default_factory=list)
    wanted: Optional[str] = None
    seen: threading.Event = field(default_factory=threading.Event)

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.wanted is not None and self.wanted in line:
            self.seen.set()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def make_request(tmp_path: Path):
    def make(context: Path, image_ref: str, output: Optional[Path] = None, timeout_s: float = 120,
             dockerfile: str = "Dockerfile", wanted: Optional[str] = None) -> tuple[BuildRequest, Capture]:
        log = Capture(wanted=wanted)
        out = output or tmp_path / "nfs" / "g1" / image_ref.split(":")[0] / f"{image_ref.split(':')[1]}.tar"
        request = BuildRequest(context_dir=context, dockerfile=dockerfile, image_ref=image_ref,
                               output_tar=out, log=log, cancel=threading.Event(), timeout_s=timeout_s)
        return request, log

    return make


def make_context(root: Path, dockerfile: str, files: Optional[dict[str, str]] = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def cancel_when_seen(request: BuildRequest, log: Capture, timeout_s: float = 60) -> dict[str, float]:
    """Set the request's cancel event once the log shows ``log.wanted``; returns when it did."""
    when: dict[str, float] = {}

    def watch() -> None:
        if log.seen.wait(timeout_s):
            when["cancelled_at"] = time.monotonic()
            request.cancel.set()

    threading.Thread(target=watch, daemon=True).start()
    return when


def processes_running(argv: list[str]) -> list[int]:
    """Pids of live (not zombie) processes whose command line is exactly ``argv``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if [c.decode(errors="replace") for c in cmdline] == argv and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until(predicate, timeout_s: float = 10.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
