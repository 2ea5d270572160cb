"""The paths of who you are (CONTRACT section 13; http/resources/auth.py, me.py, audit.py): signing
in, your profile, tokens and password, and the audit. None of them takes a group."""
from __future__ import annotations

from typing import Any

from ...access.audit import EVENTS
from ...access.passwords import MAX_LENGTH, MIN_LENGTH
from ...access.profile import TIME_FORMATS, TOKEN_NAME_MAX, time_zones
from ...config import AuthSettings
from ...core import wire
from ...core.models import ALL_PERMISSIONS, Role
from .parts import AUTH_ERRORS, BODY_ERRORS, RETRY_AFTER, TOTAL, Schema, err, json_answer, obj, path_param


def me_paths() -> dict[str, Any]:
    """GET /api/v2/me (api/me.py): the one route where the Group header is optional. It is stated
    in the description, not as a parameter: a route whose only input is an optional header has no
    schema-invalid request to generate (tests/api/test_schemathesis.py's negative run)."""
    roles = {"type": ["string", "null"], "enum": [r.value for r in Role] + [None],
             "description": "the role; null: a system administrator who is not a member"}
    identity, prefs = _identity_paths()
    me = obj({"user": {"type": "string"}, "superuser": {"type": "boolean"},
              "groups": {"type": "object", "additionalProperties": roles},
              "group": {"type": ["string", "null"], "description": "the request's group, or null"},
              "permissions": {"type": "array", "items": {"type": "string", "enum": sorted(ALL_PERMISSIONS)},
                              "description": "held in `group` (empty without one)"},
              "email": {"type": ["string", "null"]}, "date_joined": {"type": ["string", "null"]},
              "last_login": {"type": ["string", "null"]},
              "preferences": {**prefs, "required": ["time_zone", "time_format"]},
              "provider": {"type": "string", "description": "the identity provider that keeps the user's "
                           "password (local: `POST /api/v2/me/password` changes it)"}},
             ["user", "superuser", "groups", "group", "permissions", "email", "date_joined", "last_login",
              "preferences", "provider"])
    return {**identity, "/api/v2/me": {"patch": {
        "summary": "Set your preferences (time zone, 12/24 h); answers what GET answers",
        "security": [{"jwt": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": obj(
            {"preferences": prefs}, ["preferences"])}}},
        "responses": {"200": json_answer("the caller", me), **AUTH_ERRORS, **BODY_ERRORS}}, "get": {
        "summary": "Who the token belongs to: groups, roles, and permissions in the request's group",
        "description": "Any valid token. The `Group` header (or `X-Group`) is optional here: without it "
                       "(and unless the user has exactly one group) `group` is null and `permissions` empty; "
                       "a group the caller may not use is a 403 as everywhere.",
        "security": [{"jwt": []}],
        "responses": {"200": json_answer("the caller", me), **AUTH_ERRORS}}}}


