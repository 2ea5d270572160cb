"""The `xpresso-env` commands that set up and run a server (CONTRACT section 5): `init` (the
schema, the token secret, a first administrator), `serve` (the API with waitress) and `worker`
(builds without HTTP), with what running needs: listening, waiting for the storage, the
open-files limit and signals.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from ..config import Settings, load_settings
from ..core.errors import StorageUnavailable
from ..core.words import count
from ..http.lanes import StartupGate
from ..http.server import create_server, serve_until_stopped
from ..runtime.redact import redact
from ..runtime.supervisor import READY
from .admin import opened
from .store import store_location

if TYPE_CHECKING:
    from ..storage import StorageBackend

# One logger for the whole command line, whichever module logs: operators filter on this name.
log = logging.getLogger("xpresso_env.cli")

SWITCH_INTERVAL_S = 0.001
STORAGE_RETRY_S = 2.0  # `serve` started while the storage is unreachable tries again this often
# Descriptors beside the connections: storage, log files, build processes and their pipes.
FD_HEADROOM = 256


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from ..access.auth import load_secret
    from ..plugin import make_plugin_manager, pick_storage

    storage = pick_storage(make_plugin_manager(), settings.storage.backend).factory(settings)
    try:
        before = storage.current_version()
        after = storage.init()
    finally:
        storage.close()
    load_secret(settings, create=True)
    change = "created" if before == 0 else ("upgraded" if after > before else "already up to date")
    print(f"storage {settings.storage.backend} at {store_location(settings)}: schema version {after} ({change})")
    if args.group or args.admin:
        _first_admin(args, settings)
    return 0


def _first_admin(args: argparse.Namespace, settings: Settings) -> None:
    """`init --group G --admin NAME`: a first group and system administrator, and their token."""
    from ..core.errors import AlreadyExists

    with opened(settings, images=False) as ctx:
        if args.group:
            try:
                ctx.auth.add_group(args.group)
                print(f"group {args.group} created")
            except AlreadyExists:
                print(f"group {args.group} exists")
        if args.admin:
            try:
                ctx.auth.add_user(args.admin, superuser=True)
                print(f"system administrator {args.admin} created")
            except AlreadyExists:
                print(f"user {args.admin} exists")
            issued = ctx.auth.issue_token(args.admin)
            print(f"token for {issued.user}, id (jti) {issued.jti}, expires {issued.expires}")
            print(issued.display)


def serve_overrides(args: argparse.Namespace) -> dict:
    """The `serve` flags as settings (they win over the file and the environment)."""
    if args.command != "serve":
        return {}
    flags = (("host", args.host), ("port", args.port), ("threads", args.threads), ("processes", args.processes))
    server = {k: v for k, v in flags if v is not None}
    return {"server": server} if server else {}


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """`serve`: this process is the server (server.processes 1, or a process the supervisor
    started: --listen-fd), or the supervisor of server.processes of them (CONTRACT section 15)."""
    if args.listen_fd is None and settings.server.processes > 1:
        return _supervise(args, settings)
    return _serve(args, settings)


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    import shutil
    import tempfile

    from ..http.server import listening_socket
    from ..runtime.processes import StatusFile
    from ..runtime.supervisor import Supervisor

    folder = Path(tempfile.mkdtemp(prefix="xpresso-env-"))
    status = StatusFile(folder / "processes.json")
    argv = list(args.argv)

    def spawn(sock: socket.socket, ready_fd: int) -> subprocess.Popen:
        # A fresh interpreter each time: a reload runs the code installed now, as configured now.
        return subprocess.Popen([sys.executable, "-m", "xpresso_env.cli", *argv, "--listen-fd", str(sock.fileno()),
                                 "--ready-fd", str(ready_fd), "--status-file", str(status.path)],
                                pass_fds=(sock.fileno(), ready_fd))

    def load() -> Settings:
        return load_settings(args.config, overrides=serve_overrides(args))

    try:
        return Supervisor(settings, load, listening_socket, spawn, status).run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Stop:
    """The stop flag of a serving process: set by SIGTERM or SIGINT (its own, or the supervisor's
    on a reload), or when the supervisor that started it is gone."""

    def __init__(self, parent: Optional[int], hold: Callable[[], None]):
        self._parent = parent
        self._hold = hold  # signal-safe: the app takes no new work from the moment the signal comes
        self._set = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        # SIGHUP is the supervisor's (a reload); alone, this process says it cannot reload rather
        # than die of it (`systemctl reload` with server.processes 1).
        signal.signal(signal.SIGHUP, signal.SIG_IGN if parent is not None else self._on_hangup)

    @staticmethod
    def _on_hangup(signum, frame) -> None:
        log.warning("SIGHUP: reloading needs server.processes of 2 or more (or auto); "
                    "this process goes on serving as configured at its start")

    def _on_signal(self, signum, frame) -> None:
        self._hold()
        if not self._set:
            log.info("signal %s: stopping (finishing the requests in hand)", signum)
        self._set = True

    def __call__(self) -> bool:
        if not self._set and self._parent is not None and os.getppid() != self._parent:
            log.warning("the supervisor (pid %d) is gone: stopping", self._parent)
            self._hold()
            self._set = True
        return self._set


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from ..app import Role, build_context, create_wsgi_app
    from ..runtime.processes import ONE_PROCESS, StatusFile

    s = settings.server
    # A thread back from SQLite or a socket waits for the GIL up to one switch interval while
    # other threads compute. A write transaction makes several such calls under a lock every
    # writer needs, so with Python's default interval a write held that lock many times longer
    # than its own work under load (figures: benchmarks/README.md, mixed load).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    _raise_open_files_limit(s.connection_limit + FD_HEADROOM)
    inherited = socket.socket(fileno=args.listen_fd) if args.listen_fd is not None else None
    serving = StatusFile(Path(args.status_file)) if args.status_file else ONE_PROCESS
    ctx = build_context(settings, check_schema=False, role=Role.SERVE, serving=serving)
    gate = StartupGate(create_wsgi_app(ctx))
    starting = _Start(ctx, gate, redact(settings.storage.dsn or ""))
    ready_fd = args.ready_fd

    def announce() -> None:
        if ready_fd is None:
            log.info("xpresso-env serving on http://%s:%s/ (storage %s, %s threads, at most %s connections)",
                     s.host, s.port, settings.storage.backend, s.threads_per_process, s.connection_limit)
        else:  # the supervisor says it once all its processes serve
            log.debug("process %d serving", os.getpid())
            os.write(ready_fd, READY)
            os.close(ready_fd)

    def stop_work() -> None:
        starting.stop()  # a start still waiting for the storage never comes
        ctx.stop()

    try:
        # Bind first: a port in use is reported before anything else happens.
        server = create_server(gate, s, inherited)
        try:
            # SIGTERM (and Ctrl-C) drain: no new connection, the requests in hand are answered, and
            # then the loops stop (running builds are handed back through their lease).
            stop = _Stop(parent=os.getppid() if inherited is not None else None, hold=ctx.hold)
            # An unreachable storage is waited for while serving: 503s meanwhile, never silence.
            starting.begin(announce)
            # Draining, the loops stop beside it: running builds go back to the queue at once (the
            # next process takes them), followed logs end; the requests in hand are answered.
            stopping = threading.Thread(target=stop_work, name="xpresso-stop", daemon=True)
            serve_until_stopped(server, stop, s.drain_s, on_drain=stopping.start)
            stopping.join()
            starting.raise_failure()  # the storage came back with an outdated schema
        finally:
            server.close()
    finally:
        starting.stop()
        ctx.close()
    return 0


class _Start:
    """``serve``'s start once its storage answers: at once when it does, else from a thread that
    retries (logging each retry) while the server answers 503 (``StartupGate``)."""

    def __init__(self, ctx, gate: StartupGate, where: str):
        self._ctx = ctx
        self._gate = gate
        self._where = where
        self._stop = threading.Event()
        self._lock = threading.Lock()  # start and stop never overlap
        self._failure: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None

    def begin(self, announce: Callable[[], None]) -> None:
        """``announce``: logs that the server serves, once it does."""
        if _wait_for_storage(self._ctx.storage, self._where, self._stop, tries=1):
            self._start(announce)
            return
        self._thread = threading.Thread(target=self._wait_then_start, args=(announce,), name="xpresso-start",
                                        daemon=True)
        self._thread.start()

    def _start(self, announce: Callable[[], None]) -> None:
        with self._lock:
            if not self._stop.is_set():
                self._ctx.start()
                self._gate.open()
                announce()

    def _wait_then_start(self, announce: Callable[[], None]) -> None:
        try:
            if not self._stop.wait(STORAGE_RETRY_S) and _wait_for_storage(self._ctx.storage, self._where, self._stop):
                self._start(announce)
        except BaseException as exc:  # SchemaOutdated: stop serving, as at start-up
            self._failure = exc
            os.kill(os.getpid(), signal.SIGTERM)

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            pass
        if self._thread is not None:
            self._thread.join(10)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Claim and run builds, and the retention sweep, without serving HTTP (CONTRACT section 11).
    Builds whatever ``builds.enabled`` says (that key keeps `serve` processes out of building) and
    runs no probes: the worker role (``app.background``)."""
    import threading

    from ..app import Role, build_context

    threads = args.concurrency or settings.builds.max_concurrent
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    ctx = build_context(settings, check_schema=False, role=Role.WORKER, build_threads=threads)
    try:
        # SIGTERM (and Ctrl-C) end it cleanly: running builds are handed back to the queue.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        _wait_for_storage(ctx.storage, redact(settings.storage.dsn or ""))
        ctx.start()
        log.info("xpresso-env worker: %s on storage %s, no HTTP", count(threads, "build thread"),
                 settings.storage.backend)
        threading.Event().wait()  # until a signal ends the process
    finally:
        ctx.close()
    return 0


