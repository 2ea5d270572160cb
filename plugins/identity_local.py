"""The ``local`` identity provider: passwords stored here as argon2id hashes (``xpresso-env user
set-password NAME``, or the user's own POST /api/v2/me/password).

An unknown user, or one without a password, is checked against a dummy hash, so that a wrong
name takes about as long as a wrong password (CONTRACT section 13). A right password hashed with
other parameters than today's is rehashed: the service stores the new hash at this sign-in.
"""
from __future__ import annotations

from typing import Optional

from xpresso_env.access.providers import Account, IdentityProviderInfo, Lookup, ProviderTools, SignInAttempt
from xpresso_env.hookspecs import hookimpl


class LocalPasswords:
    name = "local"

    def __init__(self, tools: ProviderTools):
        self._passwords = tools.passwords

    def sign_in(self, attempt: SignInAttempt, lookup: Lookup) -> Optional[Account]:
        if attempt.username is None or attempt.password is None:
            return None
        stored = lookup(attempt.username)
        verdict = self._passwords.verify(None if stored is None else stored.password_hash, attempt.password)
        if stored is None or not verdict.ok:
            return None
        return Account(name=stored.name,
                       new_password_hash=self._passwords.hash(attempt.password) if verdict.rehash else None)


@hookimpl
def xpresso_identity_providers() -> list[IdentityProviderInfo]:
    return [IdentityProviderInfo(name="local", description="passwords stored here (argon2id hashes)",
                                 factory=LocalPasswords)]
