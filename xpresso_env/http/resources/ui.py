"""The web page (CONTRACT section 12): ``/`` and a fixed set of static files under ``/ui/``.

Everything is shipped in the package (``xpresso_env/ui/``): no CDN, no other host. The page is
plain HTML plus vanilla JavaScript modules (no build step) that talk to the same server's /api/v2
with the user's token (kept in the tab's sessionStorage, sent as ``Authorization: Jwt ...``).

Only the names in :data:`FILES` are served: a request for anything else (``/ui/../config``,
``/ui/%2e%2e%2fsetup.py``, a name we do not ship) is a 404, so no path from the client ever
reaches the file system. Every answer carries a Content-Security-Policy that allows the page's
own origin only and no inline script or style: even if a value from the API were ever inserted as
HTML by mistake, the browser would refuse to run what it carries.

These are not API routes: they need no token and are not in the OpenAPI document.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources

import falcon

# default-src 'self' covers scripts, styles, fetch (connect-src), fonts, images and workers:
# this origin only, and no inline script or style.
CSP = "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
# The API reference only: Swagger UI's stylesheet draws its icons as data: SVG images (tests/ui
# sees the violations without this). A data: URI is not a request to any host.
API_DOCS_CSP = CSP.replace("default-src 'self';", "default-src 'self'; img-src 'self' data:;")

HTML = "text/html; charset=utf-8"
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
SVG = "image/svg+xml"


@dataclass(frozen=True)
class Asset:
    path: str  # inside the package's ui/ folder
    content_type: str
    csp: str = CSP


PAGE = Asset("index.html", HTML)
# name under /ui/ -> file; nothing else is ever served.
FILES: dict[str, Asset] = {
    "app.js": Asset("app.js", JS),  # the shell; the modules below are imported by it
    **{name: Asset(name, JS) for name in (
        "dom.js", "http.js", "times.js", "tick.js", "filters.js", "records.js", "images.js", "overview.js",
        "profile.js")},
    "app.css": Asset("app.css", CSS),
    "api.html": Asset("api.html", HTML, API_DOCS_CSP),  # the API reference (Swagger UI)
    "api.js": Asset("api.js", JS),
    "swagger-ui-bundle.js": Asset("swagger-ui/swagger-ui-bundle.js", JS),
    "swagger-ui.css": Asset("swagger-ui/swagger-ui.css", CSS),
    "favicon.svg": Asset("favicon.svg", SVG),  # named by both pages, so no request for /favicon.ico
}


class Assets:
    """The shipped files, read from the package once on first use and kept in memory."""

    def __init__(self, package: str = "xpresso_env", folder: str = "ui"):
        self._package = package
        self._folder = folder
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def read(self, asset: Asset) -> bytes:
        with self._lock:
            data = self._cache.get(asset.path)
            if data is None:
                data = resources.files(self._package).joinpath(self._folder, asset.path).read_bytes()
                self._cache[asset.path] = data
            return data


def _send(resp: falcon.Response, data: bytes, asset: Asset, cache: str | None) -> None:
    resp.content_type = asset.content_type
    resp.data = data
    resp.set_header("Content-Security-Policy", asset.csp)
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("Referrer-Policy", "no-referrer")
    resp.set_header("X-Frame-Options", "DENY")
    # HTML is re-read each time (it names the scripts); the static files may be kept a while.
    resp.set_header("Cache-Control", cache or "no-cache")


class Page:
    def __init__(self, assets: Assets):
        self.assets = assets

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _send(resp, self.assets.read(PAGE), PAGE, "no-store")


class Static:
    def __init__(self, assets: Assets):
        self.assets = assets

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        asset = FILES.get(name)
        if asset is None:
            raise falcon.HTTPNotFound()
        cache = "no-cache" if asset.content_type == HTML else "public, max-age=300"
        _send(resp, self.assets.read(asset), asset, cache)


# The page's routes: the OpenAPI document describes /api only (tests/api/test_openapi.py).
ROUTES = ("/", "/ui/{name}")


def add_routes(app: falcon.App, assets: Assets) -> None:
    app.add_route("/", Page(assets))
    app.add_route("/ui/{name}", Static(assets))
