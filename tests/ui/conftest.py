"""Fixtures of the browser tests: a real `xpresso-env serve` (SQLite, dry-run builder), a real
Polaris git repository served over git's dumb HTTP protocol on loopback, and headless Chromium
from Debian's package driven by Playwright.

The HTTP server in front of the Polaris repository has a gate: while it is closed, requests wait
(git's clone hangs inside the build), so a test can cancel a build that is really running,
without guessing how long anything takes. Nothing here is a stand-in: the build checks out the
repository with git over HTTP, the page runs in Chromium against the served API.

One server per module (starting it costs seconds); tests use their own records and names.
The page does not depend on the storage backend (the API tests cover every backend), so the
server runs on SQLite only.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

from tests.git_repo import GitRepo, hello_polaris
from xpresso_env.testing.server import Server, cli, serve, write_config

CHROMIUM = "/usr/bin/chromium"
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_SITE = "<b>bold</b>"
XSS_ENGINE = "<script>window.__xss = 1</script>"


# --------------------------------------------------------------------------- the Polaris repository

class _Gate:
    """Open: requests are answered. Closed: each request waits until it opens (or the server stops)."""

    def __init__(self) -> None:
        self.open_event = threading.Event()
        self.open_event.set()
        self.stopping = threading.Event()
        self.waiting = threading.Event()  # a request is being held right now

    def close(self) -> None:
        self.waiting.clear()
        self.open_event.clear()

    def open(self) -> None:
        self.open_event.set()

    def pass_through(self) -> None:
        if self.open_event.is_set():
            return
        self.waiting.set()
        while not self.open_event.wait(0.1):
            if self.stopping.is_set():
                return


class _Handler(http.server.SimpleHTTPRequestHandler):
    gate: _Gate

    def do_GET(self) -> None:
        self.gate.pass_through()
        super().do_GET()

    def log_message(self, format: str, *args) -> None:
        pass


class _Quiet(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that went away (a cancelled clone) is expected


@dataclass
class PolarisHttp:
    url: str
    gate: _Gate


@pytest.fixture(scope="module")
def polaris_http(tmp_path_factory) -> Iterator[PolarisHttp]:
    """A Polaris repository (main: a Dockerfile, a job file, a manifest) as a bare repository
    served over HTTP (git's dumb protocol) on a loopback port."""
    root = tmp_path_factory.mktemp("polaris")
    repo = hello_polaris(root / "work", {"basic/basic_example_job.py": "# a pyATS job\n",
                                         "manifests/basic.tem": "manifest: basic\n"})
    served = root / "http"
    served.mkdir()
    repo.git("clone", "-q", "--bare", str(repo.path), str(served / "polaris.git"))
    GitRepo(served / "polaris.git").git("update-server-info")
    gate = _Gate()
    handler = type("Handler", (_Handler,), {"gate": gate})
    httpd = _Quiet(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield PolarisHttp(url=f"http://127.0.0.1:{httpd.server_address[1]}/polaris.git", gate=gate)
    finally:
        gate.stopping.set()
        gate.open()
        httpd.shutdown()
        httpd.server_close()


# --------------------------------------------------------------------------- the server

@dataclass
class Site:
    server: Server
    tokens: dict[str, str]  # user -> "Jwt ..."
    token_outputs: dict[str, str] = field(default_factory=dict)  # user -> all `token create` printed
    ids: dict[str, str] = field(default_factory=dict)  # harness/engine name -> id
    polaris: PolarisHttp = None  # type: ignore[assignment]

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, method: str, path: str, user: str = "bob", group: str = "g1", **kw) -> requests.Response:
        headers = {"Authorization": self.tokens[user], "Group": group}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kw)


USERS = {  # name: memberships
    "alice": ["g1:member", "g2:guest"],
    "bob": ["g1:privilege_member"],
    "gus": ["g1:guest"],
    "gina": ["g1:group_admin"],
}


