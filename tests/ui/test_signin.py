"""Issue 16's page (CONTRACT section 13) in headless Chromium against a real `xpresso-env serve`
with the `local` and `header` identity providers: the sign-in form (user name and password, with
the token as the second way), the lockout's message, a trusted proxy's user signed in directly,
and the Profile view's four parts (user details; API tokens created with a name and a lifetime,
shown once with a copy button, listed, revoked; password change; preferences, which every time
on the page follows). axe-core checks each view (no serious or critical violation).

The `header` provider trusts 127.0.0.1 here, and the browser itself sends the header (Playwright's
extra HTTP headers): a stand-in for a reverse proxy in front of the server, named as such."""
from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from xpresso_env.testing.server import cli, serve, write_config

from .conftest import Site, readme_shot

pytestmark = pytest.mark.slow  # a real serve and Chromium

PASSWORD = "correct horse battery"
USERS = {"pat": ["g1:member"], "quinn": ["g1:privilege_member"], "remy": ["g1:member"]}
HEADER = "X-Remote-User"


def set_password(config: Path, user: str, password: str) -> None:
    p = subprocess.run([sys.executable, "-m", "xpresso_env.cli", "--config", str(config), "user", "set-password",
                        user, "--stdin"], check=False, input=password + "\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """This module's server (conftest's `page` and `open_page` watch it): local + header providers."""
    folder = tmp_path_factory.mktemp("idserver")
    config = write_config(folder, {
        "storage": {"backend": "sqlite", "path": str(folder / "xpresso.sqlite3")},
        "auth": {"secret": "ui-id-secret-" + "i" * 40, "providers": ["local", "header"],
                 "header": {"name": HEADER, "trusted_proxies": ["127.0.0.1/32"]},
                 "login_max_failures": 3, "password_time_cost": 1, "password_memory_kib": 8192},
        "builder": {"backend": "dry-run"},
        "images": {"nfs_root": str(folder / "nfs"), "logs_root": str(folder / "logs"),
                   "workspace_root": str(folder / "ws")},
        "probes": {"enabled": False},
    })
    cli(config, "init")
    cli(config, "group", "add", "g1")
    tokens = {}
    for user, memberships in USERS.items():
        cli(config, "user", "add", user, *[a for m in memberships for a in ("--group", m)])
        set_password(config, user, PASSWORD)
        tokens[user] = cli(config, "token", "create", user).stdout.strip().splitlines()[-1]
    env = {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    with serve(config, env=env) as server:
        s = Site(server=server, tokens=tokens)
        r = s.api("POST", "/api/v2/harnesses", user="quinn", json={"name": "h-zone", "path": "/opt/h"})
        assert r.status_code == 201, r.text
        yield s


def password_sign_in(page: Page, site: Site, user: str, password: str = PASSWORD) -> None:
    page.goto(site.url + "/")
    expect(page.locator("#login-form")).to_be_visible()
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")


def test_sign_in_with_a_password_and_sign_out_ends_the_session(page: Page, site: Site, a11y, tmp_path: Path):
    page.goto(site.url + "/")
    page.fill("#username", "pat")
    page.fill("#password", PASSWORD)
    readme_shot(page, tmp_path, "sign-in.png")
    page.fill("#password", "wrong password!")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("Invalid username or password.")
    assert page.evaluate("sessionStorage.length") == 0
    a11y(page, "sign-in with an error")
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#who-user")).to_have_text("pat")
    expect(page.locator("#view-overview")).to_be_visible()
    token = page.evaluate("sessionStorage.getItem('xpresso.token')")
    assert page.evaluate("sessionStorage.getItem('xpresso.session')") == "1"
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
    headers = {"Authorization": "Jwt " + token}
    assert requests.get(site.url + "/api/v2/me", headers=headers, timeout=10).status_code == 200
    # the password is never kept anywhere the page can read back
    assert PASSWORD not in page.evaluate("JSON.stringify(sessionStorage)")
    expect(page.locator("#password")).to_have_value("")
    # sign out revokes the session on the server
    page.click("#sign-out")
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert requests.get(site.url + "/api/v2/me", headers=headers, timeout=10).status_code == 401
    # the token is still the second way in
    page.fill("#token", site.tokens["pat"])
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#who-user")).to_have_text("pat")
    page.watch.assert_clean()


def test_a_locked_user_name_is_told_when_to_try_again(page: Page, site: Site):
    for _ in range(3):
        password_sign_in(page, site, "remy", "not the password")
        expect(page.locator("#login-error")).to_have_text("Invalid username or password.")
    password_sign_in(page, site, "remy", PASSWORD)  # the right one too, while locked
    expect(page.locator("#login-error")).to_contain_text(re.compile(r"Try again in \d+ (s|min)\."))
    expect(page.locator("#signin")).to_be_visible()
    page.watch.assert_clean()


def test_a_trusted_proxys_user_is_signed_in_directly(browser, site: Site):
    # stand-in for a reverse proxy: the browser sends the header the proxy would add
    context = browser.new_context(extra_http_headers={HEADER: "quinn"})
    try:
        page = context.new_page()
        page.goto(site.url + "/")
        expect(page.locator("#who-user")).to_have_text("quinn")
        expect(page.locator("#signin")).to_be_hidden()
        expect(page.locator("#sign-out")).to_be_hidden()  # the proxy would sign in again at once
        expect(page.locator("#view-overview")).to_be_visible()
    finally:
        context.close()


def test_profile_tokens_created_shown_once_copied_listed_and_revoked(page: Page, site: Site, a11y,
                                                                     tmp_path: Path):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    password_sign_in(page, site, "quinn")
    expect(page.locator("#who-user")).to_have_text("quinn")
    page.click("button[data-tab=profile]")
    expect(page.locator("#profile .me-user_name")).to_have_text("quinn")
    expect(page.locator("#profile .me-groups")).to_contain_text("g1: privilege_member")
    expect(page.locator("#profile .me-last_sign_in time")).to_have_count(1)
    a11y(page, "profile")

    # a lifetime out of range: the API's words beside the field
    page.fill("#p-name", "laptop")
    page.fill("#p-days", "0")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#perr-days")).to_contain_text("days")
    expect(page.locator("#p-days")).to_have_attribute("aria-invalid", "true")
    page.fill("#p-days", "30")
    page.click("#token-form button[type=submit]")
    value = page.locator("#new-token-value")
    expect(value).to_have_value(re.compile(r"^Jwt \S+$"))
    token = value.input_value()
    page.click("#copy-token")
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == token
    row = page.locator("#token-list tbody tr", has_text="laptop")
    expect(row).to_have_count(1)
    expect(row.locator(".badge")).to_have_text("active")
    expect(row.locator("td").nth(3)).to_have_text("in 30 days")  # the lifetime asked for
    a11y(page, "profile with a new token")
    readme_shot(page, tmp_path, "profile.png", full_page=True)
    me = requests.get(site.url + "/api/v2/me", headers={"Authorization": token}, timeout=10)
    assert me.status_code == 200 and me.json()["user"] == "quinn"

    # shown once: opening the profile again shows the list, never the token
    page.click("button[data-tab=overview]")
    page.click("button[data-tab=profile]")
    expect(page.locator("#token-list tbody tr", has_text="laptop")).to_have_count(1)
    assert token.split(" ", 1)[1] not in page.content()

    page.locator("#token-list tbody tr", has_text="laptop").locator("button.revoke").click()
    expect(page.locator("#token-list tbody tr", has_text="laptop").locator(".badge")).to_have_text("revoked")
    me = requests.get(site.url + "/api/v2/me", headers={"Authorization": token}, timeout=10)
    assert me.status_code == 401
    page.watch.assert_clean()


def test_password_change_from_the_profile(page: Page, site: Site, a11y):
    password_sign_in(page, site, "pat")
    expect(page.locator("#who-user")).to_have_text("pat")
    page.click("button[data-tab=profile]")
    expect(page.locator("#password-form")).to_be_visible()
    page.fill("#p-old", "not my password")
    page.fill("#p-new", "a brand new one")
    page.fill("#p-again", "a brand new one")
    page.click("#password-form button[type=submit]")
    expect(page.locator("#perr-old")).to_have_text("Wrong password.")
    page.fill("#p-old", PASSWORD)
    page.fill("#p-again", "something else")
    page.click("#password-form button[type=submit]")
    expect(page.locator("#perr-again")).to_contain_text("differ")
    page.fill("#p-new", "short")
    page.fill("#p-again", "short")
    page.click("#password-form button[type=submit]")
    expect(page.locator("#perr-new")).to_contain_text("at least")
    a11y(page, "password form with errors")
    page.fill("#p-new", "a brand new one")
    page.fill("#p-again", "a brand new one")
    page.click("#password-form button[type=submit]")
    expect(page.locator("#message")).to_have_text("Password changed.")
    r = requests.post(site.url + "/api/v2/auth/login", json={"username": "pat", "password": "a brand new one"},
                      timeout=30)
    assert r.status_code == 200, r.text
    r = requests.post(site.url + "/api/v2/me/password", headers={"Authorization": r.json()["token"]},
                      json={"old": "a brand new one", "new": PASSWORD}, timeout=30)
    assert r.status_code == 204, r.text  # as it was, for the other tests
    page.watch.assert_clean()


def test_preferences_set_the_zone_and_clock_of_every_time_on_the_page(page: Page, site: Site, a11y):
    password_sign_in(page, site, "quinn")
    expect(page.locator("#who-user")).to_have_text("quinn")
    page.click("button[data-tab=harnesses]")
    cell = page.locator("#records tbody td.col-date_modified time").first
    expect(cell).to_have_attribute("title", re.compile("UTC"))
    iso = cell.get_attribute("datetime")
    try:
        page.click("button[data-tab=profile]")
        page.select_option("#p-time_zone", "Asia/Tokyo")
        page.check("input[name=time_format][value='12h']")
        page.click("#prefs-form button[type=submit]")
        expect(page.locator("#message")).to_contain_text("Asia/Tokyo")
        prefs = site.api("GET", "/api/v2/me", user="quinn").json()["preferences"]
        assert prefs == {"time_zone": "Asia/Tokyo", "time_format": "12h"}
        a11y(page, "preferences")
        page.click("button[data-tab=harnesses]")
        cell = page.locator("#records tbody td.col-date_modified time").first
        expect(cell).to_have_attribute("title", re.compile(r"GMT\+9"))
        # the exact time is the UTC one moved by 9 hours, on a 12-hour clock
        h, m = int(iso[11:13]), int(iso[14:16])
        total = (h * 60 + m + 9 * 60) % (24 * 60)
        hour12 = (total // 60) % 12 or 12
        title = cell.get_attribute("title")
        assert re.search(rf"\b0?{hour12}:{total % 60:02d}:\d\d\s*[ap]\.?m\.?", title, re.IGNORECASE), title
        # a reload keeps them (they are the user's, on the server)
        page.reload()
        page.click("button[data-tab=harnesses]")
        expect(page.locator("#records tbody td.col-date_modified time").first).to_have_attribute(
            "title", re.compile(r"GMT\+9"))
    finally:
        site.api("PATCH", "/api/v2/me", user="quinn", json={"preferences": {"time_zone": "UTC",
                                                                              "time_format": "24h"}})
    page.watch.assert_clean()
