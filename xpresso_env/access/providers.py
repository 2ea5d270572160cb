"""What an identity provider plugin implements (CONTRACT section 13): the module written for
their authors (plugins import it, and ``core.errors``, ``config`` and ``hookspecs``, nothing else).

A plugin announces providers through the collect-all hook ``xpresso_identity_providers`` with
:class:`IdentityProviderInfo`; ``auth.providers`` names the ones to use, tried in that order at
each sign-in (``access/signin.py``). A provider looks at a :class:`SignInAttempt` (user name and
password, or the request's address and headers) and answers with the :class:`Account` it vouches
for, or None to let the next provider try. A provider whose directory cannot be reached raises
``core.errors.ServiceUnavailable`` (a 503), never hangs: it bounds its own network waits.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Protocol

from ..config import Settings
from .passwords import Passwords, Verdict

__all__ = ["Account", "IdentityProvider", "IdentityProviderInfo", "Lookup", "Passwords", "ProviderTools", "SignInAttempt",
           "StoredAccount", "Verdict"]


@dataclass(frozen=True)
class SignInAttempt:
    """One POST /api/v2/auth/login. Never logged as it is: it holds a password."""

    username: Optional[str]
    password: Optional[str] = field(repr=False)
    address: str  # the client's address (the connection's, not a header's)
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case


@dataclass(frozen=True)
class StoredAccount:
    """What the service knows of a user name, for a provider that checks stored passwords."""

    name: str
    password_hash: Optional[str] = field(repr=False)
    provider: str


@dataclass(frozen=True)
class Account:
    """The user a provider vouches for."""

    name: str
    email: Optional[str] = None
    # GROUP -> role name from a directory's groups (auth.ldap.group_roles); None: this provider
    # gives no roles (those of the user stay as they are).
    directory_roles: Optional[dict[str, str]] = None
    create: bool = False  # add the user at their first sign-in (a directory's, a proxy's)
    new_password_hash: Optional[str] = field(default=None, repr=False)  # rehashed with today's parameters


Lookup = Callable[[str], Optional[StoredAccount]]


class IdentityProvider(Protocol):
    name: str

    def sign_in(self, attempt: SignInAttempt, lookup: Lookup) -> Optional[Account]:
        """The account ``attempt`` proves, or None (not this provider's user, wrong password, no
        credential of its kind). ``lookup`` reads a stored user by name.

        :raises xpresso_env.core.errors.ServiceUnavailable: the provider's directory cannot be reached.
        """


@dataclass(frozen=True)
class ProviderTools:
    """What a provider's factory is given."""

    settings: Settings
    passwords: Passwords
    log: logging.Logger


@dataclass(frozen=True)
class IdentityProviderInfo:
    """What a plugin announces through ``xpresso_identity_providers``."""

    name: str
    description: str
    factory: Callable[[ProviderTools], IdentityProvider]
