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


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert "loaded 2 groups, 1 user, 1 harness, 1 engine" in out
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


def test_only_init_creates_a_store_and_the_others_say_where_they_looked(cfg, tmp_path):
    """Issue 17: `group list` in an empty folder made var/xpresso.sqlite3 there, then advised
    `init` without naming the path."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XPRESSO_ENV_")}
    for command in (["group", "list"], ["user", "add", "bob"], ["token", "list"]):
        p = subprocess.run(EXE + command, capture_output=True, text=True, timeout=60, env=env, cwd=empty)
        assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
        assert p.stderr.startswith(f"xpresso-env: error: no sqlite store at {empty}/var/xpresso.sqlite3; "
                                   f"configuration: none (no --config, $XPRESSO_ENV_CONFIG unset"), p.stderr
        assert "`xpresso-env init`" in p.stderr and "--config FILE" in p.stderr
        assert list(empty.iterdir()) == [], "a command other than init created files"
    p = run(cfg, "group", "list", ok=False)
    assert f"no sqlite store at {cfg.parent}/data/db.sqlite3; configuration {cfg}." in p.stderr
    assert not (cfg.parent / "data" / "db.sqlite3").exists()
    run(cfg, "init")
    assert "GROUP" in run(cfg, "group", "list").stdout


def test_a_malformed_configuration_is_one_line_with_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage:\n  backend: sqlite\n  path: [data\nserver: {port: 1}\n")
    p = run(bad, "group", "list", ok=False)
    assert p.stderr.startswith(f"xpresso-env: error: {bad}, line 4, column 7: not valid YAML: "), p.stderr
    assert "<unicode string>" not in p.stderr
    bad.write_text("a: b: c\n")
    assert f"{bad}, line 1, column 5: not valid YAML: mapping values are not allowed here" in \
        run(bad, "init", ok=False).stderr


def test_version_and_python_m_xpresso_env(cfg):
    from xpresso_env import __version__

    for exe in (EXE, [sys.executable, "-m", "xpresso_env"]):
        p = subprocess.run(exe + ["--version"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout.strip() == f"xpresso-env {__version__}", p.stderr
    p = subprocess.run([sys.executable, "-m", "xpresso_env", "--config", str(cfg), "init"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and "schema version" in p.stdout, p.stderr


def test_serve_help_explains_each_flag_with_its_default(cfg):
    from xpresso_env.config import Settings

    d = Settings().server
    text = " ".join(run(cfg, "serve", "--help").stdout.split())  # argparse wraps lines
    for flag, key, default in (("--host", "server.host", d.host), ("--port", "server.port", d.port),
                               ("--threads", "server.threads", d.threads)):
        assert flag in text and f"({key}, default {default})" in text, text


def test_the_docker_sdk_is_a_plain_dependency():
    """`pip install .` must bring the Docker builder's SDK: it is in install_requires."""
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[2] / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: k.value for k in call.keywords}
    requires = ast.literal_eval(kw["install_requires"])
    assert any(r.startswith("docker>=") for r in requires), requires
    extras = ast.literal_eval(kw["extras_require"])
    assert extras.get("docker", []) == []  # only an alias now


def test_bad_log_level_and_unknown_variables_are_one_line(cfg):
    run(cfg, "init")
    p = run(cfg, "group", "list", ok=False, env={"XPRESSO_ENV_LOG_LEVEL": "loud"})
    assert "XPRESSO_ENV_LOG_LEVEL" in p.stderr and "'LOUD'" in p.stderr and "DEBUG" in p.stderr
    p = run(cfg, "group", "list", ok=False, env={"XPRESSO_ENV_SERVER_PROT": "9000"})
    assert p.stderr.strip() == ("xpresso-env: error: environment variable XPRESSO_ENV_SERVER_PROT: unknown setting "
                                "(did you mean XPRESSO_ENV_SERVER_PORT?)")
    # the variables that are not settings are known
    run(cfg, "group", "list", env={"XPRESSO_ENV_LOG_LEVEL": "warning", "XPRESSO_ENV_DEBUG": "",
                                   "XPRESSO_ENV_BLOCK_PLUGINS": "", "XPRESSO_ENV_CONFIG": str(cfg)})


