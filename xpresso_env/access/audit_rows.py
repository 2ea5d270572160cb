"""An audit row written into the transaction of the change it records (``audit.py`` lists and
sweeps them; this module stands alone so ``auth.py`` writes rows too)."""
from __future__ import annotations

import uuid
from datetime import datetime

from ..core.codec import to_doc
from ..core.models import AuditEntry
from ..storage import Tx

EVENTS = ("login", "login_failed", "login_locked", "logout", "token_created", "token_revoked", "password_changed",
          "role_changed")
CLI = "(cli)"  # ``by`` of what an administrator did with `xpresso-env`


def record_row(tx: Tx, at: datetime, event: str, user: str, by: str, address: str = "", detail: str = "") -> None:
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    tx.insert(to_doc(AuditEntry(id=uuid.uuid4().hex, date_created=at, event=event, user=user, by=by,
                                address=address, detail=detail)))