# -- what running needs: listening, the storage, the open-files limit, signals -----------------

def _wait_for_storage(storage: "StorageBackend", where: str, stop: Optional[threading.Event] = None,
                      tries: Optional[int] = None) -> bool:
    """Return True once the storage answers with the schema this code needs. An unreachable
    storage (a database still starting) is retried every STORAGE_RETRY_S, each retry logged, for
    as long as it takes (or ``tries`` times: False); False as well once ``stop`` is set. An
    outdated schema stops at once (SchemaOutdated: a person must run `init`)."""
    from ..storage import check_ready

    stop = stop or threading.Event()
    attempt = 0
    while True:
        try:
            check_ready(storage)
            return True
        except StorageUnavailable as exc:
            attempt += 1
            at = f" at {where}" if where else ""
            log.warning("storage %s%s not reachable (%s): retrying in %g s", storage.name, at, exc.detail,
                        STORAGE_RETRY_S)
            if (tries is not None and attempt >= tries) or stop.wait(STORAGE_RETRY_S):
                return False


def _raise_open_files_limit(wanted: int) -> None:
    """Each connection holds a file descriptor: raise the soft limit toward ``wanted`` (within
    the hard limit), and say so when server.connection_limit cannot be reached."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open files are limited to %d (ulimit -n): fewer than server.connection_limit "
                    "plus %d can be open", target, FD_HEADROOM)


def _exit_on_signal(signum, frame) -> None:
    log.info("signal %s: stopping", signum)
    raise SystemExit(0)
