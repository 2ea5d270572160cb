"""The ``jenkins-http`` prober: is an engine of ``type: jenkins`` a Jenkins that answers?

``GET <base_url>/api/json`` with HTTP basic auth ``username:api_token`` when both are stored.
ONLINE: a 200 JSON answer carrying an ``X-Jenkins`` header whose version is at least 2.80.
Everything else is a failure whose detail says what happened, in the contract's words.

Bounded in every way a hostile or broken server could stretch it:

* time: ONE deadline (``timeout_s``) covers connecting, TLS, sending, the status line, the
  headers and the body, across redirects. Every socket read is given only the time left, so a
  server that drips a byte a second, or never finishes its body, still ends at the deadline.
* bytes: the body is read in chunks up to ``probes.max_body_bytes``; a larger answer (or a
  ``Content-Length`` announcing one) is a failure, never an allocation. Header lines and counts
  are bounded by ``http.client``.
* redirects: at most :data:`MAX_REDIRECTS`, http(s) only; credentials are sent only to the
  scheme, host and port of ``base_url`` (a redirect elsewhere does not get them).
"""
from __future__ import annotations

import base64
import functools
import http.client
import io
import json
import socket
import ssl
import time
from typing import Any, Mapping, Optional
from urllib.parse import urljoin, urlsplit

from xpresso_env.hookspecs import hookimpl
from xpresso_env.probes.protocol import ProbeResult, ProberInfo, ProbeTarget, parse_version

MIN_VERSION = (2, 80)
MAX_REDIRECTS = 5
CHUNK = 64 * 1024
REDIRECTS = {301, 302, 303, 307, 308}


class _Deadline(TimeoutError):
    """The probe's own deadline passed (as opposed to one socket wait)."""


class _TooLarge(Exception):
    pass


class _DeadlineRaw(io.RawIOBase):
    """The response stream: each read waits at most until the deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _Deadline()
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """What http.client sees as its socket: sends and the response file obey the deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineRaw(self._sock, self._deadline))

    def sendall(self, data: bytes) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _Deadline()
        self._sock.settimeout(remaining)
        self._sock.sendall(data)

    def close(self) -> None:
        # http.client closes its socket as soon as an HTTP/1.0 answer's headers are read, while
        # the body is still to be read from the response file; the real socket is closed by
        # the connection's ``shut()`` once the probe is done with it.
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Deadline()
    return remaining


class _Bounded:
    """Mixed into the connections: the socket http.client uses obeys the deadline."""

    _deadline: float
    _raw: Optional[socket.socket] = None

    def _wrap(self) -> None:
        self._raw = self.sock  # type: ignore[attr-defined]
        self.sock = _DeadlineSocket(self._raw, self._deadline)  # type: ignore[arg-type]

    def shut(self) -> None:
        self.close()  # type: ignore[attr-defined]
        if self._raw is not None:
            self._raw.close()
            self._raw = None


class _HTTP(_Bounded, http.client.HTTPConnection):
    def __init__(self, host: str, port: Optional[int], deadline: float):
        super().__init__(host, port, timeout=_remaining(deadline))
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._wrap()


class _HTTPS(_Bounded, http.client.HTTPSConnection):
    def __init__(self, host: str, port: Optional[int], deadline: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=_remaining(deadline), context=context)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()  # TCP, then the TLS handshake, both within the time left
        self._wrap()


def _read_bounded(resp: http.client.HTTPResponse, limit: int) -> bytes:
    length = resp.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise _TooLarge()
    out = bytearray()
    while True:
        chunk = resp.read(min(CHUNK, limit + 1 - len(out)))
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > limit:
            raise _TooLarge()


def _fail(detail: str) -> ProbeResult:
    return ProbeResult(ok=False, detail=detail)


def _origin(url: str) -> tuple[str, str, Optional[int]]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


