"""The real `xpresso-env serve` over HTTP: a server killed (SIGKILL) in the middle of a build, and
a restarted one that takes the build over and finishes it; the log followed over real HTTP.

A killed server's git and builder processes run on in sessions of their own: the server that
takes the build over kills their process groups (recorded in the claim) and builds in a folder
of its own, never in the one they may still write into."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests

from tests.git_repo import slow_clone_env
from xpresso_env.builds.sdk.procrun import group_members
from xpresso_env.testing.server import cli, serve, write_config

from .conftest import processes_running, wait_until

pytestmark = pytest.mark.slow  # real serve processes, killed mid-build

CLONE_SLEEP = ["sleep", "43"]  # a length no other test uses


def _get(server, path, headers, **kw):
    return requests.get(f"{server.url}{path}", headers=headers, timeout=30, **kw)


def test_kill_9_mid_build_then_restart_finishes_it(tmp_path, polaris_repo, docker_url, docker_api):
    command = polaris_repo.sleeping_branch("restart", 4)
    config = write_config(tmp_path / "srv", {
        "storage": {"backend": "sqlite", "path": "db.sqlite3"}, "auth": {"secret_file": "secret"},
        "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"},
        "polaris": {"repo": str(polaris_repo.path)},
        "builder": {"backend": "docker", "docker": {"base_url": docker_url}},
        "builds": {"max_concurrent": 2, "lease_s": 3.0}})
    cli(config, "init")
    cli(config, "group", "add", "myGroup")
    cli(config, "user", "add", "alice", "--group", "myGroup:member")
    token = cli(config, "token", "create", "alice").stdout.strip().splitlines()[-1]
    headers = {"Authorization": token, "Group": "myGroup"}

    with serve(config) as first:
        assert _get(first, "/api/v2/health", {}).json()["builder"] == "docker"
        r = requests.post(f"{first.url}/api/v2/images/polaris_build", headers=headers, timeout=30,
                          json={"name": "polaris", "tag": "restart", "git_ref": "restart"})
        assert r.status_code == 200 and r.json()["status"] == "building", r.text
        image_id = r.json()["uuid"]
        assert wait_until(lambda: command in _get(first, f"/api/v2/images/{image_id}/logs", headers).text, 60)
        first.kill()  # as a crash would: no clean-up of any kind

    with serve(config) as second:
        # follow the log over real HTTP (chunked) until the build ends
        with _get(second, f"/api/v2/images/{image_id}/logs", headers, params={"follow": "true"}, stream=True) as r:
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = b"".join(r.iter_content(chunk_size=None)).decode()
        rec = _get(second, f"/api/v2/images/{image_id}", headers).json()
        assert rec["status"] == "successful", text
        assert rec["meta"]["attempt"] == 2 and "stopped renewing its claim" in text
        assert text.count(command) >= 2, "the build ran again from a fresh workspace"
        ws = tmp_path / "srv" / "ws"
        assert _clone_folders(text) == [str(ws / image_id / "1"), str(ws / image_id / "2")]
        assert "successful" in text.splitlines()[-1]
        tar = Path(rec["nfs_path"])
        assert tar.is_file() and rec["size"] == tar.stat().st_size
        assert not list(tar.parent.glob(".*.part"))
        assert wait_until(lambda: list((tmp_path / "srv" / "ws").iterdir()) == [])
        # the tar loads back and runs
        with open(tar, "rb") as fh:
            docker_api.load_image(fh.read())
        container = docker_api.create_container("polaris:restart", command=["cat", "/hello.txt"],
                                                network_disabled=True)
        try:
            docker_api.start(container)
            docker_api.wait(container, timeout=60)
            assert docker_api.logs(container).decode().strip() == "hello from main"
        finally:
            docker_api.remove_container(container, force=True)
        assert "Traceback" not in second.log()


def _setup(tmp_path: Path, polaris_repo, builder: dict) -> tuple[Path, dict]:
    config = write_config(tmp_path / "srv", {
        "storage": {"backend": "sqlite", "path": "db.sqlite3"}, "auth": {"secret_file": "secret"},
        "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"},
        "polaris": {"repo": str(polaris_repo.path)}, "builder": builder,
        "builds": {"max_concurrent": 1, "lease_s": 30.0}})  # a dead local owner is taken over at once
    cli(config, "init")
    cli(config, "group", "add", "myGroup")
    cli(config, "user", "add", "alice", "--group", "myGroup:member")
    token = cli(config, "token", "create", "alice").stdout.strip().splitlines()[-1]
    return config, {"Authorization": token, "Group": "myGroup"}


def _clone_folders(text: str) -> list[str]:
    """The destination of each `git clone` in a build log."""
    return re.findall(r"\$ git clone .* -- \S+ (\S+)$", text, re.M)


def test_kill_9_mid_clone_then_restart_ends_the_old_clone_and_finishes(tmp_path, polaris_repo):
    config, headers = _setup(tmp_path, polaris_repo, {"backend": "dry-run"})
    env = slow_clone_env(tmp_path, CLONE_SLEEP, first_only=True)
    with serve(config, env=env) as first:
        r = requests.post(f"{first.url}/api/v2/images/polaris_build", headers=headers, timeout=30,
                          json={"name": "polaris", "tag": "clone", "git_ref": "main"})
        assert r.status_code == 200, r.text
        image_id = r.json()["uuid"]
        assert wait_until(lambda: processes_running(CLONE_SLEEP), 20), first.log()
        [sleeper] = processes_running(CLONE_SLEEP)
        group = os.getpgid(sleeper)
        first.kill()
    assert processes_running(CLONE_SLEEP) == [sleeper], "the clone outlives the server (its own session)"

    with serve(config, env=env) as second:
        with _get(second, f"/api/v2/images/{image_id}/logs", headers, params={"follow": "true"}, stream=True) as r:
            text = b"".join(r.iter_content(chunk_size=None)).decode()
        rec = _get(second, f"/api/v2/images/{image_id}", headers).json()
        assert rec["status"] == "successful" and rec["meta"]["attempt"] == 2, text
        assert f"killed process group {group}, left running by attempt 1" in text
        assert not processes_running(CLONE_SLEEP) and group_members(group) == [], "the old clone's group is gone"
        ws = tmp_path / "srv" / "ws"
        assert _clone_folders(text) == [str(ws / image_id / "1"), str(ws / image_id / "2")]
        assert wait_until(lambda: list(ws.iterdir()) == [])
        assert "Traceback" not in second.log()


def test_kill_9_mid_buildah_build_then_restart_ends_the_old_build_and_finishes(tmp_path, polaris_repo,
                                                                              buildah_store):
    command = polaris_repo.sleeping_branch("buildah-restart", 3)
    config, headers = _setup(tmp_path, polaris_repo, {
        "backend": "buildah", "buildah": {"storage_driver": "vfs", "isolation": "chroot",
                                          "root": buildah_store.root, "runroot": buildah_store.runroot}})
    before = set(buildah_store.buildah("containers", "--quiet", "--notruncate").stdout.split())
    needle = ["/bin/sh", "-c", command]
    with serve(config) as first:
        r = requests.post(f"{first.url}/api/v2/images/polaris_build", headers=headers, timeout=30,
                          json={"name": "polaris", "tag": "buildah", "git_ref": "buildah-restart"})
        assert r.status_code == 200, r.text
        image_id = r.json()["uuid"]
        assert wait_until(lambda: processes_running(needle), 60), first.log()
        step = processes_running(needle)[0]  # the RUN step's shell may fork a child of its own
        group = os.getpgid(step)  # buildah's process group: buildah, its runtime, the RUN step
        first.kill()
    assert step in processes_running(needle), "the build outlives the server (its own session)"

    try:
        with serve(config) as second:
            with _get(second, f"/api/v2/images/{image_id}/logs", headers, params={"follow": "true"},
                      stream=True) as r:
                text = b"".join(r.iter_content(chunk_size=None)).decode()
            rec = _get(second, f"/api/v2/images/{image_id}", headers).json()
            assert rec["status"] == "successful" and rec["meta"]["attempt"] == 2, text
            assert f"killed process group {group}, left running by attempt 1" in text
            assert processes_running(needle) == [] and group_members(group) == []
            ws = tmp_path / "srv" / "ws"
            assert _clone_folders(text) == [str(ws / image_id / "1"), str(ws / image_id / "2")]
            assert Path(rec["nfs_path"]).stat().st_size == rec["size"] > 0
            assert "Traceback" not in second.log()
    finally:
        # The killed buildah left its working container; the store is shared with other tests.
        after = set(buildah_store.buildah("containers", "--quiet", "--notruncate").stdout.split())
        if after - before:
            buildah_store.buildah("rm", *sorted(after - before))
