"""Password hashes: argon2id (argon2-cffi), its parameters stored in the hash itself
(``$argon2id$v=19$m=65536,t=3,p=4$salt$hash``), so a change of parameters is seen on the next
sign-in and the password rehashed then. A password is never logged, never put in an error and
never exported: only its hash is stored.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # hashing is costly: no megabyte passwords


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rehash: bool = False  # right, but hashed with other parameters than today's


class Passwords:
    def __init__(self, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4):
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism,
                                      type=Type.ID)
        # Checked against when the user has no password, so that an unknown user costs the same
        # time as a wrong password (CONTRACT section 13). Made at the first verification, whoever
        # it is for (so that first one costs the same either way), not here: a hash costs a
        # tenth of a second, and most commands and processes that build the service never
        # check a password.
        self._dummy: Optional[str] = None
        self._dummy_lock = threading.Lock()

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> Verdict:
        """Whether ``password`` matches ``stored_hash`` (None: no password, checked against a
        dummy hash for the time it takes)."""
        if len(password) > MAX_LENGTH:
            return Verdict(False)
        dummy = self._dummy_hash()
        if stored_hash is None:
            self._check(dummy, password)
            return Verdict(False)
        if not self._check(stored_hash, password):
            return Verdict(False)
        return Verdict(True, rehash=self._hasher.check_needs_rehash(stored_hash))

    def _dummy_hash(self) -> str:
        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = self._hasher.hash("no such user: a dummy password")
            return self._dummy

    def _check(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def check_new_password(password: object) -> str | None:
    """Why a new password is refused, or None."""
    if not isinstance(password, str):
        return "A password must be a string."
    if len(password) < MIN_LENGTH:
        return f"A password needs at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"A password has at most {MAX_LENGTH} characters."
    return None
