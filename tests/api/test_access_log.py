"""The access log: one line per request, cache hits included, written off the request thread,
and never forged by what a client puts in a path."""
from __future__ import annotations

import io
import json
import logging
import threading
import time

import pytest
from falcon.testing import TestClient

from tests.conftest import World, make_settings, seed
from xpresso_env.app import build_context, create_wsgi_app
from xpresso_env.http.access_log import AccessLog, escape
from xpresso_env.runtime.logfmt import formatter_for, owned_handler, plain_handlers


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
    log.writer.start()
    for i in range(100):
        log.record("GET", f"/p/{i}", "200", 1.0, "u", "g")
    log.writer.stop()
    assert len(handler.lines) == 100 and handler.lines[-1].startswith("GET /p/99 200 1.0ms")


ENTRIES = [("GET", "/api/v2/harnesses", "200", 1.25, "alice", "g1", "rid-1"),
           ("POST", "/p\n127.0.0.1 GET /admin", "201", 12.0, "bob", "g\\2", "rid-2"),
           ("GET", "/ä/\x85", "404", 0.04, "-", "-", "rid-3")]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_batched_lines_of_serve_are_those_logging_would_write(log_format):
    """With only serve's own handler on the way, lines are formatted in a batch from plain values
    (logfmt.plain_handlers); they must be exactly what the record-by-record path writes."""
    lines = {}
    for way in ("batched", "records"):
        logger = logging.getLogger(f"xpresso_env.test_access_{log_format}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        stream = io.StringIO()
        handler = owned_handler(stream, log_format)
        if way == "records":  # the same handler and formatter, but not the one serve added
            handler = logging.StreamHandler(stream)
            handler.setFormatter(formatter_for(log_format))
        logger.addHandler(handler)
        assert (plain_handlers(logger, logging.INFO) is None) == (way == "records")
        clock = iter([1_700_000_000.0123, 1_700_000_000.9996, 1_700_000_001.5])
        log = AccessLog(logger, interval_s=60, wall_clock=lambda: next(clock))
        log.writer.start()
        for entry in ENTRIES:
            log.record(*entry)
        log.writer.stop()
        lines[way] = stream.getvalue().splitlines()
        logger.removeHandler(handler)
    assert len(lines["batched"]) == 3 and lines["batched"] == lines["records"]
    if log_format == "text":
        assert lines["batched"][1].endswith(
            "INFO xpresso_env.test_access_text: POST /p\\x0a127.0.0.1 GET /admin 201 12.0ms "
            "user=bob group=g\\\\2 request_id=rid-2")
        assert ",012 INFO" in lines["batched"][0] and ",999 INFO" in lines["batched"][1]
    else:
        first = json.loads(lines["batched"][0])
        assert first["ts"].endswith(".012300Z") and first["path"] == "/api/v2/harnesses" and first["ms"] == 1.2
        assert json.loads(lines["batched"][1])["path"] == ENTRIES[1][1]  # the JSON escapes by itself


def test_a_handler_serve_did_not_add_gets_records():
    logger = logging.getLogger("xpresso_env.test_access_foreign")
    handler = Lines()
    logger.addHandler(handler)
    try:
        assert plain_handlers(logger, logging.INFO) is None
        filtered = logging.getLogger("xpresso_env.test_access_filtered")
        filtered.propagate = False
        filtered.addHandler(owned_handler(io.StringIO(), "text"))
        filtered.addFilter(lambda record: False)
        assert plain_handlers(filtered, logging.INFO) is None
    finally:
        logger.removeHandler(handler)
