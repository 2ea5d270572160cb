"""The suite's checks of the optional change notices (``ChangeNotices``)."""
from __future__ import annotations

import threading
import time

import pytest

from xpresso_env.core.codec import to_doc
from xpresso_env.storage import (
    ChangeNotices,
    Notice,
    NoticeListener,
    NotifyingTx,
    change_notices,
)

from .records import insert, make_harness
from .suite import StorageConformance

WAIT_S = 10.0  # for a notice to arrive (it comes in milliseconds; the machine may be busy)


def notifying(backend) -> ChangeNotices:
    notices = change_notices(backend)
    assert notices is not None, f"storage '{backend.name}' claims no change notices"
    return notices


def listening(backend) -> NoticeListener:
    """A listener of ``backend``, connected: its first wait says so (None)."""
    listener = notifying(backend).notice_listener()
    assert listener.wait(WAIT_S) is None, "a new listener's first wait returns None once it listens"
    return listener


def collect(listener: NoticeListener, until: Notice) -> list[Notice]:
    """What the listener hears, up to and including ``until``."""
    heard: list[Notice] = []
    deadline = time.monotonic() + WAIT_S
    while until not in heard:
        assert time.monotonic() < deadline, f"{until} not heard within {WAIT_S} s (heard {heard})"
        heard += listener.wait(0.5) or []
    return heard


class ChangeNoticeConformance(StorageConformance):
    """The change notices, for a backend that claims them (see ``xpresso_env/storage/__init__.py``)."""

    def test_protocols_of_the_notices(self, backend):
        assert isinstance(notifying(backend), ChangeNotices)
        with backend.write() as tx:
            assert isinstance(tx, NotifyingTx)

    def test_a_commit_tells_every_listener_of_the_store_after_the_commit_only(self, backend, make_backend):
        other = make_backend()  # another backend object on the store: what another process opens
        listeners = [listening(backend), listening(other)]
        try:
            with backend.write() as tx:
                tx.notify("builds")
                tx.notify("build_log", "image-1")
                tx.notify("builds")
                tx.notify("probe_targets", "harness:it's; a key")  # quotes and colons arrive as sent
                tx.insert(to_doc(make_harness(1)))  # with the documents it is about
                assert listeners[1].wait(0.3) == [], "nothing is told before the commit"
            for listener in listeners:
                heard = collect(listener, Notice("build_log", "image-1"))
                heard += collect(listener, Notice("probe_targets", "harness:it's; a key")) \
                    if Notice("probe_targets", "harness:it's; a key") not in heard else []
                assert set(heard) == {Notice("builds", ""), Notice("build_log", "image-1"),
                                      Notice("probe_targets", "harness:it's; a key")}, heard
                assert heard.count(Notice("build_log", "image-1")) == 1
        finally:
            for listener in listeners:
                listener.close()

    def test_a_rolled_back_transaction_tells_nobody(self, backend):
        listener = listening(backend)
        try:
            with pytest.raises(RuntimeError):
                with backend.write() as tx:
                    tx.notify("builds", "rolled-back")
                    raise RuntimeError("roll back")
            insert(backend, make_harness(2))  # a commit without notices tells nobody either
            with backend.write() as tx:
                tx.notify("outbox")
            heard = collect(listener, Notice("outbox", ""))
            assert heard == [Notice("outbox", "")], heard
        finally:
            listener.close()

    def test_interrupt_ends_a_wait_at_once(self, backend):
        listener = listening(backend)
        try:
            timer = threading.Timer(0.2, listener.interrupt)
            started = time.monotonic()
            timer.start()
            assert listener.wait(30.0) == []
            assert time.monotonic() - started < 5.0
            timer.join()
        finally:
            listener.close()
