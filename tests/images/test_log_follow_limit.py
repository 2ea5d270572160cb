"""Followed logs hold a server thread each: at most half the threads may follow at once."""
from __future__ import annotations

import threading

import pytest

from xpresso_env.core.errors import TooManyRequests
from xpresso_env.http.resources.images import limited


def test_followers_beyond_the_slots_get_429_and_slots_come_back():
    slots = threading.BoundedSemaphore(2)
    first = limited(iter([b"a", b"b"]), slots)
    second = limited(iter([b"c"]), slots)
    with pytest.raises(TooManyRequests):
        limited(iter([b"d"]), slots)
    assert b"".join(first) == b"ab"  # a finished stream gives its slot back
    third = limited(iter([b"e"]), slots)
    second.close()  # a client that went away (waitress closes the iterator) gives it back too
    fourth = limited(iter([b"f"]), slots)
    assert b"".join(third) + b"".join(fourth) == b"ef"


def test_the_api_answers_429_with_a_detail(make_world):
    from xpresso_env.http.errors import body_for, status_for

    err = TooManyRequests("Too many logs are being followed at once")
    assert status_for(err) == "429 Too Many Requests" and body_for(err) == {"detail": err.detail}
