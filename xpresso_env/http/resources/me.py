"""GET /api/v2/me: who the token belongs to, their groups and roles, and the permissions they hold
in the request's group (the `Group` header is optional here). Clients (the `xpresso` command's
`whoami`, the web page) use it to show the caller and offer only what the role allows.

Read in the same read scope as every other read (``Reads.whoami``), but not through the response
cache: the answer is small, and a Group-less request has no group to key cache counters on."""
from __future__ import annotations

import dataclasses

import falcon

from ...access.auth import NO_GROUP
from ...access.reads import Reads
from ...core.validation import reject_unknown_params
from ..common import send_json
from ..request import credentials_of, note_caller


class Me:
    def __init__(self, reads: Reads):
        self.reads = reads

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        snap = self.reads.whoami(credentials_of(req.env))
        note_caller(req.env, snap.caller.user.name, snap.caller.group if snap.caller.group != NO_GROUP else "-")
        reject_unknown_params(req.params)
        send_json(resp, dataclasses.asdict(snap.data))


def add_routes(app: falcon.App, reads: Reads) -> None:
    app.add_route("/api/v2/me", Me(reads))
