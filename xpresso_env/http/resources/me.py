"""GET /api/v2/me: who the token belongs to, their groups and roles, and the permissions they hold
in the request's group (the `Group` header is optional here). Clients (the `xpresso` command's
`whoami`, the web page) use it to show the caller and offer only what the role allows.

Not served through the response cache: the answer is small and read in one transaction, and
a Group-less request has no group to key cache counters on."""
from __future__ import annotations

import dataclasses

import falcon

from ...access.auth import AuthService
from ...core.validation import reject_unknown_params
from ..common import send_json
from ..request import credentials_of, note_caller


class Me:
    def __init__(self, auth: AuthService):
        self.auth = auth

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        credentials = credentials_of(req.env)
        identity = self.auth.whoami(credentials.authorization, credentials.group)
        note_caller(req.env, identity.user, identity.group or "-")
        reject_unknown_params(req.params)
        send_json(resp, dataclasses.asdict(identity))


def add_routes(app: falcon.App, auth: AuthService) -> None:
    app.add_route("/api/v2/me", Me(auth))
