"""`xpresso login`: with a token, or with a user name and password (CONTRACT sections 12-14).

With a password the client signs in (``POST /api/v2/auth/login``: a short session token),
creates an API token of its own named after this host (``POST /api/v2/me/tokens``), ends the
session (``POST /api/v2/auth/logout``) and keeps only the API token: never the password, never
the session. Either way the group is settled before anything is kept: a group the user is not in
is refused with the groups they are in, and a user of several groups who named none is asked
(on a terminal) or told to name one.
"""
from __future__ import annotations

import getpass
import re
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .config import bare_token
from .errors import ClientError
from .http import Api
from .lookup import groups_text

TOKEN_NAME_MAX = 100  # the server's limit on a token's name


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


def token_name(host: Optional[str] = None) -> str:
    """The name of the API token `login --user` makes: the host it is kept on, so a user who
    signs in from several machines can tell the tokens apart (and revoke one)."""
    host = re.sub(r"[^A-Za-z0-9.-]+", "-", host or socket.gethostname()).strip("-") or "unknown-host"
    return f"xpresso on {host}"[:TOKEN_NAME_MAX]


def read_password(user: str, url: str, from_stdin: bool) -> str:
    """The password from one line of standard input (``--password-stdin``), else asked on the
    terminal without echo."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise ClientError("--password-stdin: standard input held no password")
        return password
    if not sys.stdin.isatty():
        raise ClientError("no terminal to ask the password on: pipe it with --password-stdin")
    try:
        return getpass.getpass(f"Password for {user} at {url}: ")
    except EOFError:
        raise ClientError("no password given") from None


def sign_in(url: str, credentials: Credentials) -> str:
    """A session token (bare) for the user name and password."""
    answer = Api(url, None, None).call("POST", "auth", "login",
                                       body={"username": credentials.user, "password": credentials.password})
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
        raise ClientError(f"{url} did not answer the sign-in with a token (is it an xpresso-env server "
                          f"with sign-in, CONTRACT section 13?)")
    return bare_token(answer["token"])


def own_token(url: str, session: str, days: Optional[int], host: Optional[str] = None) -> str:
    """An API token the session's user makes for this client (bare)."""
    body: dict[str, Any] = {"name": token_name(host)}
    if days is not None:
        body["days"] = days
    answer = Api(url, session, None).call("POST", "me", "tokens", body=body)
    return bare_token(answer["token"])


def sign_out(url: str, session: str) -> None:
    """End the session: the API token is what is kept. Failing to is not worth failing the
    login for (the session expires by itself)."""
    try:
        Api(url, session, None).call("POST", "auth", "logout")
    except ClientError:
        pass


Ask = Callable[[str, list[str]], str]


def settle_group(me: dict[str, Any], group: Optional[str], ask: Optional[Ask]) -> Optional[str]:
    """The group to keep: the one named (if the user may use it), the only one, or the one the
    user picks when asked (``ask`` is None off a terminal: then a user of several groups is told
    to name one)."""
    groups = sorted(me.get("groups") or {})
    user = me.get("user")
    if group is not None:
        if group not in groups:
            lead = f"there is no group {group!r}" if me.get("superuser") else f"not a member of {group!r}"
            raise ClientError(f"{lead}; your groups: {groups_text(me)}", status=403)
        return group
    if len(groups) <= 1:
        return None  # the server takes the only group by itself (and so for a later second one, asks)
    if ask is None:
        raise ClientError(f"{user} is in several groups: {', '.join(groups)}; name one with --group G")
    return ask(f"{user} is in several groups; which one", groups)
