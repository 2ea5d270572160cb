"""What the API reads from a request's WSGI environ, in one place: the group header rule, the
credentials handed to the read scope, the response cache's key, and who asked (for the access
log). falcon's ``req.env`` is the same environ, so the WSGI frontend and the resources agree."""
from __future__ import annotations

import sys
from typing import Optional

from ..access.reads import Credentials

Key = tuple[str, str, Optional[str], Optional[str]]

USER_KEY = "xpresso.user"
GROUP_KEY = "xpresso.group"
# The matched route's template (set by falcon's RouteTemplate middleware, or by the cache's
# frontend from the entry it answers with): the metrics' route label, never the raw path.
ROUTE_KEY = "xpresso.route"
REQUEST_ID_KEY = "xpresso.request_id"  # the X-Request-Id the answer carries (api/request_id.py)
# The response cache's key of a GET the cache was already asked about and could not answer: the
# read that follows stores its answer under it, and nobody asks the cache again.
CACHE_KEY = "xpresso.cache_key"


def group_of(environ: dict) -> Optional[str]:
    """`Group` wins over `X-Group` when both are sent."""
    group = environ.get("HTTP_GROUP")
    return group if group is not None else environ.get("HTTP_X_GROUP")


def credentials_of(environ: dict) -> Credentials:
    return Credentials(authorization=environ.get("HTTP_AUTHORIZATION"), group=group_of(environ))


def request_key(environ: dict) -> Key:
    """The response cache's key: the same request always gets the same answer."""
    return (environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""), environ.get("HTTP_AUTHORIZATION"),
            group_of(environ))


def shared_key(key: Key) -> Key:
    """The key an answer is stored under once the request authenticated: its token and group are
    shared by many entries, so keep one copy of each (never for unauthenticated input, which
    could grow the table)."""
    path, query, authorization, group = key
    return (path, query, None if authorization is None else sys.intern(authorization),
            None if group is None else sys.intern(group))


def note_caller(environ: dict, user: str, group: str) -> None:
    """Leave who asked in the environ, for the access log."""
    environ[USER_KEY] = user
    environ[GROUP_KEY] = group
