"""The README's troubleshooting table quotes the messages the program really prints."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _quoted_symptoms() -> list[re.Pattern]:
    """The code spans of the symptom column of README's last "## Troubleshooting", "…" standing
    for any text."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.rindex("\n## Troubleshooting"):]
    section = section[:section.index("\n## ", 1)]
    patterns = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| symptom"):
            cell = re.split(r"(?<!\\)\|", line)[1]
            for double, single in re.findall(r"``\s?(.+?)\s?``|`([^`]+)`", cell):
                text = (double or single).replace("\\|", "|")
                patterns.append(re.compile(re.escape(text).replace("…", ".+")))
    return patterns


def _error(cfg: Path, *args: str, env: dict | None = None) -> str:
    p = subprocess.run([sys.executable, "-m", "xpresso_env", "--config", str(cfg), *args], capture_output=True,
                       text=True, timeout=60, env={**os.environ, **(env or {})})
    assert p.returncode == 1, p.stdout
    prefix = "xpresso-env: error: "
    assert p.stderr.startswith(prefix) and p.stderr.count("\n") == 1, p.stderr
    return p.stderr[len(prefix):].strip()


@pytest.mark.slow
def test_troubleshooting_quotes_the_real_messages(tmp_path):
    cfg = tmp_path / "xpresso.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"backend": "sqlite", "path": "db.sqlite3"},
                                   "auth": {"secret_file": "secret"}}))
    messages = []
    (tmp_path / "secret").write_text("s" * 40)
    messages.append(_error(cfg, "group", "list"))  # a store `init` never made
    (tmp_path / "secret").unlink()
    subprocess.run([sys.executable, "-m", "xpresso_env", "--config", str(cfg), "init"], check=True,
                   capture_output=True, timeout=60)
    (tmp_path / "secret").unlink()
    messages.append(_error(cfg, "group", "list"))
    subprocess.run([sys.executable, "-m", "xpresso_env", "--config", str(cfg), "init"], check=True,
                   capture_output=True, timeout=60)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the README shows the default port
        messages.append(_error(cfg, "serve", "--port", str(port)).replace(f":{port}:", ":8080:"))
    messages.append(_error(cfg, "group", "list", env={"XPRESSO_ENV_STORAGE_BACKND": "yaml"}))
    messages.append(_error(cfg, "export", str(tmp_path / "missing" / "all.yaml")))
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: {backnd: sqlite}\n")
    messages.append(_error(bad, "group", "list"))
    bad.write_text("storage: {backend: sqlite\n")
    messages.append(_error(bad, "group", "list"))
    (tmp_path / "empty.sqlite3").touch()  # a store file older than any schema
    messages.append(_error(cfg, "group", "list", env={"XPRESSO_ENV_STORAGE_PATH": str(tmp_path / "empty.sqlite3")}))

    patterns = _quoted_symptoms()
    for message in messages:
        assert any(p.fullmatch(message) for p in patterns), f"README's troubleshooting does not quote: {message}"
