"""Where deliveries may go (CONTRACT section 9, issue 8 "Bad input"): http(s) only, redirects never
followed, and with ``events.allow_private: false`` no loopback, link-local or private address in
any spelling: IPv6, IPv4-mapped and the other IPv6 forms that carry an IPv4 address. Real HTTP
servers on loopback; a resolver stand-in only where a test needs a name to resolve to an address
that cannot be served here (public or private addresses other than loopback)."""
from __future__ import annotations

import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from xpresso_env.core.metrics import NullMetrics
from xpresso_env.journal.delivery import DeliveryService
from xpresso_env.journal.journal import WEBHOOK_KIND
from xpresso_env.journal.webhooks import refused_address
from xpresso_env.runtime.lease import worker_id

from .receiver import Receiver

SECRET = "a-secret-of-24-characters"
HARNESS = {"name": "h1", "path": "/opt/pyats"}


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fd00::1", "fc00::1", "fec0::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "::127.0.0.1", "::10.0.0.1",  # IPv4-compatible (deprecated)
    "::ffff:0:127.0.0.1",  # SIIT IPv4-translated
    "64:ff9b::127.0.0.1", "64:ff9b::10.0.0.1", "64:ff9b:1::a00:1",  # NAT64: the gateway's own network
    "2002:7f00:1::1", "2002:a00:1::1",  # 6to4 carrying 127.0.0.1 / 10.0.0.1
])
def test_private_addresses_are_refused_in_every_spelling(address):
    assert refused_address(address) is True


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2606:4700::1111",
    "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1",  # public IPv4 inside IPv6 (DNS64 networks)
])
def test_public_addresses_are_allowed(address):
    assert refused_address(address) is False


def _strict(settings):
    return dataclasses.replace(settings, events=dataclasses.replace(settings.events, allow_private=False))


@pytest.mark.parametrize("url", [
    "http://[::ffff:127.0.0.1]:8080/hook", "http://[::ffff:7f00:1]/", "http://[fe80::1]/", "http://[fd12:3456::1]/",
    "https://[fec0::1]/", "http://[::127.0.0.1]/", "http://[64:ff9b::a9fe:a9fe]/latest",
    "http://[2002:a00:1::1]/", "HTTP://127.0.0.1/", "http://127.1/", "http://2130706433/", "http://0x7f000001/",
])
def test_allow_private_false_refuses_ipv6_and_odd_spellings_at_create(make_world, settings, url):
    world = make_world(settings_override=_strict(settings))
    res = world.post("/api/v2/webhooks", {"url": url, "events": ["*"], "secret": SECRET}, user="ga")
    assert res.status_code == 400, (url, res.text)
    assert list(res.json) == ["url"] and "allow_private" in res.json["url"][0]
    with world.ctx.storage.read() as tx:
        assert tx.query(WEBHOOK_KIND) == []


@pytest.mark.parametrize("url", [
    "http://127.0.0.1.:18901/hook", "http://localhost.:18901/", "http://LOCALHOST./", "http://127.0.0.1../x",
    "http://[::1]./", "http://app.localhost/", "http://app.localhost.:8080/",
])
def test_allow_private_false_refuses_trailing_dots_and_localhost_names_at_create(make_world, settings, url):
    """A fully qualified name's trailing dot changes nothing of where it leads (CONTRACT section 16);
    ``localhost`` and its subdomains are loopback whatever a resolver says (RFC 6761)."""
    world = make_world(settings_override=_strict(settings))
    res = world.post("/api/v2/webhooks", {"url": url, "events": ["*"], "secret": SECRET}, user="ga")
    if url == "http://[::1]./":  # not a URL at all
        assert res.status_code == 400 and list(res.json) == ["url"], res.text
        return
    assert res.status_code == 400, (url, res.text)
    assert list(res.json) == ["url"] and "allow_private" in res.json["url"][0]
    with world.ctx.storage.read() as tx:
        assert tx.query(WEBHOOK_KIND) == []
    patched = world.post("/api/v2/webhooks", {"url": "http://8.8.8.8/hook", "events": ["*"], "secret": SECRET},
                         user="ga").json
    res = world.patch(f"/api/v2/webhooks/{patched['id']}", {"url": url}, user="ga")
    assert res.status_code == 400 and "allow_private" in res.json["url"][0], res.text


def test_allow_private_false_still_takes_public_addresses(make_world, settings):
    world = make_world(settings_override=_strict(settings))
    for url in ("http://8.8.8.8/hook", "https://[2001:4860:4860::8888]/hook"):
        res = world.post("/api/v2/webhooks", {"url": url, "events": ["image.finished"], "secret": SECRET},
                         user="ga")
        assert res.status_code == 201, (url, res.text)