class JenkinsProber:
    name = "jenkins-http"

    def __init__(self, max_body_bytes: int = 1048576, ssl_context: Optional[ssl.SSLContext] = None):
        self.max_body_bytes = max_body_bytes
        self._given_ssl = ssl_context

    @functools.cached_property
    def _ssl(self) -> ssl.SSLContext:
        # Made at the first HTTPS probe, not with the app: loading the CA certificates is slow,
        # and most apps (each test builds its own) never probe over HTTPS.
        return self._given_ssl or ssl.create_default_context()

    def probe(self, target: ProbeTarget) -> ProbeResult:
        record = target.record
        timeout = target.timeout_s
        base = str(record.get("base_url") or "")
        if not base:
            return _fail("no base_url")
        url = base.rstrip("/") + "/api/json"
        headers = {"Accept": "application/json", "User-Agent": "xpresso-env-probe"}
        username, token = record.get("username"), record.get("api_token")
        auth = None
        if username and token:
            auth = "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode("ascii")
        deadline = time.monotonic() + timeout
        try:
            return self._follow(url, headers, auth, _origin(url), deadline)
        except (_Deadline, TimeoutError):
            return _fail(f"timed out after {timeout:g} s")
        except _TooLarge:
            return _fail(f"answer larger than {self.max_body_bytes} bytes")
        except ConnectionRefusedError:
            return _fail("connection refused")
        except ConnectionResetError:
            return _fail("connection reset by the server")
        except socket.gaierror:
            return _fail(f"cannot resolve host {urlsplit(url).hostname!r}")
        except ssl.SSLCertVerificationError as exc:
            return _fail(f"TLS certificate refused: {exc.verify_message}")
        except ssl.SSLError as exc:
            return _fail(f"TLS error: {exc.reason or exc}")
        except http.client.RemoteDisconnected:
            return _fail("connection closed without an answer")
        except http.client.IncompleteRead:
            return _fail("the answer ended before its announced length")
        except http.client.HTTPException as exc:
            return _fail(f"bad HTTP answer ({type(exc).__name__})")
        except OSError as exc:
            return _fail(f"network error: {exc.strerror or exc}")

    def _follow(self, url: str, headers: Mapping[str, str], auth: Optional[str],
                origin: tuple[str, str, Optional[int]], deadline: float) -> ProbeResult:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https") or not parts.hostname:
                return _fail(f"redirected to a non-HTTP address {url[:200]!r}")
            if scheme == "https":
                conn: _HTTP | _HTTPS = _HTTPS(parts.hostname, parts.port, deadline, self._ssl)
            else:
                conn = _HTTP(parts.hostname, parts.port, deadline)
            sent = dict(headers)
            if auth is not None and _origin(url) == origin:
                sent["Authorization"] = auth  # never to another origin a redirect points at
            try:
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                conn.request("GET", path, headers=sent)
                resp = conn.getresponse()
                if resp.status in REDIRECTS:
                    location = resp.getheader("Location")
                    if not location:
                        return _fail(f"HTTP {resp.status} without a Location")
                    url = urljoin(url, location.strip())
                    continue
                return self._judge(resp)
            finally:
                conn.shut()
        return _fail(f"too many redirects (more than {MAX_REDIRECTS})")

    def _judge(self, resp: http.client.HTTPResponse) -> ProbeResult:
        if resp.status == 401:
            return _fail("HTTP 401: credentials refused")
        if resp.status == 403:
            return _fail("HTTP 403: the user may not read this Jenkins")
        if resp.status != 200:
            return _fail(f"HTTP {resp.status}: {(resp.reason or '').strip()[:100]}".rstrip(": "))
        header = resp.getheader("X-Jenkins")
        if header is None:
            return _fail("not a Jenkins server (no X-Jenkins header)")
        shown = header.strip()[:40]
        version = parse_version(header)
        if version is None:
            return _fail(f"unreadable Jenkins version {shown!r}")
        if version < MIN_VERSION:
            return _fail(f"Jenkins {shown} is older than 2.80")
        body = _read_bounded(resp, self.max_body_bytes)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _fail("not a JSON answer")
        if not isinstance(data, dict):
            return _fail("not a JSON object")
        return ProbeResult(ok=True, detail=f"Jenkins {shown}", version=shown)


@hookimpl
def xpresso_probers():
    return [ProberInfo(name="jenkins-http", kind="engine", types=("jenkins",),
                       description="GET <base_url>/api/json: ONLINE for Jenkins >= 2.80",
                       factory=lambda settings: JenkinsProber(settings.probes.max_body_bytes))]
