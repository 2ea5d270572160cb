"""A private PostgreSQL cluster a test owns: started, stopped, hung (SIGSTOP) and resumed at will.

Never the shared server at 5432: tests of outages stop or freeze the database, which would break
every other test using it. The cluster is made by ``initdb`` in a temporary folder (trust auth,
listening on 127.0.0.1 only, on a free port) and removed at the end. PostgreSQL refuses to run
as root: when the test runs as root, ``initdb`` and ``postgres`` run as the ``postgres`` user
(``runuser``) and the folder is theirs. Binaries: ``/usr/lib/postgresql/*/bin`` (Debian's
``postgresql`` package) or ``$XPRESSO_TEST_PG_BIN``.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .server import free_port

BIN_ENV = "XPRESSO_TEST_PG_BIN"
RUN_AS = "postgres"


def pg_bin() -> Path | None:
    """The folder of initdb and postgres, or None."""
    given = os.environ.get(BIN_ENV)
    if given:
        return Path(given)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


def cluster_missing_reason() -> str | None:
    """Why a private cluster cannot be made here, or None."""
    if pg_bin() is None:
        return "PostgreSQL's server binaries are not installed (Debian package postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root needs a {RUN_AS!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "runuser is missing (util-linux)"
    return None


class PrivateCluster:
    """One initdb'd cluster. ``dsn`` points at its ``postgres`` database as its superuser."""

    def __init__(self, folder: Path, port: int):
        self.folder = folder
        self.data = folder / "data"
        self.port = port
        self.log_file = folder / "postgres.log"
        self.proc: subprocess.Popen | None = None
        self._bin = pg_bin()
        self._as_other = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={RUN_AS} dbname=postgres"

    def _command(self, *args: str) -> list[str]:
        return (["runuser", "-u", RUN_AS, "--"] if self._as_other else []) + list(args)

    def initdb(self) -> None:
        if self._as_other:
            shutil.chown(self.folder, RUN_AS, RUN_AS)
        subprocess.run(self._command(str(self._bin / "initdb"), "-D", str(self.data), "-U", RUN_AS,
                                     "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"),
                       check=True, capture_output=True, timeout=120)

    def start(self, timeout_s: float = 30.0) -> None:
        assert self.proc is None, "already running"
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                self._command(str(self._bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                              "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.folder}",
                              "-c", "fsync=off", "-c", "max_connections=60", "-c", "shared_buffers=16MB"),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"private PostgreSQL did not start:\n{tail}")
            time.sleep(0.1)

    def answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def pids(self) -> list[int]:
        """The postmaster and every process it started (each of them leads a session of its
        own, so they are found by parent), and ``runuser`` when there is one."""
        if self.proc is None:
            return []
        postmaster = self._postmaster_pid()
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
        children = [int(pid) for pid, ppid in (line.split() for line in out.splitlines()) if int(ppid) == postmaster]
        return sorted({self.proc.pid, postmaster, *children})

    def _postmaster_pid(self) -> int:
        """Not ``proc.pid`` when it is ``runuser``'s."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return self.proc.pid

    def pause(self) -> None:
        """SIGSTOP every process of the cluster: as a hung host or a network partition behaves."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), as ``pg_ctl stop -m fast``; SIGKILL to all if that hangs."""
        if self.proc is None:
            return
        self.resume()
        pids = self.pids()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._postmaster_pid(), signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def create_database(self, name: str) -> str:
        """A new database in the cluster; its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"host=127.0.0.1 port={self.port} user={RUN_AS} dbname={name}"


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A running private cluster, stopped and removed at the end."""
    reason = cluster_missing_reason()
    if reason:
        raise RuntimeError(reason)
    # Not under the test's own temporary folder: pytest makes it 0700 root, which postgres cannot enter.
    folder = Path(tempfile.mkdtemp(prefix="xpg-"))
    cluster = PrivateCluster(folder, free_port())
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