@pytest.fixture(scope="module")
def site(tmp_path_factory, polaris_http: PolarisHttp) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("server")
    config = write_config(folder, {
        "storage": {"backend": "sqlite", "path": str(folder / "xpresso.sqlite3")},
        "auth": {"secret": "ui-test-secret-" + "u" * 40},
        "builder": {"backend": "dry-run"},
        "polaris": {"repo": polaris_http.url},
        "images": {"nfs_root": str(folder / "nfs"), "logs_root": str(folder / "logs"),
                   "workspace_root": str(folder / "ws")},
        "server": {"access_log": True},
    })
    cli(config, "init")
    for group in ("g1", "g2"):
        cli(config, "group", "add", group)
    tokens, outputs = {}, {}
    for user, memberships in USERS.items():
        args = [a for m in memberships for a in ("--group", m)]
        cli(config, "user", "add", user, *args)
        outputs[user] = cli(config, "token", "create", user).stdout
        tokens[user] = outputs[user].strip().splitlines()[-1]
    fixtures = folder / "fixtures.yaml"
    fixtures.write_text(yaml.safe_dump({
        "harnesses": [
            {"group": "g1", "name": "pyats-rtp", "harness": "pyATS", "path": "/opt/pyats-rtp", "site": "RTP",
             "bldg": "B1"},
            {"group": "g1", "name": "tcl-ott", "harness": "Tcl-ATS", "path": "/opt/tcl", "site": "OTT", "bldg": "B2",
             "configuration_state": "MAINTENANCE"},
            {"group": "g1", "name": XSS_NAME, "harness": "pyATS", "path": "/opt/x", "site": XSS_SITE, "bldg": "B3"},
        ],
        "engines": [
            {"group": "g1", "name": "jenkins-ott", "type": "jenkins", "base_url": "http://127.0.0.1:9/",
             "site": "OTT", "bldg": "B1"},
            {"group": "g1", "name": XSS_ENGINE, "type": "cloud", "base_url": "https://cloud.example.com",
             "site": "RTP", "bldg": "B1"},
        ],
    }))
    cli(config, "load", str(fixtures))
    env = {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    # Two threads: one followed log takes the only follow slot (threads // 2), so a second
    # follower gets 429 and the page's fallback (polling with ?offset) is exercised too.
    with serve(config, env=env, threads=2) as server:
        s = Site(server=server, tokens=tokens, token_outputs=outputs, polaris=polaris_http)
        # One harness made and changed through the API, so its history has events by a user.
        r = s.api("POST", "/api/v2/harnesses", json={"name": "pyats-ott", "path": "/opt/pyats", "site": "OTT",
                                                     "bldg": "B1"})
        assert r.status_code == 201, r.text
        s.ids["pyats-ott"] = r.json()["id"]
        r = s.api("PATCH", f"/api/v2/harnesses/{s.ids['pyats-ott']}", json={"configuration_state": "DISABLED"})
        assert r.status_code == 200, r.text
        for rec in s.api("GET", "/api/v2/harnesses").json() + s.api("GET", "/api/v2/engines").json():
            s.ids.setdefault(rec["name"], rec["id"])
        yield s


# --------------------------------------------------------------------------- the browser

@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@dataclass
class Watch:
    """What a page did that a test must see: console errors, CSP violations, page errors,
    dialogs, and every URL it asked for."""

    origin: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m]

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not (u == self.origin or u.startswith(self.origin + "/"))]

    def assert_clean(self) -> None:
        assert self.csp_violations() == []
        assert self.errors == []
        assert self.dialogs == []
        assert self.foreign_requests() == []


@pytest.fixture
def open_page(browser, site: Site):
    """Pages in contexts of their own (as separate browser profiles would be), each watched."""
    contexts = []

    def make():
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        contexts.append(context)
        # securitypolicyviolation events too, in case a violation is not echoed on the console.
        context.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation',"
                                " (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
        pg = context.new_page()
        watch = Watch(origin=site.url)
        pg.on("console", lambda m: watch.console.append(f"{m.type}: {m.text}"))
        pg.on("pageerror", lambda e: watch.errors.append(str(e)))
        pg.on("request", lambda r: watch.requests.append(r.url))

        def on_dialog(dialog) -> None:
            watch.dialogs.append(dialog.message)
            dialog.dismiss()

        pg.on("dialog", on_dialog)
        pg.watch = watch  # type: ignore[attr-defined]
        return pg

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_page):
    return open_page()


# --------------------------------------------------------------------------- accessibility (axe-core)

AXE_DIR = Path(os.environ.get("XPRESSO_AXE_DIR", Path.home() / ".cache" / "xpresso-env" / "axe"))
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core (the npm package, 4.x): .ci/run installs it into AXE_DIR; a run without it
    installs it there with npm, once."""
    if not AXE_JS.exists():
        npm = shutil.which("npm")
        assert npm, "npm is missing: apt-get install npm (tests/ui install axe-core with it)"
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(AXE_DIR), "--no-audit", "--no-fund", "axe-core@4"],
                       check=True, capture_output=True, timeout=300)
    return AXE_JS.read_text()


def axe_violations(page, source: str) -> list[str]:
    """axe-core's serious and critical violations of what the page shows now, one line each.
    The script is evaluated through the DevTools protocol (the page's CSP allows no inline script)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(source + "\n;true")
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' -- ' + v.nodes.map(n => n.target.join(' ')).join(', '));
    }""")
    return list(result)


@pytest.fixture
def a11y(axe_source):
    """a11y(page, view): fails on any serious or critical axe-core violation in the view shown."""
    def check(page, view: str) -> None:
        found = axe_violations(page, axe_source)
        assert found == [], f"{view}: " + "\n".join(found)
    return check


# --------------------------------------------------------------------------- README screenshots

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def readme_shot(page, tmp_path: Path, name: str, full_page: bool = False) -> None:
    """A screenshot of what the page shows: into the test's tmp folder, and into docs/screenshots/
    (the README's images) when XPRESSO_SCREENSHOTS=1, which is how they are retaken."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 0
    if os.environ.get("XPRESSO_SCREENSHOTS") == "1":
        page.screenshot(path=str(SHOTS / name), full_page=full_page)
