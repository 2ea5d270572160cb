"""The identity commands as a real process (CONTRACT sections 13 and 16): the issue's bob, set-password,
the audit, and `init` upgrading a store of the previous schema."""
from __future__ import annotations

import sqlite3
import time

import pytest
import yaml

from tests.cli.test_cli import run


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "xpresso.yaml"
    path.write_text(yaml.safe_dump({"storage": {"backend": "sqlite", "path": "data/db.sqlite3"},
                                    "auth": {"secret_file": "data/secret", "password_time_cost": 1,
                                             "password_memory_kib": 1024}}))
    return path


@pytest.mark.slow
def test_a_deleted_bob_stays_deleted_for_his_old_token(cfg):
    """The issue's reproduction, as typed."""
    from falcon.testing import TestClient

    from xpresso_env.app import build_context, create_app
    from xpresso_env.config import load_settings

    run(cfg, "init")
    run(cfg, "group", "add", "g1")
    run(cfg, "user", "add", "bob", "--group", "g1:group_admin")
    token = run(cfg, "token", "create", "bob").stdout.strip().splitlines()[-1]
    jti = run(cfg, "token", "list", "bob").stdout.splitlines()[1].split()[0]
    run(cfg, "user", "delete", "bob")
    run(cfg, "user", "add", "bob", "--group", "g1:guest")
    listed = run(cfg, "token", "list", "bob").stdout.splitlines()
    assert [line.split()[-1] for line in listed if line.startswith(jti)] == ["yes"]  # REVOKED
    ctx = build_context(load_settings(cfg, env={}), images=False)
    try:
        r = TestClient(create_app(ctx)).simulate_get("/api/v2/harnesses", headers={"Authorization": token})
        assert r.status_code == 401
    finally:
        ctx.close()


@pytest.mark.slow
def test_set_password_from_stdin_then_the_audit(cfg):
    import subprocess

    from tests.cli.test_cli import EXE

    run(cfg, "init")
    run(cfg, "user", "add", "alice")
    p = subprocess.run(EXE + ["--config", str(cfg), "user", "set-password", "alice", "--stdin"],
                       input="a long password\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "a long password" not in p.stdout + p.stderr
    p = subprocess.run(EXE + ["--config", str(cfg), "user", "set-password", "alice", "--stdin"],
                       input="short\n", capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "at least 8 characters" in p.stderr
    run(cfg, "user", "set-password", "nobody", "--stdin", ok=False)
    db = sqlite3.connect(cfg.parent / "data" / "db.sqlite3")
    body = db.execute("SELECT body FROM docs WHERE kind = 'user' AND id = 'alice'").fetchone()[0]
    assert "$argon2id$" in body and "a long password" not in body
    out = run(cfg, "audit").stdout.splitlines()
    assert out[0].split() == ["AT", "EVENT", "USER", "BY", "ADDRESS", "DETAIL"]
    assert out[1].split()[1:4] == ["password_changed", "alice", "(cli)"]
    assert run(cfg, "audit", "--event", "login").stdout.splitlines()[1:] == []
    run(cfg, "audit", "--event", "coffee", ok=False)


@pytest.mark.slow
def test_init_upgrades_a_store_of_the_previous_schema(cfg):
    """A store written by the previous version (schema 3, users without uid) is brought up by `init`:
    the deleted user's token is revoked, the live user's binds to their new uid."""
    import dataclasses

    from xpresso_env.core.models import TokenRecord
    from xpresso_env.testing.storage_suite import at, insert, make_user, open_backend

    spec = {"storage": {"backend": "sqlite", "path": str(cfg.parent / "data" / "db.sqlite3")}}
    old = open_backend(spec)
    old.init(target_version=3)
    insert(old, make_user("ann"), dataclasses.replace(make_user("dan"), deleted=True),
           TokenRecord(id="aa11", user="ann", date_created=at(5), expires=at(10 ** 9)),
           TokenRecord(id="dd11", user="dan", date_created=at(5), expires=at(10 ** 9)))
    old.close()
    out = run(cfg, "init").stdout
    assert "4" in out
    listed = {line.split()[0]: line.split()[-1] for line in run(cfg, "token", "list").stdout.splitlines()[1:]}
    assert listed == {"aa11": "no", "dd11": "yes"}


@pytest.mark.slow
def test_set_password_prompts_twice_on_a_terminal(cfg):
    """Typed at a terminal: asked twice, echo off; two different answers change nothing."""
    import fcntl
    import os
    import pty
    import select
    import subprocess
    import termios

    from tests.cli.test_cli import EXE

    run(cfg, "init")
    run(cfg, "user", "add", "alice")

    def typed(*answers: str) -> tuple[int, str]:
        master, slave = pty.openpty()

        def controlling_terminal() -> None:
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        proc = subprocess.Popen(EXE + ["--config", str(cfg), "user", "set-password", "alice"], stdin=slave,
                                stdout=slave, stderr=slave, preexec_fn=controlling_terminal, close_fds=True)
        os.close(slave)
        seen, answered = b"", 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 1024)
                except OSError:
                    break
                prompts = seen.count(b"New password for alice: ") + seen.count(b"Again: ")
                while answered < min(prompts, len(answers)):  # each prompt answered once
                    os.write(master, (answers[answered] + "\n").encode())
                    answered += 1
        proc.wait(30)
        os.close(master)
        return proc.returncode, seen.decode(errors="replace")

    code, out = typed("first password", "second password")
    assert code != 0 and "differ" in out
    code, out = typed("a good password", "a good password")
    assert code == 0 and "New password for alice:" in out and "Again:" in out and "password of alice set" in out
