"""The page's routes through the whole WSGI stack a server runs (edge, access log, response cache
frontend, falcon), with `server.ui` on and off. No browser here: see test_page.py."""
from __future__ import annotations

import dataclasses
import re

import pytest
from falcon.testing import TestClient

from xpresso_env.app import build_context, create_wsgi_app
from xpresso_env.http.resources import ui as api_ui


@pytest.fixture
def client_for(settings):
    """A client of the whole WSGI stack, on each storage backend (the response cache's frontend
    differs with the backend's change counters)."""
    made = []

    def make(ui: bool) -> TestClient:
        server = dataclasses.replace(settings.server, ui=ui, access_log=True)
        ctx = build_context(dataclasses.replace(settings, server=server), check_schema=False, images=False)
        ctx.storage.init()
        made.append(ctx)
        return TestClient(create_wsgi_app(ctx))

    yield make
    for ctx in made:
        ctx.close()


def test_page_and_files_pass_through_the_stack(client_for):
    client = client_for(True)
    for _ in range(2):  # the second time too: nothing in front (the response cache) keeps it from the app
        r = client.simulate_get("/")
        assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["content-security-policy"] == api_ui.CSP
        assert '<script type="module" src="/ui/app.js"></script>' in r.text
    for name, asset in api_ui.FILES.items():
        r = client.simulate_get(f"/ui/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == asset.content_type, name
        assert r.headers["content-security-policy"] == asset.csp
        assert len(r.content) > 100
    assert api_ui.FILES["api.html"].csp == api_ui.CSP.replace("default-src 'self';",
                                                               "default-src 'self'; img-src 'self' data:;")
    # no token needed, and the API next to it is unchanged
    assert client.simulate_get("/api/v2/harnesses").status_code == 401
    assert client.simulate_get("/ui/nothing.js").json == {"detail": "Not Found"}
    assert client.simulate_post("/").status_code == 405


def test_ui_false_serves_the_api_only(client_for):
    client = client_for(False)
    assert client.simulate_get("/").status_code == 404
    assert client.simulate_get("/ui/app.js").status_code == 404
    assert client.simulate_get("/api/v2/openapi.json").status_code == 200


def test_the_shipped_files_have_no_inline_script_or_style_and_name_no_other_host():
    """What the CSP would refuse, and what would reach another host, found before a browser does."""
    assets = api_ui.Assets()
    for asset in [api_ui.PAGE, api_ui.FILES["api.html"]]:
        html = assets.read(asset).decode()
        assert "<script>" not in html and "<style" not in html and "style=" not in html
        assert re.search(r"\son[a-z]+\s*=", html) is None  # no inline event handler
        assert "http://" not in html and "https://" not in html and '"//' not in html
    scripts = [name for name, asset in api_ui.FILES.items() if asset.content_type == api_ui.JS
               and not name.startswith("swagger-ui")]
    assert {"app.js", "api.js", "dom.js", "http.js"} <= set(scripts)
    for name in scripts:
        js = assets.read(api_ui.FILES[name]).decode()
        assert re.search(r"\.(innerHTML|outerHTML)\b|insertAdjacentHTML\(|document\.write|\beval\(", js) is None
        assert re.search(r"localStorage\.|document\.cookie", js) is None
        assert "http://" not in js and "https://" not in js
        # every module the page imports is one the server serves
        for imported in re.findall(r'from "\./([\w.]+)"', js):
            assert imported in api_ui.FILES, (name, imported)


def test_setup_py_ships_every_file_the_page_serves():
    """package_data must cover each served file, or an installed (non-editable) server 404s it.
    (Checked for real once with `pip wheel . --no-deps` and `unzip -l`; this keeps it true.)"""
    import ast
    import fnmatch
    from pathlib import Path

    setup_py = Path(__file__).resolve().parents[2] / "setup.py"
    call = next(n for n in ast.walk(ast.parse(setup_py.read_text())) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) == "setup")
    package_data = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))
    globs = package_data["xpresso_env"]
    for asset in [api_ui.PAGE, *api_ui.FILES.values()]:
        path = "ui/" + asset.path
        assert any(fnmatch.fnmatch(path, g) and path.count("/") == g.count("/") for g in globs), path
