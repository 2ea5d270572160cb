"""What a test run leaves behind: mounts under its folders, processes, listening sockets.

A pytest plugin (tests/conftest.py loads it): a :class:`LeakWatch` is taken when the run starts,
and when it ends, after every fixture's teardown, the run FAILS if anything is left, which is then
ended. Everything comes from /proc, so nothing is guessed:

* mounts: mount points in ``/proc/self/mountinfo`` that were not there at the start and lie
  under a folder the run made (its pytest temp folder, a private dockerd's folder);
* processes: descendants of this process, and processes anywhere carrying this run's marker in
  their environment (:data:`MARKER`; it is inherited, so a build step orphaned by a killed server
  still carries it after it was re-parented to init);
* listening sockets: TCP sockets in LISTEN state (``/proc/net/tcp`` and ``tcp6``) held open by
  this process or by one of those processes.

Other work on the machine (another run's daemon, a database) is neither ours nor counted.
Under pytest-xdist every worker keeps a watch of its own (its marker, its descendants, its temp
folder) and hands what it found to the controller, whose report fails the run.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pytest

MARKER = "TEST_RUN_LEAK_WATCH"  # no XPRESSO_ prefix: the client tests strip those from its environment
_MNT_DETACH = 2  # umount2(2): detach now, finish when no longer busy
_TCP_LISTEN = "0A"  # st in /proc/net/tcp


# --------------------------------------------------------------------------- mounts

def _unescape(field_text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040, \011, \012, \134.
    return field_text.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def mount_points() -> list[str]:
    """Every mount point this process sees, in mount order."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
        return [_unescape(line.split()[4]) for line in fh if line.strip()]


def _under(path: str, folder: Path) -> bool:
    return path == str(folder) or path.startswith(str(folder).rstrip("/") + "/")


def mounts_under(folder: Path) -> list[str]:
    """Mount points at or below ``folder``, the last mounted first (unmounting order)."""
    return [p for p in reversed(mount_points()) if _under(p, folder)]


def unmount(point: str) -> None:
    """Detach one mount (lazily: a busy mount goes once nothing uses it)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.umount2(os.fsencode(point), _MNT_DETACH) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"umount {point}: {os.strerror(errno)}")


def unmount_under(folder: Path) -> list[str]:
    """Unmount everything at or below ``folder`` (e.g. the ``exec/netns/default`` a dockerd that
    ran a host-network container leaves when it stops), so the folder can be removed.
    Returns the mount points that were unmounted."""
    done = []
    for point in mounts_under(folder):
        try:
            unmount(point)
        except OSError:
            continue  # already gone (a parent's detach took it along), or not ours to take
        done.append(point)
    return done


# --------------------------------------------------------------------------- processes

@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # clock ticks after boot: a pid with its start time names one process for good
    state: str
    command: str


def _proc(pid: int) -> Optional[Proc]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            after = fh.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            command = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, IndexError):
        return None
    return Proc(pid=pid, ppid=int(after[1]), start=int(after[19]), state=after[0].decode(), command=command)


def processes() -> dict[int, Proc]:
    """Every live (not zombie) process, by pid."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = _proc(int(entry.name))
            if proc is not None and proc.state != "Z":
                found[proc.pid] = proc
    return found


