"""Run one build subprocess: its own process group, output streamed line by line, killable.

Git and buildah both go through :func:`run`. The command is an argument list (never a shell
string). The child starts a new session, so cancelling or timing out kills the whole group
(git's helpers, buildah's RUN steps) and not only the leader. Once the leader exits, whatever is
left in its group is killed too, so no stray process outlives a build step.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from .builder import BuildCancelled, BuildFailed, BuildTimedOut

Log = Callable[[str], None]

POLL_S = 0.05  # how often cancel and the deadline are checked while the child is quiet
MAX_LINE = 65536  # longer output lines are logged in pieces
TAIL_LINES = 40


@dataclass
class RunResult:
    returncode: int
    stdout: list[str] = field(default_factory=list)  # only with capture_stdout=True
    tail: list[str] = field(default_factory=list)  # the last lines sent to the log

    def last_line(self) -> str:
        """The last non-blank logged line: the usual one-line reason of a failure."""
        for line in reversed(self.tail):
            if line.strip():
                return line.strip()
        return ""


class _Lines:
    """Splits a byte stream into decoded lines."""

    def __init__(self, sink: Callable[[str], None]):
        self.buf = b""
        self.sink = sink

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            cut = self.buf.find(b"\n")
            if cut < 0:
                break
            line, self.buf = self.buf[:cut], self.buf[cut + 1:]
            self._emit(line)
        while len(self.buf) > MAX_LINE:
            self._emit(self.buf[:MAX_LINE])
            self.buf = self.buf[MAX_LINE:]

    def close(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = b""

    def _emit(self, raw: bytes) -> None:
        self.sink(raw.rstrip(b"\r").decode("utf-8", errors="replace"))


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group ``pgid`` (git and what it started); one already gone is no error."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _leader_exited(pid: int) -> bool:
    """True once the leader has exited, WITHOUT reaping it: while the zombie exists its pid
    (and so the group id) cannot be reused, so killing the group afterwards is safe."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _pidfd(pid: int) -> Optional[int]:
    """A pidfd for ``pid`` (Linux 5.3+), or None where there is none: then exits are polled."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def start_time(pid: int) -> Optional[int]:
    """When process ``pid`` started (clock ticks after boot, from /proc), or None when there is
    no such process. A pid and its start time name one process for good: a process that reuses
    the pid starts later."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def end_group(pgid: int, leader_start: Optional[int], wait_s: float = 5.0) -> bool:
    """SIGKILL a process group that a dead server left running, and wait (up to ``wait_s``) until
    no member is left. ``leader_start`` is its leader's :func:`start_time` when the group was
    recorded: a live process with that pid that started at another time is not the recorded
    leader (the pid was reused, which can only happen once the old group is gone), and nothing
    is killed. A dead leader's group id cannot be reused while any member lives, so the group is
    killed then. Returns True when members were killed."""
    now = start_time(pgid)
    if now is not None and now != leader_start:
        return False
    if not group_members(pgid):
        return False
    kill_group(pgid)
    deadline = time.monotonic() + wait_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return True


class _Stopper:
    """Stops a process group without blocking the output loop.

    ``group``: SIGTERM to the whole group (SIGKILL at once when ``grace_s`` is 0), SIGKILL
    after ``grace_s``.
    ``children``: SIGKILL every member but the leader, again at each poll (new steps may start)
    until the leader exits, so the leader sees its step fail and cleans up the way it does
    after any failed step; SIGKILL to the whole group after ``grace_s``. For buildah: a SIGTERM
    to buildah itself outside a RUN step kills it on the spot and leaves its working container.
    """

    def __init__(self, proc: subprocess.Popen, mode: str, grace_s: float):
        self.proc, self.pgid, self.mode, self.grace_s = proc, proc.pid, mode, grace_s
        self.hard_at: Optional[float] = None

    def start(self) -> None:
        self.hard_at = time.monotonic() + self.grace_s
        if self.mode == "group":
            kill_group(self.pgid, signal.SIGTERM if self.grace_s > 0 else signal.SIGKILL)
        self.tick()

    def tick(self) -> None:
        if self.hard_at is None:
            return
        if time.monotonic() >= self.hard_at:
            kill_group(self.pgid)
        elif self.mode == "children" and not _leader_exited(self.proc.pid):
            for pid in group_members(self.pgid):
                if pid != self.proc.pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass


