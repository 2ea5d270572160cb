"""The one document upgrade every backend applies in the schema step that brings "identity is not
a name" (CONTRACT section 16): each user gets a stable ``uid``, each recorded token the ``user_id``
of the user it was issued to, and a token whose user is gone, deleted, or was added again after
the token was issued is revoked for good.

Written on documents through the ``Tx`` interface, so SQLite, PostgreSQL, YAML and the memory
store run the same step inside their ``init`` transaction.
"""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable

from ..core.documents import Doc
from ..core.timeutil import format_time
from . import Tx


def _revocation(jti: str, user: object, at: str) -> Doc:
    return Doc(kind="revocation", id=jti, group=None, name=None, deleted=False, created=at,
               body={"jti": jti, "date_created": at, "user": user})


def upgrade_identity(tx: Tx, new_uid: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
    """Idempotent: documents already upgraded are left as they are."""
    now = format_time(datetime.now(timezone.utc))
    users: dict[str, Doc] = {}
    for doc in tx.query("user"):
        if not doc.body.get("uid"):
            doc = replace(doc, body={**doc.body, "uid": new_uid()})
            tx.update(doc)
        users[doc.id] = doc
    revoked = {doc.id for doc in tx.query("revocation")}
    for token in tx.query("token"):
        if token.body.get("user_id"):
            continue
        owner = users.get(token.body.get("user"))  # type: ignore[arg-type]
        # ``created`` is wire-format UTC text: it sorts as time.
        if owner is None or owner.deleted or token.created < owner.created:
            if token.id not in revoked:
                tx.insert(_revocation(token.id, token.body.get("user"), now))
                revoked.add(token.id)
        else:
            tx.update(replace(token, body={**token.body, "user_id": owner.body["uid"]}))
