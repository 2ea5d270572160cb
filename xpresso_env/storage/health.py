"""What `/api/v2/health` asks of storage: whether it answers a read now."""
from __future__ import annotations

from typing import Optional

from ..core.errors import XpressoError
from ..core.models import Group
from . import StorageBackend


def storage_problem(storage: StorageBackend) -> Optional[str]:
    """None when a read transaction succeeds, else why not (one line)."""
    try:
        with storage.read() as tx:
            tx.get(Group.KIND, "-")
    except XpressoError as exc:
        return exc.detail
    return None
