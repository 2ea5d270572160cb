"""How `xpresso-env serve` runs waitress: one home for its options, so a benchmark's ceiling
is served exactly the same way."""
from __future__ import annotations

import logging
import math
from typing import Any

from ..config import ServerSettings


def waitress_options(server: ServerSettings) -> dict[str, Any]:
    """The keyword arguments for ``waitress.create_server`` (or ``waitress.serve``)."""
    return dict(host=server.host, port=server.port, threads=server.threads, ident="xpresso-env",
                max_request_body_size=max(server.max_body_bytes * 2, 1 << 20),
                connection_limit=server.connection_limit, channel_timeout=math.ceil(server.channel_timeout_s),
                cleanup_interval=math.ceil(server.cleanup_interval_s),
                # select() cannot watch descriptors past 1023: poll() has no such limit.
                asyncore_use_poll=True)


def quiet_queue_warnings() -> None:
    """waitress warns once for every request that waits for a free thread: under load that is
    thousands of lines a second, written by the thread that accepts and reads connections."""
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
