"""How many processes serve the port (CONTRACT section 15), as /api/v2/health and /metrics say it.

With ``server.processes: 1`` the `serve` process is the server: :class:`OneProcess`. With more,
the supervisor (``runtime/supervisor.py``) writes a small status file whenever the set of
serving processes changes, and each serving process reads it when asked (:class:`StatusFile`):
a health check or a scrape, never a request on the hot path.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class ServingStatus(Protocol):
    def status(self) -> dict[str, Any]:
        """``{"configured": N, "serving": k, "generation": g, "pid": this process}``."""
        ...


@dataclass(frozen=True)
class OneProcess:
    """`serve` with server.processes 1: this process is the whole server."""

    def status(self) -> dict[str, Any]:
        return {"configured": 1, "serving": 1, "generation": 1, "pid": os.getpid(), "supervisor": None}


ONE_PROCESS = OneProcess()


@dataclass(frozen=True)
class StatusFile:
    """The supervisor's status file, read by the processes it started."""

    path: Path

    def write(self, configured: int, serving: int, generation: int) -> None:
        """Replace the file whole (a reader never sees half of it)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"configured": configured, "serving": serving, "generation": generation,
                                   "supervisor": os.getpid()}))
        os.replace(tmp, self.path)

    def status(self) -> dict[str, Any]:
        try:
            found = json.loads(self.path.read_text())
        except (OSError, ValueError):  # the supervisor is gone (this process is about to notice)
            found = {"configured": None, "serving": None, "generation": None, "supervisor": None}
        return {**found, "pid": os.getpid()}
