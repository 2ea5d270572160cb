"""GET /api/v2/me: who the token belongs to, their groups and roles, the permissions they hold in
the request's group (the `Group` header is optional here), and their profile (email, when they
joined and last signed in, their preferences); PATCH sets the preferences. Clients (the `xpresso`
command's `whoami`, the web page) use it to show the caller and offer only what the role allows.

Under it, what a user does for themselves (CONTRACT section 13): /me/tokens (their API tokens),
/me/tokens/{jti} (revoke one), /me/password.

GET is read in the same read scope as every other read (``Reads.whoami``), but not through the
response cache: the answer is small, and a Group-less request has no group to key cache counters on."""
from __future__ import annotations

import dataclasses

import falcon

from ...access.auth import NO_GROUP
from ...access.profile import ProfileService
from ...access.reads import Reads
from ...core.validation import reject_unknown_params
from ..common import JsonBody, send_json
from ..request import credentials_of, note_caller


class Me:
    def __init__(self, reads: Reads, body: JsonBody, profile: ProfileService):
        self.reads = reads
        self.body = body
        self.profile = profile

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        snap = self.reads.whoami(credentials_of(req.env))
        note_caller(req.env, snap.caller.user.name, snap.caller.group if snap.caller.group != NO_GROUP else "-")
        reject_unknown_params(req.params)
        send_json(resp, dataclasses.asdict(snap.data))

    def on_patch(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Set preferences; answers what GET answers."""
        self.profile.set_preferences(credentials_of(req.env), self.body.of(req))
        self.on_get(req, resp)


class MyTokens:
    def __init__(self, body: JsonBody, profile: ProfileService):
        self.body = body
        self.profile = profile

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        reject_unknown_params(req.params)
        send_json(resp, self.profile.tokens(credentials_of(req.env)))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        created = self.profile.create_token(credentials_of(req.env), self.body.of(req), req.remote_addr or "")
        send_json(resp, created, falcon.HTTP_201)


class MyToken:
    def __init__(self, profile: ProfileService):
        self.profile = profile

    def on_delete(self, req: falcon.Request, resp: falcon.Response, jti: str) -> None:
        self.profile.revoke_token(credentials_of(req.env), jti, req.remote_addr or "")
        resp.status = falcon.HTTP_204


class MyPassword:
    def __init__(self, body: JsonBody, profile: ProfileService):
        self.body = body
        self.profile = profile

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.profile.change_password(credentials_of(req.env), self.body.of(req), req.remote_addr or "")
        resp.status = falcon.HTTP_204


def add_routes(app: falcon.App, reads: Reads, body: JsonBody, profile: ProfileService) -> None:
    app.add_route("/api/v2/me", Me(reads, body, profile))
    app.add_route("/api/v2/me/tokens", MyTokens(body, profile))
    app.add_route("/api/v2/me/tokens/{jti}", MyToken(profile))
    app.add_route("/api/v2/me/password", MyPassword(body, profile))
