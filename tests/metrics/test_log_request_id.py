"""Issue 19: with ``server.log_format: json`` every line logged while a request is handled carries
that request's id, so a 403's reason line joins its access line; lines logged outside a request
carry none. Through the whole WSGI app `serve` runs (the edge, the response cache's frontend)."""
from __future__ import annotations

import io
import json
import logging

from xpresso_env.runtime.logfmt import FIELDS, JsonFormatter


def _capture() -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    return stream, handler


def test_a_refusals_reason_line_carries_its_request_id(edge_world):
    w = edge_world
    stream, handler = _capture()
    api = logging.getLogger("xpresso_env.api")
    api.addHandler(handler)
    try:
        # A write refused by falcon's error handler, and a read refused by the cache's frontend.
        r = w.client.simulate_post("/api/v2/harnesses", json={"name": "h", "path": "/p"},
                                   headers={"Authorization": w.tokens["guest"], "Group": "g1",
                                            "X-Request-Id": "refused-write"})
        assert r.status_code == 403 and r.headers["X-Request-Id"] == "refused-write"
        r = w.client.simulate_get("/api/v2/harnesses", headers={"Authorization": w.tokens["mem"], "Group": "g2"})
        assert r.status_code == 403
        new_id = r.headers["X-Request-Id"]
        api.warning("outside any request")
    finally:
        api.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    reasons = {o["request_id"]: o["msg"] for o in lines if o["msg"].startswith("403 ")}
    assert set(reasons) == {"refused-write", new_id}, lines
    assert "missing permission 'add_harness' in group 'g1' for user 'guest'" in reasons["refused-write"]
    assert "user 'mem' is not a member of group 'g2'" in reasons[new_id]
    outside = [o for o in lines if o["msg"] == "outside any request"]
    assert len(outside) == 1 and "request_id" not in outside[0]


def test_a_records_own_request_id_field_wins():
    """The access log's lines name their request themselves (written later, on the writer's
    thread): the field a record carries is never overwritten."""
    from xpresso_env.runtime.logfmt import REQUEST_ID

    stream, handler = _capture()
    logger = logging.getLogger("xpresso_env.test_request_id")
    logger.propagate = False
    logger.addHandler(handler)
    token = REQUEST_ID.set("current")
    try:
        logger.warning("own", extra={FIELDS: {"request_id": "its-own"}})
        logger.warning("plain")
    finally:
        REQUEST_ID.reset(token)
        logger.removeHandler(handler)
    own, plain = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert own["request_id"] == "its-own" and plain["request_id"] == "current"
