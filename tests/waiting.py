"""Polling until something the background work does shows up (one home for the tests' loop), and
the sleep lengths tests find their leftover processes by."""
from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float = 30.0, what: str = "condition",
             interval_s: float = 0.05) -> T:
    """``predicate()``'s first truthy value; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout_s} s")
        time.sleep(interval_s)


def worker_sleep_s(base: int) -> int:
    """A sleep length for a test to find its leftover processes by command line (machine-wide):
    ``base`` in a run without parallel workers, and a length of its own in each pytest-xdist worker,
    whose neighbours run the same tests' sleeps at the same time."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return base + 100 * int(worker[2:])
