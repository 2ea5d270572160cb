"""X-Request-Id (CONTRACT section 10): the client's own id when it is safe, else a new one.

A bad id (too long, a space, a quote, a control character, several headers joined by a comma)
is replaced, never refused: an id exists so that a request can be found in the logs, and a 400
would lose exactly the request someone is looking for. The grammar is ``wire.REQUEST_ID``.
"""
from __future__ import annotations

import uuid
from typing import Callable, Optional

from ..wire import REQUEST_ID

HEADER = "X-Request-Id"
ENVIRON_HEADER = "HTTP_X_REQUEST_ID"

NewId = Callable[[], str]


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_for(sent: Optional[str], new_id: NewId = new_request_id) -> str:
    """The id an answer carries: ``sent`` if it matches the grammar, else ``new_id()``."""
    if sent is not None and REQUEST_ID.matches(sent):
        return sent
    return new_id()
