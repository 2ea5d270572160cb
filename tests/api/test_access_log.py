"""The access log: one line per request, cache hits included, written off the request thread,
and never forged by what a client puts in a path."""
from __future__ import annotations

import logging
import threading
import time

from falcon.testing import TestClient

from tests.conftest import World, make_settings, seed
from xpresso_env.api.access_log import AccessLog, escape
from xpresso_env.app import build_context, create_wsgi_app


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.threads: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.threads.add(threading.current_thread().name)


def logged_world(tmp_path) -> tuple[World, Lines]:
    settings = make_settings(tmp_path, extra={"server": {"access_log": True}})
    ctx = build_context(settings, check_schema=False, images=False)
    ctx.storage.init()
    handler = Lines()
    logger = logging.getLogger("xpresso_env.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return World(ctx=ctx, client=TestClient(create_wsgi_app(ctx)), tokens=seed(ctx)), handler


def wait_for(handler: Lines, n: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(handler.lines) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_every_request_is_logged_once_cache_hits_included_by_the_writer_thread(tmp_path):
    w, handler = logged_world(tmp_path)
    try:
        w.ctx.start()
        w.post("/api/v2/harnesses", {"name": "h", "path": "/p"}, user="priv")
        w.get("/api/v2/harnesses", user="mem")
        w.get("/api/v2/harnesses", user="mem")  # answered by the cache's frontend
        w.get("/api/v2/harnesses", user="mem", group="g3")  # 403
        w.client.simulate_get("/api/v2/openapi.json")
        wait_for(handler, 5)
        assert len(handler.lines) == 5, handler.lines
        assert handler.lines[0].startswith("POST /api/v2/harnesses 201 ") and "user=priv group=g1" in handler.lines[0]
        assert handler.lines[1].startswith("GET /api/v2/harnesses 200 ") and " user=mem group=g1 " in handler.lines[1]
        assert handler.lines[2].split("ms ")[1].startswith("user=mem group=g1 request_id=")
        assert handler.lines[3].startswith("GET /api/v2/harnesses 403 ") and " user=- group=- " in handler.lines[3]
        ids = [line.rsplit(" request_id=", 1)[1] for line in handler.lines]
        assert len(set(ids)) == 5 and all(len(i) == 32 for i in ids)  # a new id each (none was sent)
        assert handler.lines[4].startswith("GET /api/v2/openapi.json 200 ")
        assert handler.threads == {"xpresso-access-log"}  # never a request thread
    finally:
        w.ctx.close()
        logging.getLogger("xpresso_env.access").removeHandler(handler)


def test_a_newline_in_a_path_cannot_forge_a_line(tmp_path):
    w, handler = logged_world(tmp_path)
    try:
        forged = "/api/v2/harnesses\n127.0.0.1 GET /admin 200 0.1ms user=admin group=g1"
        w.client.simulate_get(forged, headers=w.headers("mem"))
        w.ctx.access_log.flush()
        assert len(handler.lines) == 1
        assert "\n" not in handler.lines[0] and "\\x0a127.0.0.1 GET /admin" in handler.lines[0]
    finally:
        w.ctx.close()
        logging.getLogger("xpresso_env.access").removeHandler(handler)


def test_escape_keeps_text_and_escapes_controls_and_backslashes():
    assert escape("/api/v2/harnesses/ä") == "/api/v2/harnesses/ä"
    assert escape("a\r\nb\x1b[31m\x7f\x85") == "a\\x0d\\x0ab\\x1b[31m\\x7f\\x85"
    assert escape("\\x0a") == "\\\\x0a"  # a literal backslash cannot pass for an escape


def test_stop_writes_what_is_queued():
    logger = logging.getLogger("xpresso_env.test_access_stop")
    handler = Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    log = AccessLog(logger, interval_s=60)
    log.start()
    for i in range(100):
        log.record("GET", f"/p/{i}", "200", 1.0, "u", "g")
    log.stop()
    assert len(handler.lines) == 100 and handler.lines[-1].startswith("GET /p/99 200 1.0ms")
