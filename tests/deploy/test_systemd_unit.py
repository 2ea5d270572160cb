"""deploy/xpresso-env.service, checked as far as a machine without a running systemd allows:
``systemd-analyze verify`` (syntax, known keys and values, the executables exist) in an alternate
root holding the unit, the host's own system units and the project's installed console script at
the unit's ExecStart path; ``systemd-analyze security --offline`` for the hardening; and the
unit's command lines parsed by the real xpresso-env argument parser. Starting the unit itself
needs systemd as PID 1, which this machine does not have.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from xpresso_env.cli import build_parser
from xpresso_env.config import Settings, load_settings
from xpresso_env.testing import require

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "xpresso-env.service"
UNIT_NAME = UNIT.name
# systemd-analyze's exposure scale is 0-100 (10x the printed figure): 20 is "OK" or better.
MAX_EXPOSURE = 20


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (keys may repeat; `\\` continues a line)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    logical = re.sub(r"\\\n", " ", text)
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[(.+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def console_script() -> tuple[str, str]:
    """(name, target) of the console script that runs xpresso_env.cli, from setup.py."""
    text = (ROOT / "setup.py").read_text()
    found = re.findall(r'"([\w.-]+)\s*=\s*(xpresso_env\.cli:\w+)"', text)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


@pytest.fixture(scope="module")
def analyze_root(tmp_path_factory, unit) -> Path:
    """An alternate root for systemd-analyze: the host's system units, this unit, and the
    installed console script at the path ExecStart names."""
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze is missing (Debian package systemd)")
    root = tmp_path_factory.mktemp("systemd-root")
    host_units = Path("/usr/lib/systemd/system")
    require(host_units.is_dir(), "no system units in /usr/lib/systemd/system")
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy2(UNIT, root / "etc/systemd/system" / UNIT_NAME)
    name, _ = console_script()
    # The running interpreter's scripts folder first: a venv's bin/ is on PATH only once activated.
    installed = shutil.which(name, path=os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]))
    assert installed, f"the console script {name} is not installed"
    for key in ("ExecStartPre", "ExecStart"):
        for line in unit["Service"].get(key, []):
            exe = Path(shlex.split(line.lstrip("-@:+!"))[0])
            target = root / exe.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copy2(installed, target)
    for line in unit["Service"].get("ExecReload", []):  # a system command (kill): the host's own
        exe = Path(shlex.split(line.lstrip("-@:+!"))[0])
        target = root / exe.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        host = shutil.which(exe.name)
        assert host, f"{exe.name} is not installed"
        shutil.copy2(host, target)
    return root


def test_systemd_analyze_verify_is_clean(analyze_root):
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={analyze_root}",
                          f"/etc/systemd/system/{UNIT_NAME}"], capture_output=True, text=True, timeout=60)
    # Warnings (an unknown key, a bad value) are printed but do not change the exit code: none allowed.
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(analyze_root):
    """The check above can fail: the same root with a unit whose ExecStart does not exist."""
    broken = analyze_root / "etc/systemd/system/xpresso-env-broken.service"
    broken.write_text(UNIT.read_text().replace("ExecStart=/", "ExecStart=/nonexistent/"))
    try:
        res = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={analyze_root}",
                              f"/etc/systemd/system/{broken.name}"], capture_output=True, text=True, timeout=60)
    finally:
        broken.unlink()
    assert res.returncode != 0 and "/nonexistent/" in res.stderr, res.stderr


def test_hardening_exposure_is_ok(analyze_root):
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--threshold={MAX_EXPOSURE}",
                          "--no-pager", f"--root={analyze_root}", f"/etc/systemd/system/{UNIT_NAME}"],
                         capture_output=True, text=True, timeout=60)
    overall = [line for line in res.stdout.splitlines() if "Overall exposure" in line]
    assert res.returncode == 0, "\n".join(overall) or res.stdout + res.stderr


def test_service_runs_the_console_script_as_a_non_root_user(unit):
    service = unit["Service"]
    name, _ = console_script()
    user = service["User"][-1]
    assert user and user not in ("root", "0")
    parser = build_parser()
    (start,) = service["ExecStart"]
    argv = shlex.split(start)
    assert Path(argv[0]).name == name and Path(argv[0]).is_absolute()
    assert parser.parse_args(argv[1:]).command == "serve"
    pre = [shlex.split(line) for line in service.get("ExecStartPre", [])]
    assert [parser.parse_args(a[1:]).command for a in pre if Path(a[0]).name == name] == ["init"]
    env = dict(item.split("=", 1) for line in service["Environment"] for item in shlex.split(line))
    assert env["XPRESSO_ENV_CONFIG"] == "/etc/xpresso-env/config.yaml"


def test_hardening_options_and_writable_paths(unit):
    service = unit["Service"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectSystem"] == ["strict"]
    writable = [p for line in service["ReadWritePaths"] for p in line.split()]
    state = [f"/var/lib/{d}" for line in service.get("StateDirectory", []) for d in line.split()]
    assert "/var/lib/xpresso-env" in writable and "/var/lib/xpresso-env" in state

    # ProtectSystem=strict makes everything else read-only: every path the deployed config
    # (deploy/config.yaml, installed as XPRESSO_ENV_CONFIG) writes must be writable.
    settings = load_settings(ROOT / "deploy" / "config.yaml", env={})

    def written(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from written(value, f"{prefix}{f.name}.")
            elif isinstance(value, str) and value.startswith("var/"):
                yield f"{prefix}{f.name}"

    keys = [*written(Settings()), "storage.path"]
    for key in keys:
        value = settings
        for part in key.split("."):
            value = getattr(value, part)
        assert any(str(value).startswith(w.rstrip("/") + "/") for w in writable), f"{key}={value} is not writable"


@pytest.mark.slow  # a real serve with two processes
def test_exec_reload_reloads_a_running_server(unit, tmp_path):
    """`systemctl reload` runs ExecReload with $MAINPID, the supervisor's pid: run that command
    line on a real `serve` configured as deploy/config.yaml is (server.processes: auto)."""
    import requests

    from tests.waiting import wait_for
    from xpresso_env.testing.server import cli, serve, write_config

    assert load_settings(ROOT / "deploy" / "config.yaml", env={}).server.processes == (os.cpu_count() or 1)
    (reload,) = unit["Service"]["ExecReload"]
    config = write_config(tmp_path, {"storage": {"backend": "sqlite", "path": "db.sqlite3"},
                                     "auth": {"secret_file": "secret"}, "probes": {"enabled": False},
                                     "server": {"processes": 2},
                                     "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"}})
    cli(config, "init")

    def generation(url: str) -> int:
        try:
            status = requests.get(f"{url}/api/v2/health", timeout=10).json()["processes"]
        except requests.RequestException:
            return 0
        return status["generation"] if status["serving"] == 2 else 0

    with serve(config) as server:
        wait_for(lambda: generation(server.url) == 1, timeout_s=90, what=f"serving: {server.log()}")
        argv = [arg.replace("$MAINPID", str(server.pid)) for arg in shlex.split(reload)]
        subprocess.run(argv, check=True, timeout=10)
        wait_for(lambda: generation(server.url) == 2, timeout_s=90, what=f"reloaded: {server.log()}")
