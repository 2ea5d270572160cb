"""Slow preparations a test run starts early and waits for late.

Installing pyATS from the package index is slow and mostly waiting; started when the run starts
(tests/daemon_fixtures.py does it when a collected test needs it), it overlaps the tests that run
before its first user instead of adding to the run's time. A preparation is a list
of commands run one after the other in a thread; stopping the run's jobs kills a command still
running, so nothing outlives the run. Processes of one run (pytest-xdist workers) share a
preparation made in a folder they share: the first one makes it, the others wait and use it.
"""
from __future__ import annotations

import fcntl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence


@dataclass
class Outcome:
    returncode: int
    output: str  # the last command's standard error and output, for the failure message


@dataclass
class _Job:
    commands: list[list[str]]
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Optional[Outcome] = None
    proc: Optional[subprocess.Popen] = None
    stopped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    shared: Optional[Path] = None  # "<shared>.lock" and "<shared>.done" beside what the commands make

    def run(self) -> None:
        lock = None
        try:
            if self.shared is not None:
                lock = self._lock()
                if lock is None:
                    self.outcome = Outcome(-1, "stopped")
                    return
                if self._beside(".done").exists():
                    self.outcome = Outcome(0, "made by another process of this run")
                    return
            for argv in self.commands:
                with self.lock:
                    if self.stopped:
                        self.outcome = Outcome(-1, "stopped")
                        return
                    self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, text=True)
                output, _ = self.proc.communicate()
                self.outcome = Outcome(self.proc.returncode, output)
                if self.proc.returncode != 0:
                    return
            if self.shared is not None:
                self._beside(".done").touch()
        except OSError as exc:
            self.outcome = Outcome(-1, str(exc))
        finally:
            if lock is not None:
                lock.close()  # releases the flock
            self.done.set()

    def _beside(self, suffix: str) -> Path:
        """``<shared><suffix>``: the lock and the "made" mark beside the shared preparation."""
        assert self.shared is not None
        return self.shared.with_name(self.shared.name + suffix)

    def _lock(self):
        """The shared preparation's lock, held until closed; None if the job was stopped meanwhile."""
        fh = open(self._beside(".lock"), "a")
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fh
            except BlockingIOError:
                if self.stopped:
                    fh.close()
                    return None
                time.sleep(0.2)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()


class Background:
    """Named preparations: :meth:`start` one early (again: nothing happens), :meth:`wait` for it
    where it is used (starting it then if nobody did), :meth:`stop` them all at the end."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._threads: list[threading.Thread] = []

    def start(self, name: str, commands: Sequence[Sequence[str]], shared: Optional[Path] = None) -> None:
        """``shared``: what the commands make, in a folder other processes of the run (xdist
        workers) see; the first to start makes it, the others wait for it (a file lock)."""
        if name in self._jobs:
            return
        job = self._jobs[name] = _Job([list(c) for c in commands], shared=shared)
        thread = threading.Thread(target=job.run, name=f"background-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def wait(self, name: str, commands: Sequence[Sequence[str]], timeout_s: float = 900,
             shared: Optional[Path] = None) -> Outcome:
        self.start(name, commands, shared)
        job = self._jobs[name]
        if not job.done.wait(timeout_s):
            job.stop()
            job.done.wait(30)
            return Outcome(-1, f"did not finish within {timeout_s:g} s")
        assert job.outcome is not None
        return job.outcome

    def wait_all(self, timeout_s: float = 900) -> None:
        """Wait for every preparation started so far: a test that counts this process's children
        (the leak watch's own tests) must not count a preparation's."""
        for job in list(self._jobs.values()):
            job.done.wait(timeout_s)

    def stop(self) -> None:
        for job in self._jobs.values():
            job.stop()
        for thread in self._threads:
            thread.join(30)
