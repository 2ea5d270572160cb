"""The command line, run as a real process: each command, and one clear error line on failure."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import yaml

EXE = [sys.executable, "-m", "xpresso_env.cli"]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "xpresso.yaml"
    path.write_text(yaml.safe_dump({"storage": {"backend": "sqlite", "path": "data/db.sqlite3"},
                                    "auth": {"secret_file": "data/secret"}}))
    return path


def run(cfg: Path, *args: str, ok: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(EXE + ["--config", str(cfg), *args], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **(env or {})})
    if ok:
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode != 0, p.stdout
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("xpresso-env: error: "), p.stderr
        assert "Traceback" not in p.stderr
    return p


def test_init_is_idempotent_and_makes_a_private_secret(cfg):
    first = run(cfg, "init")
    assert "schema version" in first.stdout and "created" in first.stdout
    secret = cfg.parent / "data" / "secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    content = secret.read_text()
    second = run(cfg, "init")
    assert "already up to date" in second.stdout and secret.read_text() == content


def test_groups_users_tokens(cfg):
    run(cfg, "init")
    run(cfg, "group", "add", "myGroup")
    run(cfg, "group", "add", "myGroup", ok=False)
    run(cfg, "user", "add", "alice", "--group", "myGroup:member")
    run(cfg, "user", "add", "alice", ok=False)
    run(cfg, "user", "add", "bob", "--group", "nope:member", ok=False)
    run(cfg, "user", "add", "carol", "--group", "myGroup:emperor", ok=False)
    run(cfg, "user", "add", "root", "--superuser")
    out = run(cfg, "token", "create", "alice", "--days", "3").stdout.strip().splitlines()
    assert out[-1].startswith("Jwt ")
    secret = (cfg.parent / "data" / "secret").read_text().strip()
    claims = jwt.decode(out[-1].split()[1], secret, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 3 * 86400
    run(cfg, "token", "revoke", claims["jti"])
    run(cfg, "token", "create", "nobody", ok=False)
    run(cfg, "token", "revoke", "not a jti", ok=False)


def test_load_fixtures(cfg, tmp_path):
    run(cfg, "init")
    fixtures = tmp_path / "f.yaml"
    fixtures.write_text("""
groups: [myGroup, otherGroup]
users:
  - {name: alice, superuser: false, groups: {myGroup: member, otherGroup: guest}}
harnesses:
  - {group: myGroup, id: 94f03015-5f0d-4c2e-a6e6-49ca71442a36, name: TestHarness, harness: pyATS,
     path: /path/to/pyATS, site: OTT, bldg: ALL, created_by: test_user}
engines:
  - {group: myGroup, name: ExecEngine, type: jenkins, base_url: "https://my-jenkins.mycompany.com",
     site: OTT, bldg: ALL, username: jenkins-user, api_token: "write-only secret"}
""")
    out = run(cfg, "load", str(fixtures)).stdout
    assert "2 group(s), 1 user(s), 1 harness(es), 1 engine(s)" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("harnesses: [{group: nope, name: x, path: /p}]")
    run(cfg, "load", str(bad), ok=False)
    (tmp_path / "broken.yaml").write_text("groups: [a\n  b: {")
    run(cfg, "load", str(tmp_path / "broken.yaml"), ok=False)
    run(cfg, "load", str(tmp_path / "missing.yaml"), ok=False)


def test_config_errors_name_the_key_and_file(cfg, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: {backend: sqlite, colour: blue}\n")
    p = run(bad, "init", ok=False)
    assert "storage.colour" in p.stderr and str(bad) in p.stderr
    bad.write_text("server: {port: many}\n")
    p = run(bad, "init", ok=False)
    assert "server.port" in p.stderr
    p = run(cfg, "init", ok=False, env={"XPRESSO_ENV_STORAGE_BACKEND": "mongodb"})
    assert "mongodb" in p.stderr and "sqlite" in p.stderr
    p = run(cfg, "init", ok=False, env={"XPRESSO_ENV_SERVER_THREADS": "lots"})
    assert "XPRESSO_ENV_SERVER_THREADS" in p.stderr


def test_commands_before_init_fail_cleanly(cfg):
    run(cfg, "group", "add", "g", ok=False)
