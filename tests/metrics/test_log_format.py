"""server.log_format (CONTRACT section 10): the real `xpresso-env serve` writes one JSON object per
line with json, access lines with their fields and request id (the text format through `serve`:
tests/server/test_serve.py). And /metrics through that real server, scraped over HTTP."""
from __future__ import annotations

import io
import json
import logging

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from xpresso_env.config import load_settings
from xpresso_env.core.errors import ConfigError
from xpresso_env.runtime.logfmt import FIELDS, JsonFormatter, configure_logging
from xpresso_env.testing.server import cli, serve, write_config

ACCESS_KEYS = {"ts", "level", "logger", "msg", "method", "path", "status", "ms", "user", "group", "request_id"}


def _config(tmp_path, log_format: str):
    config = write_config(tmp_path, {"storage": {"backend": "sqlite", "path": "db.sqlite3"},
                                     "auth": {"secret_file": "secret"},
                                     "server": {"log_format": log_format},
                                     "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"}})
    cli(config, "init")
    cli(config, "group", "add", "myGroup")
    cli(config, "user", "add", "alice", "--group", "myGroup:privilege_member")
    token = cli(config, "token", "create", "alice").stdout.strip().splitlines()[-1]
    return config, {"Authorization": token, "Group": "myGroup"}


@pytest.mark.slow
def test_serve_with_json_logs_writes_one_object_per_line(tmp_path):
    config, headers = _config(tmp_path, "json")
    with serve(config) as server:
        r = requests.post(f"{server.url}/api/v2/harnesses", json={"name": "h", "path": "/p"},
                          headers={**headers, "X-Request-Id": "create-1"}, timeout=10)
        assert r.status_code == 201 and r.headers["X-Request-Id"] == "create-1"
        for rid in ("list-1", "list-2"):  # the second from the response cache's frontend
            r = requests.get(f"{server.url}/api/v2/harnesses", headers={**headers, "X-Request-Id": rid}, timeout=10)
            assert r.status_code == 200 and r.headers["X-Request-Id"] == rid
        r = requests.get(f"{server.url}/api/v2/harnesses", timeout=10,
                         headers={**headers, "Group": "nope", "X-Request-Id": "refused-1"})
        assert r.status_code == 403
        r = requests.get(f"{server.url}/no/where%0Aforged", headers={"X-Request-Id": "bad id"}, timeout=10)
        new_id = r.headers["X-Request-Id"]
        assert r.status_code == 404 and len(new_id) == 32
        scrape = requests.get(f"{server.url}/metrics", timeout=10)
        assert scrape.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in families["xpresso_http_requests"].samples}
        assert samples[("xpresso_http_requests_total",
                        (("method", "GET"), ("route", "/api/v2/harnesses"), ("status", "200")))] == 2
        assert samples[("xpresso_http_requests_total",
                        (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    lines = [line for line in server.log().splitlines() if line.strip()]
    objects = [json.loads(line) for line in lines]  # every line, the server's own messages included
    assert all({"ts", "level", "logger", "msg"} <= set(o) for o in objects)
    assert any(o["logger"] == "xpresso_env.cli" and "serving on" in o["msg"] for o in objects)
    access = {o["request_id"]: o for o in objects if o["logger"] == "xpresso_env.access"}
    assert set(access) >= {"create-1", "list-1", "list-2", new_id}
    for o in access.values():
        assert set(o) == ACCESS_KEYS, o
        assert o["level"] == "INFO" and isinstance(o["ms"], float) and o["ts"].endswith("Z")
    assert access["create-1"] | {"ts": 0, "ms": 0, "msg": ""} == {
        "ts": 0, "ms": 0, "msg": "", "level": "INFO", "logger": "xpresso_env.access", "method": "POST",
        "path": "/api/v2/harnesses", "status": 201, "user": "alice", "group": "myGroup", "request_id": "create-1"}
    assert access["list-2"]["status"] == 200 and access["list-2"]["user"] == "alice"
    assert access[new_id]["path"] == "/no/where\nforged" and access[new_id]["user"] == "-"  # JSON escapes it
    # The refusal's reason line carries the request id of its access line (issue 19).
    [reason] = [o for o in objects if o["logger"] == "xpresso_env.api" and o["msg"].startswith("403 ")]
    assert reason["request_id"] == "refused-1" and "group 'nope' does not exist" in reason["msg"]
    assert access["refused-1"]["status"] == 403


def test_json_formatter_fields_exceptions_and_hostile_text():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("xpresso_env.test_logfmt")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.warning("line one\nline two \u2028 %s", "caf\u00e9", extra={FIELDS: {"user": "bob", "msg": "ignored"}})
        try:
            raise KeyError("boom")
        except KeyError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["msg"] == "line one\nline two \u2028 caf\u00e9" and first["user"] == "bob"
    assert first["level"] == "WARNING" and first["logger"] == "xpresso_env.test_logfmt"
    assert second["msg"] == "failed" and "KeyError: 'boom'" in second["exc"]
    assert stream.getvalue().isascii() and stream.getvalue().count("\n") == 2


def test_configure_logging_switches_only_its_own_handler():
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []
    stream = io.StringIO()
    try:
        configure_logging("INFO", stream=stream)
        configure_logging("INFO", "json")  # the CLI: again once the settings are read
        assert len(root.handlers) == 1
        logging.getLogger("xpresso_env.test").info("hello")
        assert json.loads(stream.getvalue())["msg"] == "hello"
        other = logging.StreamHandler(io.StringIO())
        root.handlers = [other]  # someone else's logging (a test runner, an embedding app)
        configure_logging("DEBUG", "json")
        assert root.handlers == [other] and other.formatter is None
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def test_log_format_must_be_text_or_json(tmp_path):
    with pytest.raises(ConfigError, match="server.log_format: must be text or json"):
        load_settings(None, env={"XPRESSO_ENV_SERVER_LOG_FORMAT": "xml"})
    assert load_settings(None, env={"XPRESSO_ENV_SERVER_LOG_FORMAT": "json"}).server.log_format == "json"