def _identity_paths() -> tuple[dict[str, Any], Schema]:
    """Signing in, a user's own tokens, password and preferences, and the audit (CONTRACT section
    13; http/resources/auth.py, me.py, audit.py), and the preferences schema GET /me shares. None of
    them takes a group."""
    text = {"type": "string", "minLength": 1, "maxLength": 1024}
    time = dict(wire.TIME)
    token = obj({"jti": {"type": "string"}, "name": {"type": "string"},
                 "typ": {"type": "string", "enum": ["api", "session"]}, "created": time, "expires": time,
                 "last_used": {"type": ["string", "null"]}, "revoked": {"type": "boolean"}},
                ["jti", "name", "typ", "created", "expires", "last_used", "revoked"])
    created = {**token, "properties": {**token["properties"], "token": {"type": "string",
                                                                        "description": "`Jwt <token>`, shown once"}},
               "required": ["token", *token["required"]]}
    prefs = obj({"time_zone": {"type": "string", "enum": sorted(time_zones()),
                               "description": "an IANA time zone name (an unknown one is a 400)"},
                 "time_format": {"type": "string", "enum": list(TIME_FORMATS)}})
    audit_row = obj({"at": time, "event": {"type": "string", "enum": list(EVENTS)}, "user": {"type": "string"},
                     "by": {"type": "string"}, "address": {"type": "string"}, "detail": {"type": "string"}},
                    ["at", "event", "user", "by", "address", "detail"])
    no_group = {"security": [{"jwt": []}], "responses": dict(AUTH_ERRORS)}

    def op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {**no_group, "summary": summary, **extra, "responses": {**responses, **AUTH_ERRORS}}

    login_body = obj({"username": {**text, "maxLength": 150}, "password": text}, ["username", "password"])
    paths: dict[str, Any] = {
        "/api/v2/auth/login": {"post": {
            "summary": "Sign in: a session token (claim typ: session) for a user name and password",
            "description": "The identity providers of `auth.providers` are tried in order. A wrong user or a "
                           "wrong password is the same 401. After `auth.login_max_failures` failures for a "
                           "user name within `auth.login_window_s`, every attempt for it is a 429 with "
                           "Retry-After. With the `header` provider, a request from a trusted proxy that "
                           "carries no body (or `{}`) signs in the user its header names.",
            "security": [],
            "requestBody": {"required": True, "content": {"application/json": {"schema": login_body}}},
            "responses": {"200": json_answer("signed in", obj({"token": {"type": "string"}, "expires": time,
                                                               "user": {"type": "string"}},
                                                              ["token", "expires", "user"])),
                          "400": AUTH_ERRORS["400"], "401": err("Invalid username or password."),
                          "429": err("too many failures for this user name", headers=RETRY_AFTER),
                          "503": err("the directory cannot be reached"), **BODY_ERRORS}}},
        "/api/v2/auth/logout": {"post": op("Sign out: revoke the calling session token",
                                           {"204": {"description": "signed out"}})},
        "/api/v2/me/tokens": {
            "get": op("Your tokens (never the tokens themselves), oldest first",
                      {"200": json_answer("your tokens", {"type": "array", "items": token})}),
            "post": op("Make yourself an API token; the answer shows it this once",
                       {"201": json_answer("the new token", created), **BODY_ERRORS},
                       requestBody={"required": True, "content": {"application/json": {"schema": obj(
                           {"name": {"type": "string", "minLength": 1, "maxLength": TOKEN_NAME_MAX, "pattern": r"\S",
                                    "description": "not only spaces"},
                            "days": {"type": "integer", "minimum": 1, "maximum": AuthSettings().token_days_max,
                                     "description": "lifetime in days, at most auth.token_days_max (the "
                                                    "maximum shown is its default)"}}, ["name"])}}}),
        },
        "/api/v2/me/tokens/{jti}": {
            "parameters": [path_param("jti", {"type": "string", "maxLength": 64})],
            "delete": op("Revoke one of your tokens (another user's is a 404)",
                         {"204": {"description": "revoked"}, "404": err("not one of your tokens")}),
        },
        "/api/v2/me/password": {"post": op(
            "Change your password (local provider)", {"204": {"description": "changed"}, **BODY_ERRORS},
            requestBody={"required": True, "content": {"application/json": {"schema": obj(
                {"old": {"type": "string"}, "new": {"type": "string", "minLength": MIN_LENGTH,
                                                    "maxLength": MAX_LENGTH}}, ["old", "new"])}}})},
        "/api/v2/audit": {"get": op(
            "The audit, newest first (system administrators only)",
            {"200": json_answer("audit rows", {"type": "array", "items": audit_row}, TOTAL)},
            parameters=[{"$ref": "#/components/parameters/limit"}, {"$ref": "#/components/parameters/offset"},
                        {"name": "user", "in": "query", "schema": {"type": "string"}},
                        {"name": "event", "in": "query", "schema": {"type": "string", "enum": list(EVENTS)}}])},
    }
    return paths, prefs