def test_config_error_reads_file_key_message(cfg, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: {backnd: sqlite}\n")
    p = run(bad, "init", ok=False)
    assert p.stderr.startswith(f"xpresso-env: error: {bad}: storage.backnd: unknown key"), p.stderr


@pytest.mark.slow
def test_export_to_a_missing_folder_says_so(cfg, tmp_path):
    run(cfg, "init")
    target = tmp_path / "no" / "such" / "all.yaml"
    p = run(cfg, "export", str(target), ok=False)
    assert p.stderr.strip() == f"xpresso-env: error: cannot write {target}: the folder {target.parent} does not exist"
    assert ".tmp" not in p.stderr
    ok = tmp_path / "all.yaml"
    run(cfg, "export", str(ok))
    assert ok.stat().st_mode & 0o777 == 0o600  # it holds engine credentials
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no temp file left


def _rows(out: str) -> list[list[str]]:
    return [line.split(None) for line in out.strip().splitlines()[1:]]


@pytest.mark.slow
def test_group_and_user_lists_and_set_role(cfg):
    run(cfg, "init", "--group", "g1", "--admin", "root")
    run(cfg, "group", "add", "g2")
    run(cfg, "user", "add", "alice", "--group", "g1:member", "--group", "g2:guest")
    run(cfg, "user", "add", "bob")
    groups = run(cfg, "group", "list").stdout
    assert groups.splitlines()[0].split() == ["GROUP", "CREATED", "MEMBERS"]
    assert [(r[0], r[2]) for r in _rows(groups)] == [("g1", "1"), ("g2", "1")]
    users = run(cfg, "user", "list").stdout
    assert {r[0]: r[1:] for r in _rows(users)} == {"root": ["yes", "-"], "alice": ["no", "g1:member,", "g2:guest"],
                                                  "bob": ["no", "-"]}
    assert "is group_admin in group g2" in run(cfg, "user", "set-role", "bob", "g2:group_admin").stdout
    run(cfg, "user", "set-role", "alice", "g1:privilege_member")
    assert "removed from group g2" in run(cfg, "user", "set-role", "alice", "g2:none").stdout
    assert {r[0]: r[1:] for r in _rows(run(cfg, "user", "list").stdout)} == {
        "root": ["yes", "-"], "alice": ["no", "g1:privilege_member"], "bob": ["no", "g2:group_admin"]}
    for bad in (["alice", "g1:emperor"], ["alice", "nogroup:member"], ["nobody", "g1:member"], ["alice", "g1"]):
        run(cfg, "user", "set-role", *bad, ok=False)
    p = run(cfg, "user", "set-role", "alice", "g1:emperor", ok=False)
    assert "unknown role 'emperor'; roles: guest, member, privilege_member, group_admin" in p.stderr
    run(cfg, "user", "delete", "bob")
    assert [r[0] for r in _rows(run(cfg, "user", "list").stdout)] == ["root", "alice"]


@pytest.mark.slow
def test_token_list_shows_issued_and_revoked_tokens(cfg):
    run(cfg, "init", "--group", "g1", "--admin", "root")
    run(cfg, "user", "add", "alice", "--group", "g1:member")
    first = run(cfg, "token", "create", "alice", "--days", "2").stdout
    second = run(cfg, "token", "create", "alice").stdout
    jti1, jti2 = (out.split("id (jti) ")[1].split(",")[0] for out in (first, second))
    run(cfg, "token", "revoke", jti1)
    out = run(cfg, "token", "list", "alice").stdout
    assert out.splitlines()[0].split() == ["JTI", "USER", "ISSUED", "EXPIRES", "REVOKED"]
    rows = {r[0]: r for r in _rows(out)}
    assert set(rows) == {jti1, jti2}
    assert rows[jti1][1] == "alice" and rows[jti1][4] == "yes" and rows[jti2][4] == "no"
    from xpresso_env.core.timeutil import parse_time

    issued, expires = parse_time(rows[jti1][2]), parse_time(rows[jti1][3])
    assert (expires - issued).total_seconds() == 2 * 86400
    everyone = {r[0]: r[1] for r in _rows(run(cfg, "token", "list").stdout)}
    assert everyone[jti1] == "alice" and "root" in everyone.values() and len(everyone) == 3
    # the token itself is never stored
    token = second.strip().splitlines()[-1].split()[1]
    assert token.encode() not in (cfg.parent / "data" / "db.sqlite3").read_bytes()
    run(cfg, "token", "list", "nobody", ok=False)
