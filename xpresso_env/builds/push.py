"""Registry push (``registry.*``): the URL and namespace rules, where an image goes, the
credentials' short life, and the pre-flight check every builder makes before it pushes.

* ``registry.url`` is ``http(s)://host[:port]`` and nothing else: no path, no ``user@``, no
  query. Plain ``http://`` needs ``registry.insecure: true`` (a registry on loopback or a lab
  network). These are checked when the configuration is loaded (:func:`check_settings`).
* An image ``name:tag`` of group ``G`` goes to ``<host>/<namespace>/<name>:<tag>``, the
  namespace being ``registry.namespace`` with ``{group}`` replaced by ``G``, lower-cased.
  A template that cannot render to a valid repository path is refused at load; a group whose
  name renders to an invalid one fails that build, saying why (:func:`target_for`).
* The password is read from ``registry.password_file`` for each push and lives only in the
  :class:`PushTarget` (kept out of its ``repr``), in the docker SDK's request header, or in a
  buildah authfile that exists for the push only (:func:`authfile`). It is never on a command
  line, in a record or in a log.
* :func:`preflight` asks the registry's ``GET /v2/`` with the credentials before anything is
  pushed, so a wrong password reads ``push refused: 401 Unauthorized`` and a registry that
  answers 500 or nothing fails the build with that reason, bounded by the build's deadline and
  stopped by its cancel.
"""
from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..config import RegistrySettings

__all__ = ["PushTarget", "RegistryAddress", "parse_url", "render_namespace", "check_settings", "target_for",
           "authfile", "preflight", "push_url", "PushError", "is_loopback"]

# Docker's distribution reference grammar (a repository path component, and the whole name).
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_MAX_NAME = 255  # host/namespace/name, as distribution limits it
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SAMPLE_GROUP = "group"


class PushError(Exception):
    """A push that cannot happen; the message is the one-line ``meta.error``."""


@dataclass(frozen=True)
class RegistryAddress:
    host: str  # "host[:port]" as the image references write it
    secure: bool  # https (False: plain http)


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


def parse_url(url: str, insecure: bool, where: str = "registry.url") -> RegistryAddress:
    """``http(s)://host[:port]``; raises ValueError with the reason."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{where}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{where}: must be an http:// or https:// URL (got {parts.scheme or 'no'} scheme)")
    if "@" in parts.netloc:
        raise ValueError(f"{where}: must not hold a user name or password; use registry.username "
                         f"and registry.password_file")
    if not parts.hostname:
        raise ValueError(f"{where}: has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{where}: must be only scheme://host[:port] (no path, query or fragment); "
                         f"put the repository path in registry.namespace")
    host = parts.hostname.lower()
    if not re.fullmatch(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]", host if ":" not in host else f"[{host}]"):
        raise ValueError(f"{where}: {parts.hostname!r} is not a valid host name")
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    if parts.scheme == "http" and not insecure:
        raise ValueError(f"{where}: plain http:// needs registry.insecure: true (a registry on loopback or "
                         f"a lab network); use https:// otherwise")
    return RegistryAddress(host=netloc, secure=parts.scheme == "https")


def render_namespace(template: str, group: str) -> str:
    """The namespace for ``group``, lower-cased and checked; raises ValueError with the reason."""
    for name in _PLACEHOLDER.findall(template):
        if name != "group":
            raise ValueError(f"registry.namespace: unknown placeholder {{{name}}} (only {{group}})")
    rendered = template.replace("{group}", group).lower()
    components = rendered.split("/")
    if not all(_COMPONENT.fullmatch(c) for c in components):
        raise ValueError(f"registry.namespace {template!r} renders to {rendered!r} for group {group!r}, "
                         f"which is not a valid repository path (lower-case letters, digits and "
                         f"single . _ - between them, parts separated by /)")
    return rendered


def check_settings(registry: "RegistrySettings", where: str) -> None:
    """Load-time checks of ``registry.*``; raises ValueError naming the key."""
    if registry.url is None:
        return
    address = parse_url(registry.url, registry.insecure)
    render_namespace(registry.namespace, _SAMPLE_GROUP)
    if (registry.username is None) != (registry.password_file is None):
        raise ValueError("registry.username and registry.password_file go together: set both or neither")
    if len(address.host) + len(registry.namespace) > _MAX_NAME:
        raise ValueError("registry.url and registry.namespace make repository names longer than 255 characters")


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def target_for(registry: "RegistrySettings", password_file: Optional[Path], group: str, name: str,
               tag: str) -> Optional[PushTarget]:
    """Where ``group``'s ``name:tag`` is pushed, or None without ``registry.url``.

    :param password_file: ``registry.password_file`` resolved against the configuration's folder.
    :raises PushError: the namespace renders invalid for this group, or the password cannot be read.
    """
    if registry.url is None:
        return None
    try:
        address = parse_url(registry.url, registry.insecure)
        namespace = render_namespace(registry.namespace, group)
    except ValueError as exc:
        raise PushError(f"push failed: {exc}") from None
    repository = f"{address.host}/{namespace}/{name}"
    if len(repository) > _MAX_NAME:
        raise PushError(f"push failed: the repository name {repository!r} is longer than {_MAX_NAME} characters")
    password = None
    if registry.username is not None:
        if password_file is None:
            raise PushError("push failed: registry.username is set without registry.password_file")
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise PushError(f"push failed: cannot read registry.password_file {password_file}: {reason}") from None
    return PushTarget(registry=address.host, repository=repository, tag=tag, insecure=registry.insecure,
                      secure_scheme=address.secure, username=registry.username, password=password)


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


class PushTargets:
    """``registry.*`` as the build queue uses it: where each build's image goes.

    :param registry: the ``registry`` settings.
    :param password_file: ``registry.password_file`` resolved against the configuration's folder.
    """

    def __init__(self, registry: "RegistrySettings", password_file: Optional[Path]):
        self.registry = registry
        self.password_file = password_file

    @property
    def enabled(self) -> bool:
        return self.registry.url is not None

    def target(self, group: str, name: str, tag: str) -> Optional[PushTarget]:
        """:raises PushError: see :func:`target_for`."""
        return target_for(self.registry, self.password_file, group, name, tag)
