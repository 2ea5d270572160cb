"""POST /api/v2/auth/login and /api/v2/auth/logout (CONTRACT section 13): a session token for a
user name and password (or for the user a trusted proxy names), and its end."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

import falcon

from ...access.providers import SignInAttempt
from ...access.reads import Reads
from ...access.signin import SignInService
from ...core.errors import BadRequest, ValidationError
from ...core.timeutil import format_time
from ..common import JsonBody, send_json
from ..request import credentials_of, note_caller

MAX_NAME = 150


def _text(data: dict[str, Any], key: str) -> Optional[str]:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise ValidationError.one(key, "A non-empty string is required.")
    return value


class Login:
    def __init__(self, body: JsonBody, signin: SignInService):
        self.body = body
        self.signin = signin

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        # An empty body is a sign-in by a trusted proxy's header (the `header` provider).
        data = {} if not req.content_length else self.body.read(req)
        if not isinstance(data, dict):
            raise BadRequest("Expected a JSON object.")
        unknown = sorted(set(data) - {"username", "password"})
        if unknown:
            raise ValidationError({k[:100]: ["Unknown field."] for k in unknown})
        username, password = _text(data, "username"), _text(data, "password")
        if username is not None and len(username) > MAX_NAME:
            raise ValidationError.one("username", f"At most {MAX_NAME} characters.")
        attempt = SignInAttempt(username=username, password=password, address=req.remote_addr or "",
                                headers={k.lower(): v for k, v in req.headers.items()})
        session = self.signin.login(attempt)
        note_caller(req.env, session.user.name, "-")
        send_json(resp, {"token": session.token.display,
                         "expires": format_time(datetime.fromisoformat(session.token.expires)),
                         "user": session.user.name})


class Logout:
    def __init__(self, reads: Reads, signin: SignInService):
        self.reads = reads
        self.signin = signin

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = self.reads.caller(credentials_of(req.env), group_required=False)
        note_caller(req.env, caller.user.name, "-")
        self.signin.logout(caller, req.remote_addr or "")
        resp.status = falcon.HTTP_204


def add_routes(app: falcon.App, reads: Reads, body: JsonBody, signin: SignInService) -> None:
    app.add_route("/api/v2/auth/login", Login(body, signin))
    app.add_route("/api/v2/auth/logout", Logout(reads, signin))
