"""Group commit: the writers of one process that queue behind a write join its transaction, and
one COMMIT (one fsync of the WAL) makes them all durable.

Under a write-heavy load the store's one write lock was nearly always busy, much of it in each
write's own fsync and in hand-offs between writers (benchmarks/README.md, "group commit"). A
writer that finishes its block while others of its process wait for theirs (its *leader* role)
does not commit at once: it opens a ``Group`` on its connection, lets the writers that were
waiting run their blocks in it one at a time, each inside a SAVEPOINT (a block that raises rolls
back its own changes only), then commits once for all. No writer returns before the COMMIT that
holds its changes; if that COMMIT fails, every one of them raises. A writer that finds nobody
waiting commits at once, as before: a lone write waits for no one.

A leader's ``with storage.write()`` returns only after its members' blocks ran: so a lock held
around a write must never be taken inside a write block (no code of ours does either).
"""
from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Group:
    """One open write transaction that waiting writers of this process may join (``conn``: the
    leader's connection, used by one writer at a time under the store's writer lock)."""

    conn: sqlite3.Connection
    changed: bool = False  # whether any member wrote a STAMPED_KINDS document
    joined: int = 0  # members whose blocks ran (or failed) in it
    active: int = 0  # members running their block now
    done: threading.Event = field(default_factory=threading.Event)
    error: Optional[BaseException] = None  # the COMMIT's failure, raised again by every member


class Groups:
    """Who waits for the writer lock, and the group open for them to join (``cond`` guards both)."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.queued = 0  # writers waiting for the store's writer lock
        self.current: Optional[Group] = None

    def queue(self) -> None:
        with self.cond:
            self.queued += 1

    def unqueue(self) -> None:
        with self.cond:
            self.queued -= 1
            self.cond.notify_all()

    def waiting(self) -> int:
        with self.cond:
            return self.queued

    def join(self) -> Optional[Group]:
        """The open group, now counting this writer as running in it; None: lead one."""
        with self.cond:
            group = self.current
            if group is not None:
                group.active += 1
            return group

    def left(self, group: Group, changed: bool) -> None:
        with self.cond:
            group.active -= 1
            group.joined += 1
            group.changed = group.changed or changed
            self.cond.notify_all()

    def open(self, group: Group) -> None:
        with self.cond:
            self.current = group

    def close(self, group: Group, expected: int, timeout_s: float) -> None:
        """Wait until ``expected`` writers joined (or none waits any more), then close the group to
        newcomers and wait for the blocks still running in it."""
        with self.cond:
            self.cond.wait_for(lambda: group.joined >= expected or (self.queued == 0 and group.active == 0),
                               timeout_s)
            self.current = None
            self.cond.wait_for(lambda: group.active == 0)
