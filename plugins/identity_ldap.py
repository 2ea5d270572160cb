"""The ``ldap`` identity provider: a real directory (OpenLDAP, Active Directory) through ldap3,
a maintained pure-Python client (CONTRACT section 13; settings under ``auth.ldap``).

Two ways to find the user: bind as ``user_dn_template`` filled with the name (OpenLDAP's
``uid={username},ou=people,...``, or AD's ``{username}@example.org``), or bind as ``bind_dn``,
search ``user_filter`` under ``user_search_base`` and bind as the one entry found. Then the groups
whose ``group_filter`` names the user give the roles ``group_roles`` maps them to, re-read at every
sign-in. ``ldaps://`` or ``start_tls`` with ``ca_file`` checks the directory's certificate.

Every network wait is bounded (``connect_timeout_s`` to connect, ``timeout_s`` for each answer):
a directory that is down or hangs is a 503 within seconds, never a hung request thread.
"""
from __future__ import annotations

import math
import ssl
from typing import Any, Optional

from xpresso_env.access.providers import Account, IdentityProviderInfo, Lookup, ProviderTools, SignInAttempt
from xpresso_env.config import LdapSettings
from xpresso_env.core.errors import ConfigError, ServiceUnavailable
from xpresso_env.hookspecs import hookimpl

INVALID_CREDENTIALS = 49
NO_SUCH_OBJECT = 32
UNAVAILABLE = "The directory (auth.ldap) cannot be reached, try again later."
ROLE_ORDER = ("guest", "member", "privilege_member", "group_admin")


def _role_map(settings: LdapSettings) -> dict[str, list[tuple[str, str]]]:
    """``group_roles`` checked: lower-cased group DN -> [(GROUP, ROLE)]."""
    out: dict[str, list[tuple[str, str]]] = {}
    for dn, items in settings.group_roles.items():
        for item in items:
            group, sep, role = item.rpartition(":")
            if not sep or not group or role not in ROLE_ORDER:
                raise ConfigError(f"auth.ldap.group_roles: {dn}: expected GROUP:ROLE with a role of "
                                  f"{', '.join(ROLE_ORDER)}, got {item!r}")
            out.setdefault(dn.strip().lower(), []).append((group, role))
    return out