@pytest.mark.parametrize("url", ["gopher://127.0.0.1/x", "javascript:alert(1)", "//127.0.0.1/x", "http:///x",
                                 "http://", "ws://127.0.0.1/x", "data:text/plain,hi"])
def test_only_http_and_https_urls_are_taken(world, url):
    res = world.post("/api/v2/webhooks", {"url": url, "events": ["*"], "secret": SECRET}, user="ga")
    assert res.status_code == 400 and list(res.json) == ["url"], (url, res.text)


def test_a_name_resolving_to_a_mapped_private_address_is_refused_at_delivery(world):
    """The check runs after resolution at each attempt, on every address the name resolves to; a
    refused one means no connection at all (to the public address neither)."""
    res = world.post("/api/v2/webhooks", {"url": "http://hooks.example.com/x", "events": ["*"], "secret": SECRET},
                     user="ga")
    assert res.status_code == 201
    world.post("/api/v2/harnesses", HARNESS)
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["8.8.8.8", "::ffff:10.0.0.7"]

    settings = dataclasses.replace(world.ctx.settings.events, allow_private=False, max_attempts=1)
    worker = DeliveryService(world.ctx.storage, settings, world.ctx.clock, NullMetrics(), resolver=resolver,
                             worker_id=worker_id())
    assert worker.run_once() == 1
    assert asked == [("hooks.example.com", 80)]
    (d,) = world.get(f"/api/v2/webhooks/{res.json['id']}/deliveries", user="ga").json
    assert d["status"] == "failed" and d["last_status_code"] is None
    assert d["last_error"].startswith("refused: hooks.example.com (::ffff:10.0.0.7)"), d["last_error"]


class _Redirector:
    """A loopback server that answers every POST with a redirect to ``location``."""

    def __init__(self, location: str, status: int) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.hits += 1
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/moved"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_never_followed(world, status):
    """A receiver that redirects (e.g. to an internal address) gets a failed attempt, and the
    address it points at gets nothing: the check made before connecting is the only one needed."""
    with Receiver() as target:
        redirector = _Redirector(target.url, status)
        try:
            res = world.post("/api/v2/webhooks", {"url": redirector.url, "events": ["*"], "secret": SECRET},
                             user="ga")
            world.post("/api/v2/harnesses", HARNESS)
            settings = dataclasses.replace(world.ctx.settings.events, max_attempts=1)
            assert DeliveryService(world.ctx.storage, settings, world.ctx.clock, NullMetrics(),
                                   worker_id=worker_id()).run_once() == 1
        finally:
            redirector.close()
        assert redirector.hits == 1
        assert target.received == []
    (d,) = world.get(f"/api/v2/webhooks/{res.json['id']}/deliveries", user="ga").json
    assert (d["status"], d["last_status_code"], d["last_error"]) == ("failed", status, f"HTTP {status}")


@pytest.mark.parametrize("scheme", ["ftp", "gopher", "file", "ws"])
def test_a_stored_non_http_url_is_never_connected_to(world, scheme):
    """A webhook that did not come through the API's validation (an `import`, an older store):
    the delivery refuses its URL; nothing connects to the address it names."""
    import socket

    from xpresso_env.core.timeutil import format_time
    from xpresso_env.journal.journal import Webhook, queue_doc

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        now = format_time(world.ctx.clock())
        hook = Webhook(id="6f1d7c2e-8a4b-4c3d-9e2f-1a2b3c4d5e6f", group="g1",
                       url=f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/x", events=("*",), secret=SECRET,
                       active=True, created_by="ga", date_created=now, date_modified=now)
        with world.ctx.storage.write() as tx:
            tx.insert(hook.doc())
            tx.insert(queue_doc(hook.id, now))
        world.post("/api/v2/harnesses", HARNESS)
        settings = dataclasses.replace(world.ctx.settings.events, max_attempts=1)
        assert DeliveryService(world.ctx.storage, settings, world.ctx.clock, NullMetrics(),
                                   worker_id=worker_id()).run_once() == 1
        with pytest.raises(BlockingIOError):  # a connect() would have completed into the backlog
            listener.accept()
    finally:
        listener.close()
    (d,) = world.get(f"/api/v2/webhooks/{hook.id}/deliveries", user="ga").json
    assert d["status"] == "failed" and d["last_status_code"] is None
    assert "is not an http or https URL" in d["last_error"], d["last_error"]