def run(cmd: Sequence[str], log: Log, cancel: threading.Event, timeout_s: float,
        cwd: Optional[Path | str] = None, env: Optional[Mapping[str, str]] = None, *,
        capture_stdout: bool = False, term_grace_s: float = 0.0,
        stop_mode: str = "group", on_start: Optional[Callable[[int], None]] = None) -> RunResult:
    """Run ``cmd`` and wait for it.

    :param log: receives every output line (stdout and stderr together, or only stderr when
        ``capture_stdout`` is true: stdout is then returned in ``RunResult.stdout``).
    :param cancel: when set, the process group is stopped and :class:`BuildCancelled` raised
        once it is gone.
    :param timeout_s: past this many seconds the group is stopped and :class:`BuildTimedOut`
        raised.
    :param term_grace_s: how long a stop may stay gentle before SIGKILL to the whole group.
    :param stop_mode: ``group`` or ``children`` (see :class:`_Stopper`).
    :param on_start: called with the group's id (the child's pid) once it runs, before its
        output is read; if it raises, the group is killed.
    :returns: the exit status and output; a non-zero status is for the caller to judge.
    :raises BuildFailed: the program cannot be started.
    """
    if stop_mode not in ("group", "children"):
        raise ValueError(f"unknown stop_mode {stop_mode!r}")
    cmd = [str(c) for c in cmd]
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    captured: list[str] = []

    def to_log(line: str) -> None:
        tail.append(line)
        log(line)

    deadline = time.monotonic() + max(0.0, timeout_s)
    try:
        proc = subprocess.Popen(
            cmd, cwd=None if cwd is None else str(cwd), env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if capture_stdout else subprocess.STDOUT,
            start_new_session=True, close_fds=True)
    except OSError as exc:
        raise BuildFailed(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None

    pgid = proc.pid  # start_new_session: the child leads its own group
    stopper = _Stopper(proc, stop_mode, term_grace_s)
    sel = selectors.DefaultSelector()
    streams = {proc.stdout: _Lines(captured.append if capture_stdout else to_log)}
    if capture_stdout:
        streams[proc.stderr] = _Lines(to_log)
    for stream in streams:
        os.set_blocking(stream.fileno(), False)
        sel.register(stream, selectors.EVENT_READ)

    # A pidfd becomes readable when the leader exits (without reaping it): the loop wakes at
    # once instead of sleeping out POLL_S when the pipes close just before the exit.
    exit_fd = _pidfd(proc.pid)
    if exit_fd is not None:
        sel.register(exit_fd, selectors.EVENT_READ)

    stopped: Optional[BuildFailed] = None
    exited_at: Optional[float] = None
    try:
        if on_start is not None:
            on_start(pgid)
        while sel.get_map() or exited_at is None:
            for key, _ in sel.select(POLL_S):  # with no pipe left open this just waits
                if key.fileobj == exit_fd:
                    sel.unregister(exit_fd)
                    continue
                try:
                    data = os.read(key.fileobj.fileno(), 65536)
                except BlockingIOError:
                    continue
                if data:
                    streams[key.fileobj].feed(data)
                else:
                    sel.unregister(key.fileobj)
            if stopped is None:
                if cancel.is_set():
                    stopped = BuildCancelled("cancelled")
                elif time.monotonic() >= deadline:
                    stopped = BuildTimedOut("timed out")
                if stopped is not None:
                    stopper.start()
            else:
                stopper.tick()
            if exited_at is None and _leader_exited(proc.pid):
                exited_at = time.monotonic()
                # Whatever is left in the group is a stray: it would hold our pipes open.
                kill_group(pgid)
            elif exited_at is not None and time.monotonic() - exited_at > 5:
                break  # a descendant that left the group still holds the pipe: stop reading
    finally:
        sel.close()
        if exit_fd is not None:
            os.close(exit_fd)
        if not _leader_exited(proc.pid):
            # Leaving by an exception (a failing log callback...): never leave the group running.
            kill_group(pgid)
        proc.wait()
        for stream, lines in streams.items():
            lines.close()
            stream.close()
    if stopped is not None:
        raise stopped
    return RunResult(proc.returncode, captured, list(tail))
