"""The jenkins-http prober against a Jenkins STAND-IN on loopback (tests/probes/jenkins_standin.py:
Jenkins cannot be installed on this machine): every answer the contract names, and the hostile
ones (a redirect loop, a 2 GB body, a body that never ends), each a failure with its reason."""
from __future__ import annotations

import threading

import pytest
from xpresso_env_plugins.prober_jenkins import JenkinsProber

from xpresso_env.probes.protocol import ProbeTarget

CREDS = {"username": "jenkins-user", "api_token": "api-token-1"}


def probe(base_url: str, timeout_s: float = 2.0, **record):
    return JenkinsProber(max_body_bytes=1 << 20).probe(
        ProbeTarget(kind="engine", type="jenkins", record={"base_url": base_url, **record}, timeout_s=timeout_s))


def test_a_jenkins_with_the_right_credentials_is_online(jenkins):
    result = probe(f"{jenkins.url}/jenkins/", **CREDS)
    assert (result.ok, result.detail, result.version) == (True, "Jenkins 2.452.3", "2.452.3")
    assert jenkins.hits["/jenkins/api/json"] == 1  # GET <base_url>/api/json, one slash


@pytest.mark.parametrize("record", [{}, {"username": "jenkins-user", "api_token": "wrong"}])
def test_missing_or_wrong_credentials_are_refused(jenkins, record):
    result = probe(f"{jenkins.url}/jenkins", **record)
    assert (result.ok, result.detail) == (False, "HTTP 401: credentials refused")


def test_an_old_jenkins_is_named_with_its_version(jenkins):
    assert probe(f"{jenkins.url}/old", **CREDS).detail == "Jenkins 2.60 is older than 2.80"


def test_a_server_that_is_not_jenkins(jenkins):
    assert probe(f"{jenkins.url}/plain").detail == "not a Jenkins server (no X-Jenkins header)"


def test_connection_refused(refused_url):
    assert probe(refused_url).detail == "connection refused"


def test_a_redirect_loop_ends(jenkins):
    result = probe(f"{jenkins.url}/loop")
    assert (result.ok, result.detail) == (False, "too many redirects (more than 5)")
    assert jenkins.hits["/loop/api/json"] == 6  # the first request and five redirects, no more


@pytest.mark.parametrize("mode", ["huge", "huge-nolength"])
def test_a_2_gb_answer_is_refused_after_a_bounded_read(jenkins, mode):
    result = probe(f"{jenkins.url}/{mode}", timeout_s=30)
    assert (result.ok, result.detail) == (False, "answer larger than 1048576 bytes")


def test_a_body_that_never_ends_times_out_at_the_deadline(jenkins):
    result = probe(f"{jenkins.url}/stall", timeout_s=0.5)
    assert (result.ok, result.detail) == (False, "timed out after 0.5 s")


def test_a_server_that_never_answers_times_out():
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection (kernel backlog) and never says a word
    try:
        result = probe(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.3)
    finally:
        listener.close()
    assert result.detail == "timed out after 0.3 s"


def test_credentials_are_not_sent_to_another_origin(jenkins):
    """A redirect to another host:port gets no Authorization header."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list = []

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(302)
            self.send_header("Location", f"{jenkins.url}/jenkins/api/json")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = probe(f"http://127.0.0.1:{server.server_address[1]}", **CREDS)
    finally:
        server.shutdown()
        server.server_close()
    assert seen and seen[0] is not None  # the engine's own origin got them
    assert result.detail == "HTTP 401: credentials refused"  # the other origin did not


def test_a_server_dripping_its_headers_is_cut_off_at_the_deadline():
    """One byte every 50 ms never lets a single socket wait time out: only the probe's own
    deadline, which covers the whole exchange, ends it."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stop = threading.Event()

    def drip():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"HTTP/1.0 200 OK\r\nX-Jenkins: 2.452.3\r\nX-Padding: ")
            while not stop.wait(0.05):
                try:
                    conn.sendall(b"a")
                except OSError:
                    return

    threading.Thread(target=drip, daemon=True).start()
    try:
        result = probe(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.5)
    finally:
        stop.set()
        listener.close()
    assert result.detail == "timed out after 0.5 s"
