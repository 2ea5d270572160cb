"""The supervisor of `serve --processes N` (CONTRACT section 15).

It binds the port once and starts N serving processes that inherit the socket: the kernel hands
each new connection to whichever process accepts first. It answers no request itself and imports
none of the service: each process it starts is a fresh `xpresso-env serve` (fresh code, the
configuration read anew), which says it serves by writing a byte on its "ready" pipe.

- A process that dies is replaced at once; if its replacement dies too within ``QUICK_EXIT_S`` of
  its start, the next one starts after a back-off that doubles from ``BACKOFF_FIRST_S`` up to
  ``BACKOFF_MAX_S``.
- SIGTERM (or SIGINT) drains every process (``http/server.py``: stop accepting, finish what they
  hold, hand running builds back through their lease) and then exits.
- SIGHUP reloads: the configuration is read again (one that no longer loads is refused with its
  one-line error), N new processes start, and only once all of them serve do the old ones get
  SIGTERM and drain. A new process that exits before it serves refuses the reload the same way.
  Throughout, some process accepts from the one socket: no connection is refused.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..config import ServerSettings, Settings
from ..core.errors import XpressoError
from .processes import StatusFile

log = logging.getLogger("xpresso_env.supervisor")

READY_TIMEOUT_S = 120.0  # a reload's new processes must all serve within this long
QUICK_EXIT_S = 10.0  # a process that dies sooner than this after its start is replaced after a back-off
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
# Beyond server.drain_s, what a stopping process may take: its loops' stop, builds handing their
# claims back (the build queue waits up to 30 s for them). Past it the process is killed.
STOP_GRACE_S = 45.0
TICK_S = 0.5  # the supervisor's loop wakes at once on a signal; this bounds its other checks
READY = b"r"

# Starts one serving process: (listening socket, the write end of its ready pipe) -> the process.
Spawn = Callable[[socket.socket, int], subprocess.Popen]


@dataclass
class Child:
    proc: subprocess.Popen
    slot: int
    generation: int
    started: float
    ready_fd: int  # the read end of its ready pipe; -1 once closed
    ready: bool = False
    stop_by: Optional[float] = None  # set when it was asked to stop: killed past this time

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close_pipe(self) -> None:
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1


def _one_line(text: str) -> str:
    """A message as one log line (a YAML parser's spans several)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _address(s: ServerSettings) -> tuple[str, int]:
    return s.host, s.port


class Supervisor:
    """:param settings: the configuration as loaded at start.
    :param load: reads the configuration again (a reload); raises an XpressoError if it no longer loads.
    :param bind: the listening socket for an address (a ConfigError if it cannot be had).
    :param spawn: starts one serving process.
    :param status: where the serving count is published for /api/v2/health and /metrics.
    """

    def __init__(self, settings: Settings, load: Callable[[], Settings],
                 bind: Callable[[ServerSettings], socket.socket], spawn: Spawn, status: StatusFile,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._load = load
        self._bind = bind
        self._spawn_process = spawn
        self._status = status
        self._clock = clock
        self._sock: Optional[socket.socket] = None
        self.generation = 0
        self.children: list[Child] = []  # the current generation
        self.retiring: list[Child] = []  # older generations, draining
        self._due: dict[int, float] = {}  # slot -> when its replacement starts
        self._backoff: dict[int, float] = {}  # slot -> its last back-off
        self._stop = False
        self._reload = False
        self._published: Optional[tuple[int, int, int]] = None
        self._wake_r = self._wake_w = -1

    # -- the life of the supervisor ------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 1 if the first processes could not start."""
        self._sock = self._bind(self.settings.server)
        previous = self._install_signals()
        try:
            self.generation = 1
            self.children = [self._spawn(slot, 1, self._sock) for slot in range(self.settings.server.processes)]
            error = self._await_ready(self.children, deadline=None)
            if error is not None:
                if not self._stop:
                    log.error("%s: stopping", error)
                    return 1
                return 0
            s = self.settings.server
            log.info("xpresso-env serving on http://%s:%s/ with %d processes (pids %s, storage %s, %s threads "
                     "each); SIGHUP reloads", s.host, s.port, len(self.children),
                     " ".join(str(c.pid) for c in self.children), self.settings.storage.backend, s.threads_per_process)
            while not self._stop:
                self._tick()
            return 0
        finally:
            self._shutdown()
            self._restore_signals(previous)

    def _tick(self) -> None:
        waiting = [c for c in self.children if not c.ready and c.ready_fd >= 0]
        readable, _, _ = select.select([self._wake_r, *(c.ready_fd for c in waiting)], [], [], TICK_S)
        self._drain_wakeups()
        for child in waiting:
            if child.ready_fd in readable:
                self._read_ready(child)
        if self._reload and not self._stop:
            self._reload = False
            self.reload()
        self._reap()
        self._reap_orphans()
        self._respawn_due()
        self._kill_overdue()
        self._publish()

    # -- reload ----------------------------------------------------------------------------------
    def reload(self) -> bool:
        """New processes with the configuration read again; the old ones drain once they all serve.
        False (and the old processes keep serving) if the configuration or a new process fails."""
        log.info("SIGHUP: reading the configuration again and starting new processes")
        try:
            settings = self._load()
        except XpressoError as exc:
            log.error("reload refused: %s; the old processes keep serving", _one_line(exc.detail))
            return False
        new_sock = None
        if _address(settings.server) != _address(self.settings.server):
            try:
                new_sock = self._bind(settings.server)
            except XpressoError as exc:
                log.error("reload refused: %s; the old processes keep serving", _one_line(exc.detail))
                return False
        assert self._sock is not None
        generation = self.generation + 1
        new = [self._spawn(slot, generation, new_sock or self._sock) for slot in range(settings.server.processes)]
        error = self._await_ready(new, deadline=self._clock() + READY_TIMEOUT_S)
        if error is not None:
            for child in new:
                self._ask_to_stop(child, grace_s=5.0)
            self._wait_for(new)
            if new_sock is not None:
                new_sock.close()
            log.error("reload refused: %s; the old processes keep serving", error)
            return False
        old, self.children = self.children, new
        self.settings, self.generation = settings, generation
        self._due.clear()
        self._backoff.clear()
        for child in old:
            self._ask_to_stop(child, grace_s=self._stop_grace())
        if new_sock is not None:
            self._sock.close()  # the old processes still hold it until they stop accepting
            self._sock = new_sock
        self._publish()
        log.info("reloaded: %d new process(es) serve (generation %d, pids %s); %d old one(s) finish what they hold",
                 len(new), generation, " ".join(str(c.pid) for c in new), len(old))
        return True

    def _await_ready(self, children: list[Child], deadline: Optional[float]) -> Optional[str]:
        """None once every one of ``children`` serves; else why not (one exited, time ran out, a stop)."""
        while True:
            for child in children:
                if not child.ready and child.proc.poll() is not None:
                    if child.ready_fd >= 0:
                        self._read_ready(child)  # it may have said "ready" before it ended
                    if not child.ready:
                        return (f"a new process (pid {child.pid}) exited with status {child.proc.returncode} "
                                f"before it served (its error is logged above)")
            waiting = [c for c in children if not c.ready]
            if not waiting:
                return None
            if self._stop:
                return "the supervisor is stopping"
            left = TICK_S if deadline is None else min(TICK_S, deadline - self._clock())
            if left <= 0:
                return f"the new processes did not serve within {READY_TIMEOUT_S:g} s"
            readable, _, _ = select.select([self._wake_r, *(c.ready_fd for c in waiting if c.ready_fd >= 0)],
                                           [], [], left)
            self._drain_wakeups()
            for child in waiting:
                if child.ready_fd in readable:
                    self._read_ready(child)

    # -- the processes -----------------------------------------------------------------------------
    def _spawn(self, slot: int, generation: int, sock: socket.socket) -> Child:
        read_fd, write_fd = os.pipe()
        try:
            proc = self._spawn_process(sock, write_fd)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the process holds its own copy: EOF here when it exits
        return Child(proc=proc, slot=slot, generation=generation, started=self._clock(), ready_fd=read_fd)

    def _read_ready(self, child: Child) -> None:
        try:
            data = os.read(child.ready_fd, 1)
        except OSError:
            data = b""
        child.ready = data == READY
        child.close_pipe()  # ready, or EOF: it exited (reaped by the caller's next look)

    def _reap(self) -> None:
        for child in [c for c in self.retiring if c.proc.poll() is not None]:
            self.retiring.remove(child)
            child.close_pipe()
            log.info("old process %d (generation %d) ended, status %s", child.pid, child.generation,
                     child.proc.returncode)
        for child in [c for c in self.children if c.proc.poll() is not None]:
            self.children.remove(child)
            child.close_pipe()
            lived = self._clock() - child.started
            delay = 0.0
            if lived >= QUICK_EXIT_S:
                self._backoff.pop(child.slot, None)
            else:  # replaced at once the first time; if its replacement dies at once too, later and later
                last = self._backoff.get(child.slot)
                delay = 0.0 if last is None else min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, 2 * last))
                self._backoff[child.slot] = delay
            self._due[child.slot] = self._clock() + delay
            log.warning("process %d exited with status %s after %.1f s: a new one starts %s", child.pid,
                        child.proc.returncode, lived, f"in {delay:g} s" if delay else "now")

    def _reap_orphans(self) -> None:
        """As PID 1 of a container, processes orphaned by a dead serving process (a build step)
        become this one's children: collect them when they end, or they stay zombies."""
        pid = os.getpid()
        if pid != 1:  # elsewhere orphans go to init (or a subreaper), never here
            return
        known = {c.pid for c in (*self.children, *self.retiring)}
        try:
            listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return
        for orphan in {int(p) for p in listed} - known:
            try:
                os.waitpid(orphan, os.WNOHANG)
            except ChildProcessError:
                pass

    def _respawn_due(self) -> None:
        now = self._clock()
        assert self._sock is not None
        for slot, due in sorted(self._due.items()):
            if due <= now:
                del self._due[slot]
                child = self._spawn(slot, self.generation, self._sock)
                self.children.append(child)
                log.info("process %d started in place of the one that exited", child.pid)

    def _ask_to_stop(self, child: Child, grace_s: float) -> None:
        child.stop_by = self._clock() + grace_s
        if child not in self.retiring:
            self.retiring.append(child)
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)

    def _stop_grace(self) -> float:
        return self.settings.server.drain_s + STOP_GRACE_S

    def _kill_overdue(self) -> None:
        now = self._clock()
        for child in self.retiring:
            if child.stop_by is not None and now > child.stop_by and child.proc.poll() is None:
                log.warning("process %d still running %g s after its stop: killed", child.pid, self._stop_grace())
                child.proc.kill()

    def _wait_for(self, children: list[Child]) -> None:
        """Until every one of ``children`` has ended (killing the ones past their stop_by)."""
        while True:
            alive = [c for c in children if c.proc.poll() is None]
            if not alive:
                break
            self._kill_overdue()
            time.sleep(0.05)
        for child in children:
            child.close_pipe()
            if child in self.retiring:
                self.retiring.remove(child)

    def _shutdown(self) -> None:
        everyone = [*self.children, *self.retiring]
        if everyone:
            log.info("stopping: %d process(es) finish what they hold", len(everyone))
        for child in everyone:
            self._ask_to_stop(child, grace_s=self._stop_grace())
        self._wait_for(everyone)
        self.children = []
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _publish(self) -> None:
        now = (self.settings.server.processes, sum(1 for c in self.children if c.ready), self.generation)
        if now != self._published:
            self._status.write(*now)
            self._published = now

    # -- signals ---------------------------------------------------------------------------------
    def _install_signals(self) -> dict:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        previous = {"wakeup": signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)}

        def stop(signum, frame) -> None:
            self._stop = True

        def reload(signum, frame) -> None:
            self._reload = True

        def child(signum, frame) -> None:
            pass  # the wakeup pipe has woken the loop: it reaps

        for signum, handler in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, reload),
                                (signal.SIGCHLD, child)):
            previous[signum] = signal.signal(signum, handler)
        return previous

    def _restore_signals(self, previous: dict) -> None:
        signal.set_wakeup_fd(previous.pop("wakeup"))
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