def _carries(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker in fh.read().split(b"\0")
    except OSError:
        return False


def _descendants(root: int, table: dict[int, Proc]) -> set[int]:
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# --------------------------------------------------------------------------- listening sockets

def _listening_inodes() -> dict[int, str]:
    """Socket inode -> "address:port" for every TCP socket in LISTEN state in this network namespace."""
    found = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/self/net/{name}") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _TCP_LISTEN:
                address, port = fields[1].rsplit(":", 1)
                found[int(fields[9])] = f"{_address(address)}:{int(port, 16)}"
    return found


def _address(hex_address: str) -> str:
    # The kernel prints the address as 32-bit words in host (little-endian) order.
    raw = b"".join(bytes.fromhex(hex_address[i:i + 8])[::-1] for i in range(0, len(hex_address), 8))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    return f"[{socket.inet_ntop(socket.AF_INET6, raw)}]"


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


# --------------------------------------------------------------------------- the watch

@dataclass
class Leaks:
    mounts: list[str] = field(default_factory=list)
    processes: list[Proc] = field(default_factory=list)
    listening: list[str] = field(default_factory=list)  # "address:port (pid N: command)"

    def __bool__(self) -> bool:
        return bool(self.mounts or self.processes or self.listening)

    def lines(self) -> list[str]:
        return ([f"mounted: {m}" for m in self.mounts]
                + [f"running: pid {p.pid} (parent {p.ppid}): {p.command[:200]}" for p in self.processes]
                + [f"listening: {s}" for s in self.listening])


class LeakWatch:
    """Taken when a run starts (:meth:`start`); :meth:`leaks` then tells what the run left."""

    def __init__(self, token: str, mounts_before: set[str], processes_before: set[tuple[int, int]],
                 listening_before: set[int]):
        self.token = token
        self.folders: list[Path] = []
        self._mounts_before = mounts_before
        self._processes_before = processes_before
        self._listening_before = listening_before

    @classmethod
    def start(cls, environ: Optional[dict[str, str]] = None) -> "LeakWatch":
        """Snapshot now, and mark ``environ`` (default: this process's environment): every process
        started with it inherits the marker (one given an environment of its own is still found
        while it is a descendant)."""
        token = uuid.uuid4().hex
        (os.environ if environ is None else environ)[MARKER] = token
        before = {(p.pid, p.start) for p in processes().values()}
        return cls(token, set(mount_points()), before, _socket_inodes(os.getpid()))

    def watch(self, folder: Path) -> None:
        """Count new mounts under ``folder`` as the run's."""
        self.folders.append(Path(folder))

    def _ours(self) -> list[Proc]:
        table = processes()
        me = os.getpid()
        marker = f"{MARKER}={self.token}".encode()
        pids = _descendants(me, table) | {pid for pid in table if pid != me and _carries(pid, marker)}
        return sorted((table[pid] for pid in pids if (pid, table[pid].start) not in self._processes_before),
                      key=lambda p: p.pid)

    def leaks(self) -> Leaks:
        gc.collect()  # a socket only a reference cycle still holds is closed now, not reported
        mounts = [m for m in mount_points() if m not in self._mounts_before
                  and any(_under(m, folder) for folder in self.folders)]
        procs = self._ours()
        listening = []
        inodes = _listening_inodes()
        mine = _socket_inodes(os.getpid()) - self._listening_before
        for pid, command, held in [(os.getpid(), "this test run", mine),
                                   *((p.pid, p.command[:80], _socket_inodes(p.pid)) for p in procs)]:
            for inode in sorted(held & inodes.keys()):
                listening.append(f"{inodes[inode]} (pid {pid}: {command})")
        return Leaks(mounts=mounts, processes=procs, listening=listening)

    def settle(self, wait_s: float = 10.0, step_s: float = 0.2) -> Leaks:
        """The leaks left once processes still on their way out (a SIGTERM'd server, a daemon's
        shim) had ``wait_s`` to finish."""
        deadline = time.monotonic() + wait_s
        found = self.leaks()
        while found and time.monotonic() < deadline:
            time.sleep(step_s)
            found = self.leaks()
        return found

    @staticmethod
    def clean(leaks: Leaks) -> None:
        """End what a failed run left: kill its processes, detach its mounts."""
        for proc in leaks.processes:
            current = _proc(proc.pid)
            if current is not None and current.start == proc.start:  # still that process
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for point in sorted(leaks.mounts, key=len, reverse=True):
            try:
                unmount(point)
            except OSError:
                pass


def describe(leaks: Leaks, folders: Iterable[Path]) -> str:
    where = ", ".join(str(f) for f in folders) or "-"
    return "\n".join(["tests left these behind (watched folders: " + where + "):", *leaks.lines()])


# --------------------------------------------------------------------------- the pytest plugin

WATCH = pytest.StashKey[LeakWatch]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("leak_watch_wait_s", "How long the end of a run waits for processes still on their way out "
                  "before it reports them as left behind", default="10")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # Before any test: what is mounted and running already is not this run's.
    config.stash[WATCH] = LeakWatch.start()
    # A run stopped with SIGTERM (a CI job's time limit) tears its fixtures down as Ctrl-C does,
    # so its private dockerd and servers are stopped too.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session", autouse=True)
def leak_watch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LeakWatch:
    """The run's watch; a fixture that makes a folder outside the temp folder registers it here."""
    watch = request.config.stash[WATCH]
    watch.watch(tmp_path_factory.getbasetemp())
    return watch


# What a pytest-xdist worker left behind, handed to the controller in its workeroutput, and the
# controller's collection of them.
LEFT_BEHIND = "xpresso_left_behind"
WORKER_LEAKS = pytest.StashKey[list[str]]()


def _report(session: pytest.Session, text: str) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.section("left behind", sep="=", red=True, bold=True)
        reporter.line(text, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)  # after the runner's: every fixture has been torn down by then
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    watch = session.config.stash.get(WATCH, None)
    if watch is None:
        return
    leaks = watch.settle(float(session.config.getini("leak_watch_wait_s")))
    # Under pytest-xdist each worker watches what it started; nobody sees a worker's report or exit
    # status, so it hands its findings to the controller (pytest_testnodedown), which fails the run.
    worker_output = getattr(session.config, "workeroutput", None)
    found = [*session.config.stash.get(WORKER_LEAKS, [])]
    if leaks:
        text = describe(leaks, watch.folders)
        watch.clean(leaks)
        if worker_output is not None:
            worker_output[LEFT_BEHIND] = text
        else:
            found.append(text)
    if found:
        _report(session, "\n".join(found))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook, in the controller: a worker has finished
def pytest_testnodedown(node, error) -> None:
    text = getattr(node, "workeroutput", {}).get(LEFT_BEHIND)
    if text:
        node.config.stash.setdefault(WORKER_LEAKS, []).append(f"[{node.gateway.id}] {text}")
