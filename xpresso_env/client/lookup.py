"""What a user means: an image by a unique id prefix or NAME:TAG, and why a group was refused.

The API finds an image by its full uuid only; people paste the first characters of one
(`xpresso images pin 5b0c`) or name it (`xpresso images show polaris-image:v1`). The client
reads the group's images and picks the one meant, or says which ones a prefix could mean.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from .errors import ClientError
from .http import Api

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
PREFIX_RE = re.compile(r"^[0-9a-fA-F][0-9a-fA-F-]*$")
MIN_PREFIX = 4
PAGE = 1000  # the API's largest page
SHOWN_MATCHES = 10


def all_images(api: Api, params: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """Every image visible in the group, deleted ones too, page by page."""
    out: list[dict[str, Any]] = []
    while True:
        query = {"deleted": "true", **(params or {}), "limit": str(PAGE), "offset": str(len(out))}
        resp = api.request("GET", api.path("images"), params=query)
        page = resp.json()
        out.extend(page)
        total = resp.headers.get("X-Total-Count", "")
        if not page or len(page) < PAGE or (total.isdigit() and len(out) >= int(total)):
            return out


def _label(image: dict[str, Any]) -> str:
    gone = ", deleted" if image.get("is_deleted") else ""
    return f"{image.get('uuid')} ({image.get('name')}:{image.get('tag')}, {image.get('status')}{gone})"


def image_id(api: Api, ref: str) -> str:
    """The uuid ``ref`` means: a uuid as is; NAME:TAG the newest image of that name and tag (one
    not deleted first); else a prefix of exactly one image's uuid."""
    if UUID_RE.match(ref):
        return ref
    name, colon, tag = ref.rpartition(":")
    if colon and name and tag:
        found = all_images(api, {"name": name, "tag": tag})
        if not found:
            raise ClientError(f"no image {ref} in the group", status=404)
        live = [i for i in found if not i.get("is_deleted")] or found
        return max(live, key=lambda i: (i.get("date_created") or "", i.get("uuid") or ""))["uuid"]
    if not PREFIX_RE.match(ref):
        raise ClientError(f"{ref!r} is neither an image id (or its first {MIN_PREFIX}+ characters) nor NAME:TAG")
    if len(ref) < MIN_PREFIX:
        raise ClientError(f"give at least {MIN_PREFIX} characters of the image id (got {ref!r}), or NAME:TAG")
    prefix = ref.lower()
    matches = [i for i in all_images(api) if str(i.get("uuid", "")).lower().startswith(prefix)]
    if not matches:
        raise ClientError(f"no image id in the group starts with {ref}", status=404)
    if len(matches) > 1:
        shown = "; ".join(_label(i) for i in matches[:SHOWN_MATCHES])
        more = f"; and {len(matches) - SHOWN_MATCHES} more" if len(matches) > SHOWN_MATCHES else ""
        raise ClientError(f"{ref} is the start of {len(matches)} image ids: {shown}{more}; give more characters")
    return matches[0]["uuid"]


def groups_text(me: dict[str, Any]) -> str:
    return ", ".join(sorted(me.get("groups") or {})) or "(none)"


def explain_group(api: Api, group: Optional[str], error: ClientError) -> Optional[ClientError]:
    """A 403 or a group 400 explained from ``GET /api/v2/me`` (asked without a group, which any
    valid token may do): which groups the caller is in. None when there is nothing to add."""
    if error.status not in (400, 403):
        return None
    if error.status == 400 and (group or "Group header" not in error.message):
        return None
    try:
        me = Api(api.url, api.token, None).get("me")
    except ClientError:
        return None  # the token itself is refused: the original words say it
    groups = me.get("groups") or {}
    if group is None:
        return ClientError(f"{me.get('user')} is in several groups: {groups_text(me)}; name one with --group G "
                           f"(or XPRESSO_GROUP, or `xpresso login URL ... --group G`)", status=400)
    if group not in groups:
        if me.get("superuser"):
            return ClientError(f"there is no group {group!r}; groups: {groups_text(me)}", status=error.status)
        return ClientError(f"not a member of {group!r}; your groups: {groups_text(me)}", status=error.status)
    role = groups.get(group)
    if error.status == 403 and role:
        return ClientError(f"{error.message}; your role in {group} is {role}", status=403)
    return None
