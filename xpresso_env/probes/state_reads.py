"""GET /api/v2/{harnesses,engines}/{id}/state: a record's operational state and its last probe,
read in the caller's read scope (the caller, the record and its probe bookkeeping from one
snapshot; the rules are ``state.read_state``'s)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..access.reads import Credentials, Reads, Snapshot
from ..core.validation import reject_unknown_params
from .state import read_state


class StateReads:
    def __init__(self, reads: Reads, probed_types: Iterable[tuple[str, str]]):
        self._reads = reads
        self._probed = frozenset(probed_types)  # (kind, type) pairs some prober probes

    def state(self, credentials: Credentials, kind: str, record_id: str, params: Mapping[str, Any]) -> Snapshot:
        """404 for a record of another group (no leak), after the caller and the query are checked."""
        with self._reads.scope(credentials, kind) as scope:
            reject_unknown_params(params)
            answer = read_state(scope.tx, scope.caller.group, kind, record_id, self._probed)
        return scope.snapshot(answer)
