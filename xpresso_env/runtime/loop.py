"""A background loop: a body run again and again on its own thread (or a pool of threads) until
the loop is stopped, every ``interval_s`` or sooner when woken.

Services hand their body to a :class:`Loop` instead of writing their own thread, wait and stop;
the app (``app.py``) starts every loop from one ordered list and stops them in reverse order.
What is started or stopped beside a loop, in its place in that list (hooks registered before the
loop that needs them, a check made before builds start), is a :class:`Step`.

The body says when it wants to run next: ``None`` means after the loop's interval; a number of
seconds overrides it for this once (``0``: at once, as a worker does after finishing a build,
or a scheduler's next due time). A body that raises is logged in one line and the loop goes on
after its interval: a background loop never dies of one bad round.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

from ..core.errors import XpressoError

log = logging.getLogger("xpresso_env.loop")

# One round of a loop's work; returns the seconds until the next round, None for the interval.
Body = Callable[[], Optional[float]]


class Startable(Protocol):
    """What the app's ordered list holds: loops and steps."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Step:
    """Work done once when the app starts (and undone when it stops), in its place in the app's
    list: the list stays the one record of what runs, and in which order."""

    name: str
    on_start: Callable[[], None]
    on_stop: Callable[[], None] = _nothing

    def start(self) -> None:
        self.on_start()

    def stop(self) -> None:
        self.on_stop()


class Loop:
    """``body`` run on a thread named ``name`` until :meth:`stop`.

    :param interval_s: the pause between two rounds when the body returns None (or raises).
    :param logger: where a failed round is logged (the owner's logger: its messages stay in its area).
    :param join_s: how long :meth:`stop` waits for a running round to end before giving up on it.
    :param wait_first: pause one interval before the first round (a writer with nothing to write
        yet) instead of running at once (a sweep that catches up at start).
    :param on_start: called by :meth:`start` before the threads start (a pool the rounds hand work to).
    :param interrupt: called by :meth:`stop` before it waits: tells a running round to end early
        (the build queue stops its builds, which go back to the queue).
    :param on_stop: called by :meth:`stop` once the threads ended (or the wait gave up), on the
        stopping thread: what they leave is finished there (the access log's last lines, claims
        released).
    """

    def __init__(self, name: str, body: Body, interval_s: float, *, logger: logging.Logger = log,
                 join_s: float = 5.0, wait_first: bool = False, on_start: Callable[[], None] = _nothing,
                 interrupt: Callable[[], None] = _nothing, on_stop: Callable[[], None] = _nothing):
        self.name = name
        self.interval_s = interval_s
        self._bodies: tuple[Body, ...] = (body,)
        self._logger = logger
        self._join_s = join_s
        self._wait_first = wait_first
        self._on_start = on_start
        self._interrupt = interrupt
        self._on_stop = on_stop
        self._cond = threading.Condition()
        self._wakes = 0  # counts wake() calls: a round that started before the last one runs again
        # A new event for each start: a thread that outlived its stop's join keeps its own, set.
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def pool(cls, name: str, bodies: Sequence[Body], interval_s: float, **options) -> "Loop":
        """One thread per body (``name-0``, ``name-1``...), started, woken and stopped together:
        a pool of workers, each body holding its own worker's identity."""
        if not bodies:
            raise ValueError("a pool needs at least one body")
        loop = cls(name, bodies[0], interval_s, **options)
        loop._bodies = tuple(bodies)
        return loop

    @property
    def size(self) -> int:
        """Its number of threads (one per body)."""
        return len(self._bodies)

    @property
    def running(self) -> bool:
        """Started and not stopped since. Read without the lock: the access log asks on every
        request, and the list is only ever replaced whole, under the lock."""
        return bool(self._threads)

    @property
    def stopping(self) -> bool:
        """Stop was asked (and no start since): a long round checks it to end early."""
        return self._stop.is_set()

    def start(self) -> None:
        """Start the thread(s); starting a running loop does nothing."""
        with self._cond:
            if self._threads:
                return
            self._on_start()
            stop = self._stop = threading.Event()
            single = len(self._bodies) == 1
            # The wake count as of now: a wake() before a thread first looks is not lost.
            self._threads = [threading.Thread(target=self._run, args=(body, stop, self._wakes), daemon=True,
                                              name=self.name if single else f"{self.name}-{n}")
                             for n, body in enumerate(self._bodies)]
            threads = list(self._threads)
        for thread in threads:
            thread.start()

    def wake(self) -> None:
        """Run the next round now: a sleeping thread wakes, a running round is followed by another."""
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def stop(self, join_s: Optional[float] = None) -> None:
        """Stop the thread(s) and wait up to ``join_s`` (default: the loop's) for a running round to
        end; a sleeping thread ends at once. Stopping a stopped loop does nothing."""
        with self._cond:
            threads, self._threads = self._threads, []
            if not threads:
                return
            self._stop.set()
            self._cond.notify_all()
        self._interrupt()
        deadline = time.monotonic() + (self._join_s if join_s is None else join_s)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            self._logger.warning("%s: %s still running after the stop; left to end on its own",
                                 self.name, ", ".join(alive))
        try:
            self._on_stop()
        except Exception:
            self._logger.exception("%s: the work after its stop failed", self.name)

    def _run(self, body: Body, stop: threading.Event, seen: int) -> None:
        delay = self.interval_s if self._wait_first else 0.0
        while True:
            seen = self._pause(stop, seen, delay)
            if stop.is_set():
                return
            delay = self._round(body)

    def _pause(self, stop: threading.Event, seen: int, delay: float) -> int:
        """Sleep up to ``delay`` unless woken or stopped; returns the wake count the next round
        starts from."""
        deadline = time.monotonic() + delay
        with self._cond:
            while not stop.is_set() and self._wakes == seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._wakes

    def _round(self, body: Body) -> float:
        try:
            delay = body()
        except XpressoError as exc:  # storage unreachable and the like: said without a traceback
            self._logger.warning("%s: %s", self.name, exc.detail)
        except Exception:
            self._logger.exception("%s failed; it runs again in %g s", self.name, self.interval_s)
        else:
            return self.interval_s if delay is None else delay
        return self.interval_s
