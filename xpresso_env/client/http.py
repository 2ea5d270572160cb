"""The server's API over HTTP (requests): each call returns the decoded JSON answer, and any
refusal becomes a ClientError holding the API's own words on one line."""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Iterator, Optional
from urllib.parse import quote

import requests

from .. import __version__
from .errors import ClientError

TIMEOUT = (10.0, 60.0)  # connect, read: a server that stops answering is reported, not waited on
FOLLOW_READ_S = 60.0  # a followed log silent this long is read again from its offset
TAGGED_URLS = 8  # URLs whose last ETag and body are kept for conditional GETs


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_message(resp: requests.Response) -> str:
    """The API's `detail`, or its DRF field errors as `field: message; ...`, on one line."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        message = body["detail"]
    elif isinstance(body, dict) and body:
        parts = []
        for field, errors in body.items():
            texts = errors if isinstance(errors, list) else [errors]
            parts.append(f"{field}: {' '.join(str(t) for t in texts)}")
        message = "; ".join(parts)
    else:
        message = resp.text.strip()[:200] or resp.reason or "no detail"
    return one_line(f"{message} (HTTP {resp.status_code})")


class Api:
    def __init__(self, url: str, token: Optional[str], group: Optional[str],
                 session: Optional[requests.Session] = None):
        self.url = url
        self.token = token
        self.group = group
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"xpresso/{__version__}"
        if token:
            self.session.headers["Authorization"] = f"Jwt {token}"
        if group:
            self.session.headers["Group"] = group
        # Conditional GETs (CONTRACT section 14): the last ETag and body of a few URLs polled
        # again and again (a followed build's record and log), so an unchanged one costs a 304.
        self._tagged: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.not_modified = 0  # 304s received (tests, --debug)

    def path(self, *parts: str) -> str:
        return self.url + "/api/v2/" + "/".join(quote(p, safe="") for p in parts)

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", TIMEOUT)
        try:
            resp = self.session.request(method, url, **kw)
        except requests.ConnectionError as exc:
            raise ClientError(f"cannot connect to {self.url}: {_reason(exc)}", connection=True) from exc
        except requests.Timeout as exc:
            raise ClientError(f"{self.url} did not answer in time", connection=True) from exc
        except requests.exceptions.ChunkedEncodingError as exc:  # the answer broke off midway
            raise ClientError(f"the connection to {self.url} broke off", connection=True) from exc
        except requests.RequestException as exc:
            raise ClientError(f"request to {self.url} failed: {one_line(str(exc))}") from exc
        if resp.status_code >= 400:
            raise ClientError(error_message(resp), status=resp.status_code)
        return resp

    def call(self, method: str, *parts: str, params: Optional[dict] = None, body: Any = None) -> Any:
        resp = self.request(method, self.path(*parts), params=params,
                            **({"json": body} if body is not None else {}))
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise ClientError(f"{self.url} answered something that is not JSON (is it an xpresso-env server?)") from None

    def get(self, *parts: str, params: Optional[dict] = None) -> Any:
        return self.call("GET", *parts, params=params)

    def conditional(self, *parts: str, params: Optional[dict] = None) -> bytes:
        """A GET's body, asked with ``If-None-Match`` when this URL was read before: a 304 means
        the body is the one kept."""
        url = requests.Request("GET", self.path(*parts), params=params).prepare().url or ""
        kept = self._tagged.get(url)
        headers = {"If-None-Match": kept[0]} if kept else {}
        resp = self.request("GET", url, headers=headers)
        if resp.status_code == 304 and kept:
            self.not_modified += 1
            self._tagged.move_to_end(url)
            return kept[1]
        etag = resp.headers.get("ETag")
        if etag:
            self._tagged[url] = (etag, resp.content)
            self._tagged.move_to_end(url)
            while len(self._tagged) > TAGGED_URLS:
                self._tagged.popitem(last=False)
        return resp.content

    def get_fresh(self, *parts: str, params: Optional[dict] = None) -> Any:
        """``get`` by a conditional GET."""
        body = self.conditional(*parts, params=params)
        try:
            return json.loads(body)
        except ValueError:
            raise ClientError(f"{self.url} answered something that is not JSON (is it an xpresso-env server?)") from None

    def text(self, *parts: str, params: Optional[dict] = None) -> bytes:
        return self.request("GET", self.path(*parts), params=params).content

    def stream(self, *parts: str, params: Optional[dict] = None) -> Iterator[bytes]:
        """A streamed GET's body as it comes. Connection trouble while reading is raised as
        requests' own exceptions, so a follower can tell it from an API refusal and resume."""
        resp = self.request("GET", self.path(*parts), params=params, stream=True, timeout=(TIMEOUT[0], FOLLOW_READ_S))
        with resp:
            yield from resp.iter_content(chunk_size=None)


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for known, said in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                        ("No route to host", "no route to host"), ("timed out", "timed out"),
                        ("RemoteDisconnected", "the server closed the connection")):
        if known in text:
            return said
    return one_line(text)[:200]


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
