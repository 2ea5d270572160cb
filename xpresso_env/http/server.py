"""How `xpresso-env serve` runs waitress: one home for its options, so a benchmark's ceiling
is served exactly the same way; the listening socket a supervisor shares with the processes it
starts; and the drain (CONTRACT section 15): on a stop or a reload a process stops accepting,
finishes the requests it holds, and only then exits, so no request fails."""
from __future__ import annotations

import errno
import logging
import math
import socket
import time
from typing import Any, Callable, Optional

from ..config import ServerSettings
from ..core.errors import ConfigError

log = logging.getLogger("xpresso_env.cli")

BACKLOG = 1024  # waitress's own default: connections the kernel queues for the processes to accept
TICK_S = 0.2  # how often the serving loop looks at its stop flag (and, draining, at idle connections)
# A keep-alive connection that has been idle this long while its process drains is closed; one in
# use is closed after its next answer (which says ``Connection: close``). Closing one idle for
# less would race a client that is sending its next request on it right now.
IDLE_CLOSE_S = 1.0


def waitress_options(server: ServerSettings, address: bool = True) -> dict[str, Any]:
    """The keyword arguments for ``waitress.create_server`` (or ``waitress.serve``); without
    ``address`` (host and port) for a server handed its listening socket."""
    where = dict(host=server.host, port=server.port) if address else {}
    return dict(**where, threads=server.threads_per_process, ident="xpresso-env",
                max_request_body_size=max(server.max_body_bytes * 2, 1 << 20),
                connection_limit=server.connection_limit, channel_timeout=math.ceil(server.channel_timeout_s),
                cleanup_interval=math.ceil(server.cleanup_interval_s),
                # select() cannot watch descriptors past 1023: poll() has no such limit.
                asyncore_use_poll=True)


def quiet_queue_warnings() -> None:
    """waitress warns once for every request that waits for a free thread: under load that is
    thousands of lines a second, written by the thread that accepts and reads connections."""
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def _cannot_listen(s: ServerSettings, exc: OSError) -> ConfigError:
    reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    return ConfigError(f"cannot listen on {s.host}:{s.port}: {reason}; "
                       f"choose another port with --port (or address with --host)")


def listening_socket(s: ServerSettings) -> socket.socket:
    """The port, bound once by the supervisor and inherited by every process it starts: they all
    accept from the one kernel queue, which lives as long as any of them (or the supervisor) holds
    it, so a process that stops accepting leaves no connection behind (benchmarks/README.md,
    "Processes": why not SO_REUSEPORT)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(s.host, s.port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _cannot_listen(s, exc) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise _cannot_listen(s, exc) from None
    sock.set_inheritable(True)
    return sock


def create_server(app: Callable, s: ServerSettings, sock: Optional[socket.socket] = None):
    """The waitress server, bound and listening (on ``sock`` when given, a socket inherited from
    the supervisor), with the storage-free routes' own threads (``lanes``), able to drain (:func:`serve_until_stopped`); a ConfigError naming the
    address if it cannot listen."""
    import waitress

    from .lanes import LaneDispatcher

    # Storage-free routes have threads of their own (``lanes``): a hung database never holds them.
    lanes = LaneDispatcher()
    lanes.set_thread_count(s.threads_per_process)
    try:
        if sock is not None:
            server = waitress.create_server(app, _dispatcher=lanes, sockets=[sock], **waitress_options(s, address=False))
        else:
            server = waitress.create_server(app, _dispatcher=lanes, **waitress_options(s))
    except OSError as exc:
        lanes.shutdown()
        raise _cannot_listen(s, exc) from None
    server.draining = False
    server.channel_class = _channel_class()
    return server


def _channel_class() -> type:
    """waitress's connection class whose answers say ``Connection: close`` once the server drains
    (``server.draining``): a client that keeps its connection open sends its next request to
    another process. (An app may not set that hop-by-hop header itself: PEP 3333.)"""
    from waitress.channel import HTTPChannel
    from waitress.task import WSGITask

    class DrainingTask(WSGITask):
        def build_response_header(self) -> bytes:
            if self.channel.server.draining:  # looked at when the answer starts
                self.set_close_on_finish()
            return super().build_response_header()

    class DrainingChannel(HTTPChannel):
        task_class = DrainingTask

    return DrainingChannel


def _nothing() -> None:
    pass


def serve_until_stopped(server: Any, stop: Callable[[], bool], drain_s: float,
                        on_drain: Callable[[], None] = _nothing) -> None:
    """Run ``server`` until ``stop()`` says so, then drain: stop accepting, call ``on_drain``
    (it must not block: this thread writes the answers), let the requests in hand finish (at most
    ``drain_s``), close the connections, end waitress's threads."""
    from waitress import wasyncore

    loop_map = server._map  # waitress's own loop, run a tick at a time so the flag is seen
    while not stop():
        wasyncore.loop(timeout=TICK_S, map=loop_map, use_poll=True, count=1)
    server.draining = True
    server.accepting = False
    # The listening socket only: the trigger stays, the threads still hand answers to this loop.
    wasyncore.dispatcher.close(server)
    on_drain()
    deadline = time.monotonic() + drain_s
    channels = server.active_channels
    while channels and time.monotonic() < deadline:
        idle_since = time.time() - IDLE_CLOSE_S
        for channel in list(channels.values()):
            if (not channel.requests and channel.request is None and not channel.total_outbufs_len
                    and channel.last_activity < idle_since):
                channel.will_close = True
        wasyncore.loop(timeout=TICK_S, map=loop_map, use_poll=True, count=1)
    if channels:
        log.warning("%d connection(s) still busy after server.drain_s (%g s): closed", len(channels), drain_s)
        for channel in list(channels.values()):
            channel.handle_close()
    server.task_dispatcher.shutdown()
    server.trigger.close()
