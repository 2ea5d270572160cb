"""X-Request-Id (CONTRACT section 10): the client's own id when it is safe, else a new one.

A bad id (too long, a space, a quote, a control character, several headers joined by a comma)
is replaced, never refused: an id exists so that a request can be found in the logs, and a 400
would lose exactly the request someone is looking for. The grammar is ``wire.REQUEST_ID``.
"""
from __future__ import annotations

import itertools
import os
from typing import Callable, Optional

from ..core.wire import REQUEST_ID

HEADER = "X-Request-Id"
ENVIRON_HEADER = "HTTP_X_REQUEST_ID"

NewId = Callable[[], str]


class RequestIds:
    """New request ids: a random prefix drawn once, then a counter. Unique across processes (the
    prefix) and cheap: a uuid4 per request asked the kernel for random bytes every time, which on
    this kind of VM cost more than answering a cached read."""

    def __init__(self, prefix: Optional[str] = None):
        self._prefix = prefix if prefix is not None else os.urandom(8).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"  # next() on a count is atomic under the GIL


def new_request_id() -> str:
    """A fresh id from a generator of its own (tests; the edge keeps one ``RequestIds``)."""
    return RequestIds()()


def request_id_for(sent: Optional[str], new_id: NewId = new_request_id) -> str:
    """The id an answer carries: ``sent`` if it matches the grammar, else ``new_id()``."""
    if sent is not None and REQUEST_ID.matches(sent):
        return sent
    return new_id()
