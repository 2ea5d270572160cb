"""A Jenkins STAND-IN on loopback: Jenkins itself cannot be installed on this machine.

A real ``http.server`` in a thread, answering ``GET <base>/api/json`` the way Jenkins 2.4xx does
(reference/machine-facts.md): an ``X-Jenkins: <version>`` header on every answer (401s
included), a JSON body whose ``_class`` is ``hudson.model.Hudson``, and 401 without the right
HTTP basic credentials when it has a user. The first path segment picks a behaviour, so one
server plays every kind of engine a test needs:

* ``/jenkins/...``: a good Jenkins (version ``self.version``)
* ``/old/...``: Jenkins 2.60;  ``/plain/...``: a web server without ``X-Jenkins``
* ``/loop/...``: redirects to itself forever
* ``/huge/...``: a 2 GB body with its Content-Length; ``/huge-nolength/...``: the same without
  a length (ends when the connection closes). Both are generated lazily, a chunk at a time.
* ``/stall/...``: announces 1000 bytes, sends 10, then never sends more (until the server stops)

Every request's path is counted (``hits``), so a test can tell how often each record was probed.
"""
from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

TWO_GB = 2 * 1024 ** 3
CHUNK = b"x" * 65536

BODY = {"_class": "hudson.model.Hudson", "mode": "NORMAL", "nodeName": "", "numExecutors": 2,
        "quietingDown": False, "useSecurity": True, "jobs": []}


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog: http.server's 5 drops SYNs under 16 probes at once


class JenkinsStandIn:
    def __init__(self, version: str = "2.452.3", user: Optional[str] = None, token: Optional[str] = None):
        self.version = version
        self.user = user
        self.token = token
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="jenkins-standin", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "JenkinsStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                with standin.lock:
                    standin.hits[self.path] += 1
                mode = self.path.strip("/").split("/")[0]
                getattr(self, "_" + mode.replace("-", "_"), self._jenkins)()

            def _send(self, status: int, body: bytes, jenkins: Optional[str], **headers: str) -> None:
                self.send_response(status)
                if jenkins is not None:
                    self.send_header("X-Jenkins", jenkins)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                if standin.user is None:
                    return True
                expected = base64.b64encode(f"{standin.user}:{standin.token}".encode()).decode()
                return self.headers.get("Authorization") == f"Basic {expected}"

            def _jenkins(self, version: Optional[str] = None) -> None:
                version = version or standin.version
                if not self._authorized():
                    self._send(401, b"<html>Unauthorized</html>", version, WWW_Authenticate='Basic realm="Jenkins"')
                    return
                self._send(200, json.dumps(BODY).encode(), version)

            def _old(self) -> None:
                self._jenkins("2.60")

            def _plain(self) -> None:
                self._send(200, b"{}", None)

            def _loop(self) -> None:
                self.send_response(302)
                self.send_header("Location", self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _stream(self, length: Optional[int]) -> None:
                self.send_response(200)
                self.send_header("X-Jenkins", standin.version)
                self.send_header("Content-Type", "application/json")
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                sent = 0
                try:
                    while sent < TWO_GB and not standin.stopping.is_set():
                        self.wfile.write(CHUNK)
                        sent += len(CHUNK)
                except OSError:
                    pass  # the prober hung up: the point

            def _huge(self) -> None:
                self._stream(TWO_GB)

            def _huge_nolength(self) -> None:
                self._stream(None)

            def _stall(self) -> None:
                self.send_response(200)
                self.send_header("X-Jenkins", standin.version)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b'{"_class": ')
                self.wfile.flush()
                standin.stopping.wait(60)

        return Handler
