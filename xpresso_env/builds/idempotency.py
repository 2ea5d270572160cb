"""``Idempotency-Key`` on build submits (CONTRACT section 11).

The same key and body from the same group within ``KEEP`` (24 h) answers the first request's
image, never a second build (nor a 409 for "already building"); the same key with another body
is refused (422). What a key was used for is a storage document, so it holds across every
process on the storage:

* kind ``idempotency_key``, id ``<group>:<sha256 of the key>`` (a client's key never becomes an
  id as it is: any length or character it might hold stays out of the index), owned by the group;
* body ``{"key_sha256", "body_sha256", "image", "at"}``: the fingerprint of the request body
  (canonical JSON: key order and spacing do not matter) and the image the first request made.

Submits of one group serialise on the group's row lock (see ``ImageService.submit``), so two
requests with one key cannot both miss the record and start two builds. A record older than
``KEEP`` is replaced by the next request with its key, and purged by the retention sweep
(``expired``).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional

from ..core.errors import BadRequest, IdempotencyKeyReused
from ..core.timeutil import format_time, parse_time
from ..storage import Doc, Tx

KIND = "idempotency_key"
HEADER = "Idempotency-Key"
MAX_LENGTH = 64
KEEP = timedelta(hours=24)
# Visible ASCII only: no control characters (they could forge log lines), no spaces (a proxy may
# trim them), nothing a header cannot carry. The served OpenAPI document states this very pattern.
KEY_RE = re.compile(f"^[!-~]{{1,{MAX_LENGTH}}}$")


def check_key(value: Optional[str]) -> Optional[str]:
    """The header's value, checked (400 otherwise); None when the request has none."""
    if value is None:
        return None
    if value == "" or len(value) > MAX_LENGTH:
        raise BadRequest(f"{HEADER} must be 1 to {MAX_LENGTH} characters long.")
    if not KEY_RE.fullmatch(value):
        raise BadRequest(f"{HEADER} may hold visible ASCII characters only (no control characters, no spaces).")
    return value


def fingerprint(body: Any) -> str:
    """The request body, as compared between two requests with one key."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _doc_id(group: str, key: str) -> str:
    return f"{group}:{hashlib.sha256(key.encode('utf-8', 'surrogateescape')).hexdigest()}"


@dataclass(frozen=True)
class Remembered:
    image_id: str


def recall(tx: Tx, group: str, key: str, body_sha256: str, now: datetime) -> Optional[Remembered]:
    """The image a request with this key made within ``KEEP``, or None. Another body with the
    same key: IdempotencyKeyReused (422)."""
    doc = tx.get(KIND, _doc_id(group, key), lock=True)
    if doc is None:
        return None
    try:
        at = parse_time(doc.body["at"])
    except (KeyError, TypeError, ValueError):
        return None
    if now - at >= KEEP:
        return None
    if doc.body.get("body_sha256") != body_sha256:
        raise IdempotencyKeyReused(f"This {HEADER} was used within the last 24 hours with another request body.")
    return Remembered(str(doc.body["image"]))


def remember(tx: Tx, group: str, key: str, body_sha256: str, image_id: str, now: datetime) -> None:
    doc_id = _doc_id(group, key)
    stamp = format_time(now)
    doc = Doc(kind=KIND, id=doc_id, group=group, name=None, deleted=False, created=stamp,
              body={"key_sha256": doc_id.split(":", 1)[1], "body_sha256": body_sha256, "image": image_id,
                    "at": stamp})
    if tx.get(KIND, doc_id) is None:
        tx.insert(doc)
    else:
        tx.update(doc)  # an expired record of the same key


def expired(doc: Doc, now: datetime) -> bool:
    """True for a record that no longer answers (older than ``KEEP``, or unreadable): the
    retention sweep purges it."""
    try:
        return now - parse_time(doc.body["at"]) >= KEEP
    except (KeyError, TypeError, ValueError):
        return True
