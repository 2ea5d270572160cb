"""A real OCI registry for tests: Debian's ``docker-registry`` (distribution 2.8) on loopback.

:func:`docker_registry` starts ``docker-registry serve CONFIG.yml`` with filesystem storage
under a folder of its own, on a free 127.0.0.1 port, optionally with htpasswd basic auth (the
bcrypt hash made by ``htpasswd -B``), and stops it afterwards. Docker treats 127.0.0.0/8
registries as insecure (plain HTTP) by default; buildah needs ``--tls-verify=false``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

REGISTRY_BIN = "docker-registry"


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:PORT
    folder: Path
    username: Optional[str] = None
    password: Optional[str] = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def registry_missing_reason() -> Optional[str]:
    if shutil.which(REGISTRY_BIN) is None:
        return "docker-registry is not installed (Debian package docker-registry)"
    if shutil.which("htpasswd") is None:
        return "htpasswd is not installed (Debian package apache2-utils)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(host: str) -> bool:
    try:
        with socket.create_connection(tuple(host.rsplit(":", 1)), timeout=0.5) as s:  # type: ignore[arg-type]
            s.sendall(b"GET /v2/ HTTP/1.0\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


@contextlib.contextmanager
def docker_registry(username: Optional[str] = None, password: Optional[str] = None,
                    start_timeout_s: float = 20.0) -> Iterator[Registry]:
    """A running registry on loopback; with ``username``/``password``, basic auth (htpasswd)."""
    folder = Path(tempfile.mkdtemp(prefix="xpresso-registry-"))
    auth = ""
    if username is not None:
        hashed = subprocess.run(["htpasswd", "-Bbn", username, password or ""], capture_output=True, text=True,
                                check=True).stdout
        (folder / "htpasswd").write_text(hashed)
        auth = f"auth:\n  htpasswd:\n    realm: xpresso-test\n    path: {folder / 'htpasswd'}\n"
    proc = None
    try:
        for _ in range(5):  # a port taken between the probe and the bind: try another
            host = f"127.0.0.1:{_free_port()}"
            (folder / "config.yml").write_text(
                f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
                f"  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth}")
            log = open(folder / "registry.log", "ab")
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(folder / "config.yml")], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            deadline = time.monotonic() + start_timeout_s
            while proc.poll() is None and not _answers(host) and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None and _answers(host):
                break
            _stop(proc)
            proc = None
        if proc is None:
            raise RuntimeError("docker-registry did not start: "
                               + (folder / "registry.log").read_text(errors="replace")[-1000:])
        yield Registry(host=host, folder=folder, username=username, password=password)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
