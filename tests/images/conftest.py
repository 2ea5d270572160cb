"""Fixtures for the image service and API: a real Polaris git repository, apps that build with
the dry-run, docker or buildah builder. The private dockerd and buildah store (``docker_url``,
``docker_api``, ``buildah_store``) are session fixtures of tests/daemon_fixtures.py, shared with
tests/builders.

The image tests run on SQLite (the service logic does not depend on the backend; the storage
conformance suite covers the backends, and one test here shares PostgreSQL between two services).
A test that needs dockerd or buildah skips when they are missing, except under CI=true where it
fails (``xpresso_env.testing.require``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from tests.conftest import World, make_settings
from tests.git_repo import GitRepo
from tests.waiting import worker_sleep_s
from xpresso_env.testing.daemons import BUSYBOX_REF

# A sleep length no other test uses, so a test can look for leftover processes by command line.
SLEEP_S = worker_sleep_s(41)
FINAL = ("successful", "failed", "cancelled")


@pytest.fixture
def backend() -> str:
    return "sqlite"


# --------------------------------------------------------------------------- the Polaris repository

class Repo(GitRepo):
    """The Polaris repository of the image tests."""

    def sleeping_branch(self, name: str, seconds: int) -> str:
        """A branch whose build sleeps; its RUN line is unique, so Docker's layer cache never
        skips it. Returns the text of the RUN command."""
        import uuid

        command = f"sleep {seconds} && echo {uuid.uuid4().hex}"
        self.branch(name, "main")
        self.commit({"Dockerfile": f"FROM {BUSYBOX_REF}\nCOPY hello.txt /hello.txt\nRUN {command}\n"}, name)
        self.checkout("main")
        return command


SCRATCH_DOCKERFILE = "FROM scratch\nCOPY hello.txt /hello.txt\nCOPY basic /basic\n"


def sleepy_dockerfile(seconds: int = SLEEP_S) -> str:
    return f"FROM {BUSYBOX_REF}\nCOPY hello.txt /hello.txt\nRUN sleep {seconds}\n"


@pytest.fixture
def polaris_repo(tmp_path: Path) -> Repo:
    """main: a Dockerfile FROM scratch with COPY, job files and manifests; tag v1.
    feature: adds a job; main moves on meanwhile (merging main into feature: a real 3-way merge).
    conflict: changes the line of hello.txt main changes too.
    broken: a RUN that fails; sleepy: a RUN that sleeps (both need the busybox base image)."""
    repo = Repo(tmp_path / "polaris")
    repo.path.mkdir()
    repo.git("init", "-q", "-b", "main")
    repo.commit({"Dockerfile": SCRATCH_DOCKERFILE, "hello.txt": "hello\n",
                 "basic/basic_example_job.py": "# a pyATS job\n", "basic/testbed.yaml": "devices: {}\n",
                 "manifests/basic.tem": "manifest: basic\n", "README.md": "Polaris\n"}, "initial")
    repo.git("tag", "v1")
    repo.branch("feature")
    repo.commit({"feature/feature_job.py": "# another job\n"}, "feature job")
    repo.checkout("main")
    repo.commit({"hello.txt": "hello from main\n", "manifests/extra.tem": "manifest: extra\n"}, "main moves on")
    repo.branch("conflict", "v1")
    repo.commit({"hello.txt": "hello from conflict\n"}, "conflicting change")
    repo.branch("broken", "main")
    repo.commit({"Dockerfile": f"FROM {BUSYBOX_REF}\nRUN echo about to fail && false\n"}, "broken")
    repo.branch("sleepy", "main")
    repo.commit({"Dockerfile": sleepy_dockerfile()}, "sleepy")
    repo.branch("runnable", "main")
    repo.commit({"Dockerfile": f"FROM {BUSYBOX_REF}\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n"},
                "runnable")
    repo.checkout("main")
    return repo


# --------------------------------------------------------------------------- apps that build

@dataclass
class ImageWorld:
    world: World

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world, name)

    def submit(self, body: dict, user: str = "mem", group: str = "g1"):
        return self.world.post("/api/v2/images/polaris_build", body, user=user, group=group)

    def image(self, image_id: str, user: str = "admin", group: str = "g1") -> dict:
        r = self.world.get(f"/api/v2/images/{image_id}", user=user, group=group)
        assert r.status_code == 200, r.text
        return r.json

    def wait(self, image_id: str, statuses=FINAL, timeout_s: float = 60, group: str = "g1") -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.image(image_id, group=group)
            if record["status"] in statuses:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"image {image_id} still {record['status']} after {timeout_s} s: "
                                     f"{self.log(image_id, group=group)}")
            time.sleep(0.05)

    def log(self, image_id: str, group: str = "g1", **params) -> str:
        r = self.world.get(f"/api/v2/images/{image_id}/logs", group=group, params=params or None)
        assert r.status_code == 200, r.text
        return r.text

    def wait_log(self, image_id: str, text: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            log = self.log(image_id)
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the log after {timeout_s} s:\n{log}")
            time.sleep(0.05)

    @property
    def root(self) -> Path:
        return Path(self.world.ctx.settings.images.nfs_root)


@pytest.fixture
def make_image_world(make_world, tmp_path: Path, polaris_repo: Repo) -> Callable[..., ImageWorld]:
    """An app with builds enabled and started. ``builder`` names the builder (``builder.backend``);
    ``config`` holds more settings by section; other keywords go to build_context."""

    def make(builder: str = "dry-run", config: Optional[dict] = None, start: bool = True,
             **kwargs: Any) -> ImageWorld:
        extra: dict[str, dict] = {"polaris": {"repo": str(polaris_repo.path)}, "builder": {"backend": builder},
                                  "builds": {"lease_s": 6.0}}
        for section, values in (config or {}).items():
            extra.setdefault(section, {}).update(values)
        settings = make_settings(tmp_path, "sqlite", extra=extra)
        kwargs.setdefault("poll_s", 0.2)
        w = make_world(images=True, settings_override=settings, **kwargs)
        if start:
            w.ctx.start()
        return ImageWorld(w)

    return make


def files_outside(tmp_path: Path, roots: tuple[str, ...] = ("nfs", "logs", "ws")) -> set[str]:
    """Every path under tmp_path except those in the image roots (to prove nothing escaped)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        rel = Path(dirpath).relative_to(tmp_path)
        if rel.parts and rel.parts[0] in roots:
            continue
        for name in filenames + dirnames:
            out.add(str(rel / name))
    return out


