"""The ``header`` identity provider: a reverse proxy that has signed the user in names them in a
header (``auth.header.name``, e.g. ``X-Remote-User``). The header is believed only from the
addresses of ``auth.header.trusted_proxies``; from anywhere else it is treated as absent, and the
log says so once per address (a client forging it is worth one line, not one per request).
"""
from __future__ import annotations

import ipaddress
import threading
from typing import Optional

from xpresso_env.access.providers import Account, IdentityProviderInfo, Lookup, ProviderTools, SignInAttempt
from xpresso_env.core.errors import ConfigError
from xpresso_env.hookspecs import hookimpl

MAX_REMEMBERED = 4096  # addresses already logged; beyond this the set starts over


class TrustedHeader:
    name = "header"

    def __init__(self, tools: ProviderTools):
        settings = tools.settings.auth.header
        if settings.name is None:
            raise ConfigError("auth.providers names `header`: set auth.header.name (e.g. X-Remote-User) "
                              "and auth.header.trusted_proxies")
        self._header = settings.name.lower()
        try:
            self._trusted = [ipaddress.ip_network(cidr, strict=False) for cidr in settings.trusted_proxies]
        except ValueError as exc:
            raise ConfigError(f"auth.header.trusted_proxies: {exc}") from None
        self._log = tools.log
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._trusted)

    def sign_in(self, attempt: SignInAttempt, lookup: Lookup) -> Optional[Account]:
        value = attempt.headers.get(self._header)
        if value is None:
            return None
        if not self._is_trusted(attempt.address):
            with self._lock:
                first = attempt.address not in self._warned
                if first:
                    if len(self._warned) >= MAX_REMEMBERED:
                        self._warned.clear()
                    self._warned.add(attempt.address)
            if first:
                self._log.warning("header %s from %s ignored: not in auth.header.trusted_proxies",
                                  self._header, attempt.address[:64])
            return None
        name = value.strip()
        return Account(name=name, create=True) if name else None


@hookimpl
def xpresso_identity_providers() -> list[IdentityProviderInfo]:
    return [IdentityProviderInfo(name="header", description="a trusted reverse proxy's user header",
                                 factory=TrustedHeader)]
