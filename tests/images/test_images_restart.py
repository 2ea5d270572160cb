"""The real `xpresso-env serve` over HTTP: a server killed (SIGKILL) in the middle of a build, and
a restarted one that takes the build over and finishes it; the log followed over real HTTP."""
from __future__ import annotations

from pathlib import Path

import requests

from xpresso_env.testing.server import cli, serve, write_config

from .conftest import wait_until


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
