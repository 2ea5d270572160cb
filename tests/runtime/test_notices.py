"""runtime/notices.py: notices handed to the handler of their topic, "may have missed some"
handed to every handler, a failing handler not stopping the others, a stop that does not wait
for the listener's timeout; KeyedWaits waking the waiters of one key or of all. The listener here
is a stand-in (a queue of answers): the real one, PostgreSQL's, is held to the same protocol by
``ChangeNoticeConformance`` and woken for real in ``tests/workers/test_wakeups.py``."""
from __future__ import annotations

import queue
import threading
import time
from typing import Optional

from tests.waiting import wait_for
from xpresso_env.runtime.notices import KeyedWaits, Wakeups
from xpresso_env.storage import Notice


class StandInListener:
    """A NoticeListener whose answers the test queues."""

    def __init__(self) -> None:
        self.answers: queue.Queue = queue.Queue()
        self.closed = False

    def wait(self, timeout_s: float) -> Optional[list[Notice]]:
        try:
            answer = self.answers.get(timeout=timeout_s)
        except queue.Empty:
            return []
        return [] if answer == "interrupted" else answer

    def interrupt(self) -> None:
        self.answers.put("interrupted")

    def close(self) -> None:
        self.closed = True


def test_notices_go_to_their_topics_handler_and_a_reconnection_to_every_handler():
    listener = StandInListener()
    heard: list[tuple[str, str]] = []

    def failing(key: str) -> None:
        heard.append(("broken", key))
        raise RuntimeError("a handler's bug")

    wakeups = Wakeups(lambda: listener, {"builds": lambda key: heard.append(("builds", key)),
                                         "build_log": lambda key: heard.append(("build_log", key)),
                                         "broken": failing})
    wakeups.loop.start()
    try:
        listener.answers.put([Notice("builds"), Notice("nobody-listens", "x"), Notice("build_log", "img-1"),
                              Notice("builds")])
        wait_for(lambda: len(heard) >= 2, what="the notices handled")
        assert heard == [("builds", ""), ("build_log", "img-1")]  # each once, in order; unknown topics ignored
        heard.clear()
        listener.answers.put(None)  # reconnected: anything may have been missed
        wait_for(lambda: len(heard) >= 3, what="every handler told")
        assert sorted(heard) == [("broken", ""), ("build_log", ""), ("builds", "")]
        heard.clear()
        listener.answers.put([Notice("builds", "after the failure")])
        wait_for(lambda: heard, what="handled after a handler failed")
        assert heard == [("builds", "after the failure")]
    finally:
        started = time.monotonic()
        wakeups.loop.stop()
    assert time.monotonic() - started < 2.0  # interrupted, not waited out (its wait is 5 s)
    assert listener.closed and not wakeups.loop.running


def test_keyed_waits_wake_the_waiters_of_a_key_or_all_of_them():
    waits = KeyedWaits()
    a1, a2, b = waits.register("a"), waits.register("a"), waits.register("b")
    waits.wake("a")
    assert a1.is_set() and a2.is_set() and not b.is_set()
    a1.clear()
    waits.unregister("a", a2)
    a2.clear()
    waits.wake("")
    assert a1.is_set() and b.is_set() and not a2.is_set()
    waits.unregister("a", a1)
    waits.unregister("b", b)
    waits.unregister("b", b)  # twice: nothing happens
    waits.wake("")  # nobody waits


def test_a_follower_is_woken_by_a_wake_of_its_image(tmp_path):
    """BuildLogStore.follow waits on its image's event between looks: a wake (a notice, or an
    append in this process) makes it read at once, whatever its poll."""
    from tests.conftest import make_settings
    from xpresso_env.builds.log import BuildLogStore
    from xpresso_env.plugin import make_plugin_manager, pick_storage

    settings = make_settings(tmp_path, "sqlite")
    storage = pick_storage(make_plugin_manager(), "sqlite").factory(settings)
    storage.init()
    try:
        waits = KeyedWaits()
        writer = BuildLogStore(storage)  # "another process": it wakes nobody here
        reader = BuildLogStore(storage, waits=waits)
        writer.line("img", "g1", "first")
        follow = reader.follow("img", 0, lambda: True, lambda: False, poll_s=30.0, status_every_s=30.0)
        assert b"first" in next(follow)
        got: list[bytes] = []
        thread = threading.Thread(target=lambda: got.append(next(follow)), daemon=True)
        thread.start()
        time.sleep(0.3)
        writer.line("img", "g1", "second")
        assert not got  # the poll is 30 s: without a wake it would not look yet
        started = time.monotonic()
        waits.wake("img")
        thread.join(5)
        assert got and b"second" in got[0] and time.monotonic() - started < 2.0
        follow.close()
        assert not waits._waiting  # the follower unregistered when it ended
    finally:
        storage.close()
