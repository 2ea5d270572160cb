"""The client's one error type: a message for one line on stderr, and exit code 1."""
from __future__ import annotations

from typing import Optional


class ClientError(Exception):
    def __init__(self, message: str, exit_code: int = 1, status: Optional[int] = None,
                 connection: bool = False):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status  # the HTTP status of an API refusal
        self.connection = connection  # the server could not be reached (a follower retries these)
