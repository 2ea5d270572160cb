"""The `xpresso` client against a real `xpresso-env serve` on a loopback port (SQLite, a real
Polaris git repository, the dry-run builder unless a test asks for Docker). The client runs as
a subprocess, as a user runs it, with HOME pointing at a folder of the test's own."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import requests

from tests.git_repo import GitRepo, hello_polaris
from xpresso_env.testing.daemons import BUSYBOX_REF
from xpresso_env.testing.server import Server, cli, serve, write_config

CLIENT = [sys.executable, "-m", "xpresso_env.client"]
FINAL = ("successful", "failed", "cancelled")


def polaris_repo(path: Path) -> GitRepo:
    """main: FROM scratch + COPY (dry-run and Docker build it). steps: a busybox image whose
    RUN sleeps a little (Docker's log shows Step n/m). sleepy: a RUN that sleeps long. extra:
    main plus one file (a base ref to merge)."""
    repo = hello_polaris(path, {"basic/basic_example_job.py": "# a job\n"})
    repo.git("checkout", "-q", "-b", "steps")
    repo.commit({"Dockerfile": f"FROM {BUSYBOX_REF}\nCOPY hello.txt /hello.txt\n"
                               f"RUN echo step three starts && sleep 3 && echo $RANDOM-{time.time_ns()}\n"}, "steps")
    repo.git("checkout", "-q", "-b", "sleepy", "main")
    repo.commit({"Dockerfile": f"FROM {BUSYBOX_REF}\nRUN echo sleeping now && sleep 45\n"}, "sleepy")
    repo.git("checkout", "-q", "-b", "extra", "main")  # a base for `build --base`: merges cleanly into main
    repo.commit({"extra.txt": "from the base ref\n"}, "extra")
    repo.git("checkout", "-q", "main")
    return repo


@dataclass
class Site:
    """A running server, its users' tokens, and a HOME for the client."""

    server: Server
    config: Path
    tokens: dict[str, str]  # user -> token as `token create` prints it (`Jwt ...`)
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def client_env(self, **extra: Optional[str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XPRESSO_") and k != "XDG_CONFIG_HOME"}
        env.update({"HOME": str(self.home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
        for key, value in extra.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def xpresso(self, *args: str, user: Optional[str] = "alice", group: Optional[str] = "g1",
                env: Optional[dict[str, Optional[str]]] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the client; `user`/`group` go in through XPRESSO_URL/TOKEN/GROUP (None: not set)."""
        extra: dict[str, Optional[str]] = {}
        if user is not None:
            extra.update(XPRESSO_URL=self.url, XPRESSO_TOKEN=self.tokens[user])
        if group is not None:
            extra["XPRESSO_GROUP"] = group
        extra.update(env or {})
        return subprocess.run([*CLIENT, *args], capture_output=True, text=True, timeout=timeout,
                              env=self.client_env(**extra), stdin=subprocess.DEVNULL)

    def api(self, method: str, path: str, user: str = "alice", group: str = "g1", **kw: Any) -> requests.Response:
        return requests.request(method, f"{self.url}/api/v2/{path}", timeout=30,
                                headers={"Authorization": self.tokens[user], "Group": group}, **kw)

    def image(self, image_id: str) -> dict:
        r = self.api("GET", f"images/{image_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, image_id: str, timeout_s: float = 120) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.image(image_id)
            if record["status"] in FINAL:
                return record
            assert time.monotonic() < deadline, f"{image_id} still {record['status']}"
            time.sleep(0.1)

    def log(self, image_id: str) -> str:
        r = self.api("GET", f"images/{image_id}/logs")
        assert r.status_code == 200, r.text
        return r.text


def start_site(tmp: Path, builder: dict[str, Any]) -> Iterator[Site]:
    repo = polaris_repo(tmp / "polaris")
    config = write_config(tmp / "server", {
        "storage": {"backend": "sqlite", "path": "db.sqlite3"}, "auth": {"secret_file": "secret"},
        "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"},
        "polaris": {"repo": str(repo.path)}, "builder": builder, "server": {"access_log": False}})
    cli(config, "init")
    for group in ("g1", "g2"):
        cli(config, "group", "add", group)
    users = {"alice": ["g1:group_admin"], "bob": ["g1:member", "g2:member"], "carol": ["g1:guest"]}
    tokens = {}
    for user, roles in users.items():
        cli(config, "user", "add", user, *[a for r in roles for a in ("--group", r)])
        tokens[user] = cli(config, "token", "create", user).stdout.strip().splitlines()[-1]
    home = tmp / "home"
    home.mkdir()
    with serve(config) as server:
        yield Site(server=server, config=config, tokens=tokens, home=home)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """One dry-run server for the module's tests (each test uses its own names)."""
    yield from start_site(tmp_path_factory.mktemp("client"), {"backend": "dry-run"})


@pytest.fixture
def home(site: Site, tmp_path: Path) -> Path:
    """A fresh HOME for one test (login files do not leak between tests)."""
    site.home = tmp_path / "home"
    site.home.mkdir()
    return site.home
