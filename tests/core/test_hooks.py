"""Every hook is documented and tested (as datasette does), and the life-cycle and route hooks work."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import falcon
import pytest

from xpresso_env import hookspecs
from xpresso_env.app import build_context, create_app
from xpresso_env.hookspecs import hookimpl
from xpresso_env.plugin import make_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("xpresso_"))


def test_hookspecs_are_found():
    assert {"xpresso_startup", "xpresso_shutdown", "xpresso_add_routes", "xpresso_storage_backends"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_row_in_the_readme_plugin_table(hook):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Plugins"):]
    section = section[: section.index("\n## ", 1)]
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"| `{hook}({params})` |" in section, f"README's plugin table has no row for {hook}({params})"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_that_implements_it(hook):
    pattern = re.compile(rf"def {hook}\(")
    found = [p for p in (ROOT / "tests").rglob("test_*.py") if pattern.search(p.read_text())]
    built_in = [p for p in (ROOT / "plugins").glob("*.py") if pattern.search(p.read_text())]
    assert found or built_in, f"no test implements {hook}"


class Lifecycle:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    @hookimpl
    def xpresso_startup(self, ctx):
        self.calls.append(("startup", ctx))

    @hookimpl
    def xpresso_shutdown(self, ctx):
        self.calls.append(("shutdown", ctx))


def test_startup_and_shutdown_are_called_once_each_with_the_context(tmp_path):
    from tests.conftest import make_settings

    plugin = Lifecycle()
    ctx = build_context(make_settings(tmp_path), pm=make_plugin_manager(extra_plugins=[plugin]),
                        check_schema=False, images=False)
    ctx.storage.init()
    assert plugin.calls == []
    ctx.start()
    ctx.start()  # starting twice starts once
    assert plugin.calls == [("startup", ctx)]
    ctx.close()
    assert plugin.calls == [("startup", ctx), ("shutdown", ctx)]


def test_shutdown_is_not_called_for_a_context_never_started(tmp_path):
    from tests.conftest import make_settings

    plugin = Lifecycle()
    ctx = build_context(make_settings(tmp_path), pm=make_plugin_manager(extra_plugins=[plugin]),
                        check_schema=False, images=False)
    ctx.close()
    assert plugin.calls == []


class Ping:
    """A route of a plugin's own, reading the service through the context it is handed."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"pong": True, "storage": self.ctx.storage.name}


class Routes:
    @hookimpl
    def xpresso_add_routes(self, app, ctx):
        app.add_route("/plugin/ping", Ping(ctx))


def test_add_routes_mounts_a_plugin_route(tmp_path):
    from falcon.testing import TestClient

    from tests.conftest import make_settings

    ctx = build_context(make_settings(tmp_path), pm=make_plugin_manager(extra_plugins=[Routes()]),
                        check_schema=False, images=False)
    try:
        ctx.storage.init()
        client = TestClient(create_app(ctx))
        r = client.simulate_get("/plugin/ping")
        assert r.status_code == 200 and r.json == {"pong": True, "storage": "sqlite"}
        # the service's own routes are still there, and errors keep their shape
        assert client.simulate_get("/plugin/nope").json == {"detail": "Not Found"}
    finally:
        ctx.close()
