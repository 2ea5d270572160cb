"""Where a pushed image goes: the grammar of ``registry.url`` and ``registry.namespace``.

Its own module, with no I/O and no settings type, because both sides need it: the configuration
checks these keys when it is loaded, and the build side renders each build's repository from
them (:mod:`xpresso_env.builds.push`); neither imports the other.

* ``registry.url`` is ``http(s)://host[:port]`` and nothing else: no path, no ``user@``, no
  query. Plain ``http://`` needs ``registry.insecure: true`` (a registry on loopback or a lab
  network).
* The namespace is ``registry.namespace`` with ``{group}`` replaced by the group's name,
  lower-cased, and must be a valid repository path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .wire import REPOSITORY_COMPONENT

__all__ = ["RegistryAddress", "parse_url", "render_namespace", "MAX_REPOSITORY", "SAMPLE_GROUP"]

MAX_REPOSITORY = 255  # host/namespace/name, as distribution limits it
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
SAMPLE_GROUP = "group"  # what a namespace template is rendered with when it is checked at load


@dataclass(frozen=True)
class RegistryAddress:
    host: str  # "host[:port]" as the image references write it
    secure: bool  # https (False: plain http)


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
    if not all(REPOSITORY_COMPONENT.fullmatch(c) for c in components):
        raise ValueError(f"registry.namespace {template!r} renders to {rendered!r} for group {group!r}, "
                         f"which is not a valid repository path (lower-case letters, digits and "
                         f"single . _ - between them, parts separated by /)")
    return rendered
