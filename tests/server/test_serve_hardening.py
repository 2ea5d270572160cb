"""`xpresso-env serve` as an operator meets it: a port in use, many idle or half-sent
connections, and a database that is not up yet."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import requests

from xpresso_env.testing import require
from xpresso_env.testing.server import cli, free_port, serve, write_config

pytestmark = pytest.mark.slow  # real serve processes


def _config(tmp_path, **server):
    return write_config(tmp_path, {"storage": {"backend": "sqlite", "path": "db.sqlite3"},
                                   "auth": {"secret_file": "secret"}, "server": server,
                                   "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"}})


def _serve_fails(config, *args: str) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "xpresso_env", "--config", str(config), "serve", *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    return p


def test_a_port_in_use_or_an_address_not_ours_is_one_line_before_serving(tmp_path):
    config = _config(tmp_path)
    cli(config, "init")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = _serve_fails(config, "--port", str(port))
    assert p.stderr.strip() == (f"xpresso-env: error: cannot listen on 127.0.0.1:{port}: the address is already "
                                f"in use; choose another port with --port (or address with --host)"), p.stderr
    # 192.0.2.1 (TEST-NET-1) is no address of this machine
    p = _serve_fails(config, "--host", "192.0.2.1", "--port", str(free_port()))
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpresso-env: error: cannot listen on 192.0.2.1:"), p.stderr
    assert "--port" in lines[0] and "unexpected" not in lines[0] and "serving" not in p.stderr


def _half_request(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /api/v2/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
    return s


def test_hundreds_of_half_sent_requests_do_not_lock_others_out(tmp_path):
    config = _config(tmp_path)  # the default connection_limit and timeouts
    cli(config, "init")
    with serve(config) as server:
        held = [_half_request(server.port) for _ in range(300)]
        try:
            started = time.monotonic()
            r = requests.get(f"{server.url}/api/v2/health", timeout=10)
            assert r.status_code == 200 and time.monotonic() - started < 5
        finally:
            for s in held:
                s.close()


def test_idle_and_half_sent_connections_are_closed_after_channel_timeout(tmp_path):
    config = _config(tmp_path, channel_timeout_s=1.0, cleanup_interval_s=1.0)
    cli(config, "init")
    with serve(config) as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        half = _half_request(server.port)
        started = time.monotonic()
        assert idle.recv(1) == b"" and half.recv(1) == b""  # the server closed them
        assert time.monotonic() - started < 8
        idle.close()
        half.close()
        assert requests.get(f"{server.url}/api/v2/health", timeout=10).status_code == 200


def _allow_connections(db: str, allow: bool) -> None:
    import psycopg
    from psycopg import sql

    from xpresso_env.testing.postgres import admin_dsn

    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(sql.Identifier(db), sql.Literal(allow)))


def test_serve_waits_for_a_database_that_is_not_up_yet(tmp_path):
    from psycopg.conninfo import conninfo_to_dict

    from xpresso_env.testing.postgres import postgres_available, temp_database

    require(postgres_available(), "PostgreSQL is not reachable (set XPRESSO_TEST_PG_ADMIN_DSN)")
    with temp_database() as dsn:
        db = conninfo_to_dict(dsn)["dbname"]
        config = write_config(tmp_path, {"storage": {"backend": "postgres", "dsn": dsn, "busy_timeout_s": 1.0},
                                         "auth": {"secret_file": "secret"},
                                         "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"}})
        cli(config, "init")
        _allow_connections(db, False)
        try:
            # serve() returns once the port accepts: it is bound before the storage is waited for
            with serve(config) as server:
                deadline = time.monotonic() + 20
                while "not reachable" not in server.log() and time.monotonic() < deadline:
                    time.sleep(0.2)
                log = server.log()
                assert f"storage postgres at {dsn} not reachable (" in log and "retrying in 2 s" in log, log
                assert "serving on" not in log and server.proc.poll() is None
                # meanwhile it answers, never silence: 503 where storage is needed (CONTRACT §16)
                r = requests.get(f"{server.url}/api/v2/health", timeout=5)
                assert r.status_code == 503 and "detail" in r.json(), r.text
                assert requests.get(f"{server.url}/api/v2/openapi.json", timeout=5).status_code == 200
                _allow_connections(db, True)
                deadline = time.monotonic() + 20
                while (r := requests.get(f"{server.url}/api/v2/health", timeout=5)).status_code != 200:
                    assert time.monotonic() < deadline, r.text
                    time.sleep(0.2)
                assert "serving on" in server.log() and "Traceback" not in server.log()
        finally:
            _allow_connections(db, True)


def test_serve_on_a_store_never_initialised_stops_at_once(tmp_path):
    from xpresso_env_plugins.storage_sqlite import SCHEMA_VERSION

    config = write_config(tmp_path, {"storage": {"backend": "sqlite", "path": "db.sqlite3"},
                                     "auth": {"secret": "k" * 40}})
    p = _serve_fails(config, "--port", str(free_port()))
    store = config.parent / "db.sqlite3"
    assert p.stderr.startswith(f"xpresso-env: error: no sqlite store at {store}; configuration {config}. "
                               "Create it with `xpresso-env init`"), p.stderr
    assert not store.exists()  # only init creates a store
    store.touch()  # an empty file: a store of no schema
    p = _serve_fails(config, "--port", str(free_port()))
    assert p.stderr.startswith(f"xpresso-env: error: storage 'sqlite' has schema version 0, this code needs "
                               f"{SCHEMA_VERSION}: run `xpresso-env init`; store {store}; "
                               f"configuration {config}."), p.stderr