# --------------------------------------------------------------------------- real builders

def builder_config(name: str, request) -> dict:
    """Settings that point the named real builder at the test daemon / store."""
    if name == "docker":
        request.getfixturevalue("docker_busybox")  # the session's dockerd, with the busybox base image
        return {"builder": {"backend": "docker", "docker": {"base_url": request.getfixturevalue("docker_url")}}}
    if name == "buildah":
        store = request.getfixturevalue("buildah_store")
        return {"builder": {"backend": "buildah", "buildah": {"storage_driver": "vfs", "isolation": "chroot",
                                                               "root": store.root, "runroot": store.runroot}}}
    raise ValueError(name)


def processes_running(needle: list[str]) -> list[int]:
    """Live processes whose command line ends with ``needle`` (e.g. ["sleep", "41"])."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = [c.decode(errors="replace") for c in (entry / "cmdline").read_bytes().split(b"\0")[:-1]]
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (cmdline[-len(needle):] == needle or cmdline[-1:] == [" ".join(needle)]) and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class FakeClock:
    """An injected clock that a test moves forward (retention ages); starts at the real time."""

    def __init__(self):
        from xpresso_env.core.timeutil import utcnow

        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, **delta) -> None:
        from datetime import timedelta

        self.now += timedelta(**delta)