class LdapDirectory:
    name = "ldap"

    def __init__(self, tools: ProviderTools):
        import ldap3  # imported here: only a server that uses the provider needs it

        self._ldap3 = ldap3
        s = self._settings = tools.settings.auth.ldap
        if not s.url or not s.url.startswith(("ldap://", "ldaps://")):
            raise ConfigError("auth.ldap.url: ldap://host[:port] or ldaps://host[:port] is required by the ldap provider")
        if not s.user_dn_template and not (s.user_search_base and s.bind_dn):
            raise ConfigError("auth.ldap: set user_dn_template, or bind_dn, bind_password and user_search_base")
        self._roles = _role_map(s)
        self._log = tools.log
        tls = None
        if s.url.startswith("ldaps://") or s.start_tls:
            ca = str(tools.settings.resolve(s.ca_file)) if s.ca_file else None
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca)
        self._server = ldap3.Server(s.url, use_ssl=s.url.startswith("ldaps://"), tls=tls, get_info=ldap3.NONE,
                                    connect_timeout=s.connect_timeout_s)

    # -- one sign-in ------------------------------------------------------------------------------
    def sign_in(self, attempt: SignInAttempt, lookup: Lookup) -> Optional[Account]:
        if not attempt.username or not attempt.password:
            return None  # an empty password would be an anonymous bind, which "succeeds"
        from ldap3.core.exceptions import LDAPException

        try:
            return self._sign_in(attempt.username, attempt.password)
        except LDAPException as exc:
            self._log.warning("auth.ldap: %s: %s", self._settings.url, type(exc).__name__)
            raise ServiceUnavailable(UNAVAILABLE) from None

    def _connection(self, user: Optional[str], password: Optional[str]) -> Any:
        conn = self._ldap3.Connection(self._server, user=user, password=password, auto_bind=self._ldap3.AUTO_BIND_NONE,
                                      # whole seconds: ldap3 packs it into SO_RCVTIMEO
                                      receive_timeout=max(1, math.ceil(self._settings.timeout_s)),
                                      raise_exceptions=False,
                                      read_only=True)
        conn.open()
        if self._settings.start_tls and not self._settings.url.startswith("ldaps://"):
            if not conn.start_tls():
                raise ServiceUnavailable(UNAVAILABLE)
        return conn

    def _bind(self, conn: Any) -> bool:
        """True when bound; False for wrong credentials; the directory's other refusals are 503s."""
        if conn.bind():
            return True
        if conn.result.get("result") in (INVALID_CREDENTIALS, NO_SUCH_OBJECT):
            return False
        self._log.warning("auth.ldap: bind refused: %s", conn.result.get("description"))
        raise ServiceUnavailable(UNAVAILABLE)

    def _sign_in(self, username: str, password: str) -> Optional[Account]:
        from ldap3.utils.conv import escape_filter_chars
        from ldap3.utils.dn import escape_rdn

        s = self._settings
        service = None
        if s.user_dn_template:
            user_dn = s.user_dn_template.format(username=escape_rdn(username))
        else:
            service = self._connection(s.bind_dn, s.bind_password)
            try:
                if not self._bind(service):
                    self._log.warning("auth.ldap: bind_dn %s was refused: check auth.ldap.bind_password", s.bind_dn)
                    raise ServiceUnavailable(UNAVAILABLE)
                service.search(s.user_search_base, s.user_filter.format(username=escape_filter_chars(username)),
                               search_scope=self._ldap3.SUBTREE, attributes=["1.1"], size_limit=2)
                found = [e["dn"] for e in service.response or [] if e.get("type") == "searchResEntry"]
            except BaseException:
                service.unbind()
                raise
            if len(found) != 1:
                service.unbind()
                return None
            user_dn = found[0]
        conn = self._connection(user_dn, password)
        try:
            if not self._bind(conn):
                return None
            reader = service or conn
            email = self._email(reader, user_dn)
            groups = self._groups(reader, user_dn)
        finally:
            conn.unbind()
            if service is not None:
                service.unbind()
        return Account(name=username, email=email, directory_roles=self._roles_of(groups), create=True)

    def _email(self, conn: Any, user_dn: str) -> Optional[str]:
        attr = self._settings.email_attribute
        conn.search(user_dn, "(objectClass=*)", search_scope=self._ldap3.BASE, attributes=[attr])
        for entry in conn.response or []:
            values = entry.get("attributes", {}).get(attr)
            if isinstance(values, list) and values:
                return str(values[0])
            if isinstance(values, str) and values:
                return values
        return None

    def _groups(self, conn: Any, user_dn: str) -> set[str]:
        from ldap3.utils.conv import escape_filter_chars

        s = self._settings
        if not s.group_search_base:
            return set()
        conn.search(s.group_search_base, s.group_filter.format(user_dn=escape_filter_chars(user_dn)),
                    search_scope=self._ldap3.SUBTREE, attributes=["1.1"])
        if conn.result.get("result") not in (0, NO_SUCH_OBJECT):
            raise ServiceUnavailable(UNAVAILABLE)
        return {e["dn"].strip().lower() for e in conn.response or [] if e.get("type") == "searchResEntry"}

    def _roles_of(self, groups: set[str]) -> dict[str, str]:
        roles: dict[str, str] = {}
        for dn in groups:
            for group, role in self._roles.get(dn, []):
                if group not in roles or ROLE_ORDER.index(role) > ROLE_ORDER.index(roles[group]):
                    roles[group] = role
        return roles


@hookimpl
def xpresso_identity_providers() -> list[IdentityProviderInfo]:
    return [IdentityProviderInfo(name="ldap", description="an LDAP directory (OpenLDAP, Active Directory) via ldap3",
                                 factory=LdapDirectory)]
