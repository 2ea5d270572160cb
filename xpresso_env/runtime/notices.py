"""Wake-ups across processes: the storage's change notices turned into this process's wakes.

A loop (``loop.py``) wakes itself for work made in its own process; work committed by another
process it finds at its next poll. On a storage with change notices (``ChangeNotices`` in
``xpresso_env/storage/__init__.py``: PostgreSQL's LISTEN/NOTIFY), :class:`Wakeups` runs one
listening thread per process and hands each notice to the handler of its topic (a loop's
``wake``, a log follower's :class:`KeyedWaits`), so the process that waits for a submitted build,
an edited probe target, a new outbox entry or a new log chunk is woken at once. When the
listener (re)connects it may have missed notices: every handler is called with the key "" and
looks once. Without notices (SQLite, YAML) nothing here runs and the polls are all there is.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Mapping, Optional

from ..core.errors import XpressoError
from ..storage import NoticeListener
from .loop import Loop

log = logging.getLogger("xpresso_env.notices")

WAIT_S = 5.0  # a listening round's wait: its end only re-checks the connection (interrupt ends it at once)

Handler = Callable[[str], None]  # called with the notice's key ("": anything may have changed)


class Wakeups:
    """One listening thread (:attr:`loop`, named ``xpresso-notices``) dispatching notices by topic.

    :param listen: opens the storage's listener (``ChangeNotices.notice_listener``), when the loop
        starts; it is closed when the loop stops.
    :param handlers: what each topic wakes; topics without a handler are ignored.
    """

    def __init__(self, listen: Callable[[], NoticeListener], handlers: Mapping[str, Handler]):
        self._listen = listen
        self._handlers = dict(handlers)
        self._listener: Optional[NoticeListener] = None
        self.loop = Loop("xpresso-notices", self._round, WAIT_S, logger=log, on_start=self._open,
                         interrupt=self._interrupt, on_stop=self._close)

    def _open(self) -> None:
        self._listener = self._listen()

    def _interrupt(self) -> None:
        if self._listener is not None:
            self._listener.interrupt()

    def _close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _round(self) -> Optional[float]:
        listener = self._listener
        if listener is None or self.loop.stopping:
            return None
        notices = listener.wait(WAIT_S)
        if self.loop.stopping:
            return None
        if notices is None:
            for handler in self._handlers.values():
                self._call(handler, "")
        else:
            for notice in dict.fromkeys(notices):  # once each, in order
                handler = self._handlers.get(notice.topic)
                if handler is not None:
                    self._call(handler, notice.key)
        return 0.0  # listen again at once

    @staticmethod
    def _call(handler: Handler, key: str) -> None:
        try:
            handler(key)
        except XpressoError as exc:  # storage unreachable for a look: the waiter's poll finds it later
            log.warning("change notice %r: %s", key, exc.detail)
        except Exception:  # one handler's bug must not stop the others' wake-ups
            log.exception("change notice handler %r failed", handler)


class KeyedWaits:
    """Threads waiting for news of one key (a build's log), each woken by :meth:`wake` of that
    key or of "" (everything)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, set[threading.Event]] = {}

    def register(self, key: str) -> threading.Event:
        """An event set by the next wake of ``key``; :meth:`unregister` it when done. Clear it
        before each look, then wait on it: a wake between the two is not lost."""
        event = threading.Event()
        with self._lock:
            self._waiting.setdefault(key, set()).add(event)
        return event

    def unregister(self, key: str, event: threading.Event) -> None:
        with self._lock:
            events = self._waiting.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[key]

    def wake(self, key: str) -> None:
        with self._lock:
            if key:
                events = list(self._waiting.get(key, ()))
            else:
                events = [e for group in self._waiting.values() for e in group]
        for event in events:
            event.set()
