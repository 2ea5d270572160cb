"""What a builder needs to push an image (``request.push``): the target, the pinned reference,
the credentials' short life, and the pre-flight check every builder makes before it pushes.

* The password lives only in the :class:`PushTarget` (kept out of its ``repr``), in the docker
  SDK's request header, or in a buildah authfile that exists for the push only
  (:func:`authfile`). It is never on a command line, in a record or in a log.
* :func:`preflight` asks the registry's ``GET /v2/`` with the credentials before anything is
  pushed, so a wrong password reads ``push refused: 401 Unauthorized`` and a registry that
  answers 500 or nothing fails the build with that reason, bounded by the build's deadline and
  stopped by its cancel.

Where each build's image goes (``registry.*`` rendered for a group) is the service's side:
:mod:`xpresso_env.builds.push`.
"""
from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["PushTarget", "push_url", "is_loopback", "authfile", "preflight"]


@dataclass(frozen=True)
class PushTarget:
    """Where one build's image goes, with what it needs to get there."""

    registry: str  # host[:port]
    repository: str  # host[:port]/namespace/name
    tag: str
    insecure: bool  # plain HTTP (or unverified TLS) allowed
    secure_scheme: bool  # registry.url is https
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def auth(self) -> Optional[dict[str, str]]:
        """The docker SDK's ``auth_config`` (None: anonymous)."""
        if self.username is None:
            return None
        return {"username": self.username, "password": self.password or ""}

    @property
    def base_url(self) -> str:
        return f"{'https' if self.secure_scheme else 'http'}://{self.registry}"


def push_url(target: PushTarget, digest: str) -> str:
    """``<host>/<namespace>/<name>:<tag>@sha256:<digest>``: the pinned reference."""
    return f"{target.ref}@{digest}"


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def authfile(target: PushTarget) -> Iterator[Optional[Path]]:
    """A containers-auth.json holding only this registry's credentials, readable by this user
    only, for the push alone; removed afterwards (None without credentials)."""
    if target.username is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="xpresso-auth-"))  # mode 0700
    path = folder / "auth.json"
    try:
        token = base64.b64encode(f"{target.username}:{target.password or ''}".encode()).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"auths": {target.registry: {"auth": token}}}, fh)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()


def _probe(target: PushTarget, timeout_s: float) -> Optional[str]:
    """``GET /v2/`` with the credentials: None when the registry lets us in, else why not."""
    import requests

    auth = (target.username, target.password or "") if target.username is not None else None
    try:
        r = requests.get(f"{target.base_url}/v2/", auth=auth, timeout=(min(10.0, timeout_s), timeout_s),
                         verify=not target.insecure, allow_redirects=False)
    except requests.exceptions.Timeout:
        return f"push failed: the registry {target.registry} did not answer within {timeout_s:.0f} s"
    except requests.exceptions.RequestException as exc:
        text = " ".join(str(exc).split())
        for marker in ("Connection refused", "Name or service not known", "certificate verify failed",
                       "Connection reset", "Remote end closed connection"):
            if marker in text:
                text = marker
                break
        return f"push failed: cannot reach the registry {target.registry}: {text[:200]}"
    if r.status_code == 200:
        return None
    challenge = r.headers.get("WWW-Authenticate", "")
    if r.status_code == 401 and challenge.lower().startswith("bearer"):
        return None  # token auth: the push itself does the token exchange (and says if refused)
    if r.status_code in (401, 403):
        what = "the credentials were refused" if target.username else "the registry needs credentials"
        return f"push refused: {r.status_code} {r.reason}: {what} ({target.registry})"
    return f"push failed: the registry {target.registry} answered {r.status_code} {r.reason} to GET /v2/"


def preflight(target: PushTarget, cancel: threading.Event, deadline: float) -> Optional[str]:
    """Run :func:`_probe` within the deadline, giving up at once on a cancel.

    Returns None (go on), a one-line failure, or the string ``"cancelled"`` / ``"timed out"``.
    The probe runs in a thread of its own so that a registry that hangs cannot hold the build
    beyond its deadline or past a cancel (the thread ends by its own timeout)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return "timed out"
    result: dict[str, Optional[str]] = {}
    done = threading.Event()

    def run() -> None:
        try:
            # A little beyond the deadline: the build's own timeout is what a hang runs into.
            result["reason"] = _probe(target, remaining + 1.0)
        except Exception as exc:  # noqa: BLE001 — a probe bug must fail the push, not the worker
            result["reason"] = f"push failed: {type(exc).__name__}: {exc}"
        done.set()

    threading.Thread(target=run, name="registry-preflight", daemon=True).start()
    while not done.wait(0.05):
        if cancel.is_set():
            return "cancelled"
        if time.monotonic() >= deadline:
            return "timed out"
    return result.get("reason")
