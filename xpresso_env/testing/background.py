"""Slow preparations a test run starts early and waits for late.

Installing pyATS from the package index is slow and mostly waiting; started when the run starts
(tests/daemon_fixtures.py does it when a collected test needs it), it overlaps the tests that run
before its first user instead of adding to the run's time. A preparation is a list
of commands run one after the other in a thread; stopping the run's jobs kills a command still
running, so nothing outlives the run.
"""
from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass, field
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

    def run(self) -> None:
        try:
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
        except OSError as exc:
            self.outcome = Outcome(-1, str(exc))
        finally:
            self.done.set()

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

    def start(self, name: str, commands: Sequence[Sequence[str]]) -> None:
        if name in self._jobs:
            return
        job = self._jobs[name] = _Job([list(c) for c in commands])
        thread = threading.Thread(target=job.run, name=f"background-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def wait(self, name: str, commands: Sequence[Sequence[str]], timeout_s: float = 900) -> Outcome:
        self.start(name, commands)
        job = self._jobs[name]
        if not job.done.wait(timeout_s):
            job.stop()
            job.done.wait(30)
            return Outcome(-1, f"did not finish within {timeout_s:g} s")
        assert job.outcome is not None
        return job.outcome

    def stop(self) -> None:
        for job in self._jobs.values():
            job.stop()
        for thread in self._threads:
            thread.join(30)
