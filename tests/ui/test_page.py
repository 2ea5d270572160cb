"""The web page in a real browser (headless Chromium, Debian's package) against a real
`xpresso-env serve`: sign in, list, filter, a record's state and history, submit a dry-run build
and follow its log to the end, cancel a running build, pin, delete, what each role is offered,
the API reference page, and values from the API shown as text (never as HTML).

Every test also checks the page broke no rule of its Content-Security-Policy, raised no error,
opened no dialog and asked no other host for anything. Screenshots of the main views are saved
in the test's tmp folder (and retaken into docs/screenshots/ for the README with
XPRESSO_SCREENSHOTS=1, see conftest.readme_shot).
"""
from __future__ import annotations

import http.client
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import XSS_ENGINE, XSS_NAME, XSS_SITE, Site, readme_shot

pytestmark = pytest.mark.slow  # a real serve and Chromium


def sign_in(page: Page, site: Site, user: str, with_prefix: bool = True, tab: str = "harnesses") -> None:
    """Sign in with a pasted token (the second way), then open `tab` (the page opens on the overview)."""
    page.goto(site.url + "/")
    token = site.tokens[user] if with_prefix else site.tokens[user].split(" ", 1)[1]
    page.fill("#token", token)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#who-user")).to_have_text(re.compile("^" + user))
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#view-overview")).to_be_visible()
    if tab != "overview":
        page.click(f"button[data-tab={tab}]")


def names_in_table(page: Page, table: str = "#records") -> list[str]:
    return page.locator(f"{table} tbody td.col-name").all_inner_texts()


def save(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path


def test_sign_in_list_filter_state_and_history(page: Page, site: Site, tmp_path: Path):
    sign_in(page, site, "alice")
    expect(page.locator("#group-select")).to_have_value("g1")
    expect(page.locator("#who-role")).to_have_text("member")
    expect(page.locator("#records-count")).to_have_text("4 harnesses")
    assert sorted(names_in_table(page)) == sorted(["pyats-rtp", "tcl-ott", XSS_NAME, "pyats-ott"])
    # every row carries its two state badges
    assert page.locator("#records tbody td.col-configuration_state .badge").count() == 4
    assert page.locator("#records tbody td.col-operational_state .badge").count() == 4

    # filters: a text field (Enter applies it), then a select on top of it
    page.fill("#filters input[name=site]", "OTT")
    page.press("#filters input[name=site]", "Enter")
    expect(page.locator("#records-count")).to_have_text("2 harnesses")
    assert sorted(names_in_table(page)) == ["pyats-ott", "tcl-ott"]
    page.select_option("#filters select[name=configuration_state]", "MAINTENANCE")
    expect(page.locator("#records-count")).to_have_text("1 harnesses")
    assert names_in_table(page) == ["tcl-ott"]
    page.select_option("#filters select[name=configuration_state]", "DISABLED")
    expect(page.locator("#records-count")).to_have_text("1 harnesses")
    assert names_in_table(page) == ["pyats-ott"]

    # a record: its fields, its state, its history (created, then updated by bob)
    page.click("#records tbody button.link")
    detail = page.locator("#record-detail")
    expect(detail.locator("h3")).to_have_text("pyats-ott")
    expect(detail.locator("#record-state .field-operational_state .badge")).to_have_text(
        re.compile("^(ONLINE|OFFLINE|UNKNOWN)$"))
    # (the service's own probes may add `state` events in between: only the users' ones are checked)
    history = detail.locator("#record-history tbody tr:not(.event-state)")
    expect(history).to_have_count(2)
    assert history.nth(0).locator("td").nth(1).inner_text() == "created"
    assert history.nth(0).locator("td").nth(2).inner_text() == "bob"
    assert history.nth(1).locator("td").nth(1).inner_text() == "updated"
    assert "configuration_state: ENABLED → DISABLED" in history.nth(1).locator("td.changes").inner_text()
    readme_shot(page, tmp_path, "harnesses.png", full_page=True)

    # engines, with their filters
    page.click("button[data-tab=engines]")
    expect(page.locator("#records-count")).to_have_text("2 engines")
    page.select_option("#filters select[name=type]", "jenkins")
    expect(page.locator("#records-count")).to_have_text("1 engines")
    assert names_in_table(page) == ["jenkins-ott"]
    page.click("#records tbody button.link")
    expect(page.locator("#record-detail h3")).to_have_text("jenkins-ott")
    expect(page.locator("#record-state .field-operational_state .badge")).to_be_visible()
    # loaded from a fixtures file: no `created` event; the probes' `state` events, if any yet
    expect(page.locator("#record-history")).not_to_contain_text("Loading")
    assert "not available" not in page.locator("#record-detail").inner_text()
    assert page.locator("#record-detail").get_by_text("api_token").count() == 0  # write-only

    # another group: alice is a guest there, and it holds nothing
    page.select_option("#group-select", "g2")
    expect(page.locator("#who-role")).to_have_text("guest")
    expect(page.locator("#records-count")).to_have_text("0 engines")
    page.watch.assert_clean()


def test_the_token_stays_in_the_tab_and_goes_to_this_origin_only(page: Page, site: Site):
    requests_with_token = []
    page.on("request", lambda r: requests_with_token.append(r) if "authorization" in r.headers else None)
    sign_in(page, site, "gus", with_prefix=False)  # a bare token is accepted too
    expect(page.locator("#records-count")).to_have_text("4 harnesses")
    token = site.tokens["gus"].split(" ", 1)[1]
    assert page.evaluate("sessionStorage.getItem('xpresso.token')") == token
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert requests_with_token
    for r in requests_with_token:
        assert r.headers["authorization"] == "Jwt " + token
        assert r.url.startswith(site.url + "/api/v2/")
    assert all(token not in url for url in page.watch.requests)
    # a reload keeps the session (sessionStorage), sign out forgets it
    page.reload()
    expect(page.locator("#who-user")).to_have_text("gus")
    page.click("#sign-out")
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    # a refused token: back to signing in, with the API's words
    page.fill("#token", "Jwt not-a-token")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#message")).to_contain_text("Invalid token.")
    assert page.evaluate("sessionStorage.length") == 0
    # everything `xpresso-env token create` printed, both lines, pasted as it is
    output = site.token_outputs["gus"]
    assert len(output.strip().splitlines()) == 2 and output.strip().splitlines()[0].startswith("token for gus")
    page.fill("#token", output)
    page.click("#signin-form button[type=submit]")
    # #who-user still holds "gus" from the first sign-in: wait for the new session itself
    expect(page.locator("#signin")).to_be_hidden()
    page.click("button[data-tab=harnesses]")
    expect(page.locator("#records-count")).to_have_text("4 harnesses")
    page.wait_for_function("sessionStorage.getItem('xpresso.token') !== null", timeout=10_000)
    assert page.evaluate("sessionStorage.getItem('xpresso.token')") == token
    page.watch.assert_clean()


def test_values_from_the_api_are_shown_as_text_never_as_html(page: Page, site: Site):
    # a history entry carrying markup as well
    r = site.api("PATCH", f"/api/v2/harnesses/{site.ids[XSS_NAME]}", json={"bldg": "<svg onload=alert(2)>"})
    assert r.status_code == 200, r.text
    sign_in(page, site, "alice")
    expect(page.locator("#records-count")).to_have_text("4 harnesses")
    cell = page.locator("#records tbody button.link", has_text="<img")
    expect(cell).to_have_text(XSS_NAME)
    assert page.locator("#records tbody td.col-site", has_text="<b>").inner_text() == XSS_SITE
    # no element was made from the values
    for selector in ("img", "b", "svg", "script"):
        assert page.locator(f"#records {selector}").count() == 0
    cell.click()
    expect(page.locator("#record-detail h3")).to_have_text(XSS_NAME)
    expect(page.locator("#record-history tr.event-updated td.changes")).to_have_text("bldg: B3 → <svg onload=alert(2)>")
    assert page.locator("#record-detail img, #record-detail svg, #record-detail b").count() == 0

    page.click("button[data-tab=engines]")
    expect(page.locator("#records tbody button.link", has_text="<script>")).to_have_text(XSS_ENGINE)
    assert page.locator("#records script").count() == 0
    assert page.evaluate("window.__xss") is None
    # the browser reported nothing blocked either: nothing was even tried
    assert page.evaluate("window.__csp") == []
    page.watch.assert_clean()


def test_submit_a_build_follow_its_log_pin_and_cancel_another(page: Page, open_page, site: Site, tmp_path: Path):
    sign_in(page, site, "alice")  # member: add_docker_image, not delete_docker_image
    page.click("button[data-tab=images]")
    form = page.locator("#submit-form")
    expect(form).to_be_visible()
    form.locator("input[name=name]").fill("demo")
    form.locator("input[name=tag]").fill("1")
    form.locator("input[name=git_ref]").fill("main")
    form.locator("button[type=submit]").click()

    detail = page.locator("#image-detail")
    expect(detail.locator("h3")).to_have_text("demo:1")
    # the log is followed live until the build ends; then the record shows the outcome
    expect(page.locator("#image-log-state")).to_have_text("End of log.", timeout=60_000)
    log = page.locator("#image-log").inner_text()
    assert "git clone" in log and "dry-run: wrote" in log
    expect(detail.locator(".detail-head .badge")).to_have_text("successful")
    expect(page.locator("#images tbody tr").first.locator("td.col-status")).to_have_text("successful")
    # what a member may do: pin, no delete, no cancel of a finished build
    assert detail.locator("button.delete").count() == 0
    assert detail.locator("button.cancel").count() == 0
    detail.locator("button.pin").click()
    expect(detail.locator("button.pin")).to_have_text("Unpin")
    expect(detail.locator(".field-pin_version")).to_have_text("pinned")
    expect(page.locator("#images tbody td.col-pin_version").first).to_have_text("pinned")
    save(page, tmp_path, "image-log.png")

    # a build that is really running: its clone waits at the Polaris server's gate
    site.polaris.gate.close()
    try:
        form.locator("input[name=name]").fill("slow")
        form.locator("button[type=submit]").click()
        expect(detail.locator("h3")).to_have_text("slow:1")
        assert site.polaris.gate.waiting.wait(30), "the build never asked for the repository"
        expect(page.locator("#image-log")).to_contain_text("git clone")
        expect(page.locator("#image-log-state")).to_have_text("Following the build…")
        expect(detail.locator(".detail-head .badge")).to_have_text("building")

        # a second viewer: the only follow slot is taken, so its page polls the log instead
        other = open_page()
        sign_in(other, site, "bob")
        other.click("button[data-tab=images]")
        other.locator("#images tbody button.link", has_text="slow").click()
        expect(other.locator("#image-log")).to_contain_text("git clone")
        assert any("/logs?offset=" in u for u in other.watch.requests)
        expect(other.locator("#image-log-state")).to_have_text("Following the build…")

        detail.locator("button.cancel").click()
        expect(detail.locator(".detail-head .badge")).to_have_text("cancelled", timeout=30_000)
        expect(page.locator("#image-log-state")).to_have_text("End of log.", timeout=30_000)
        expect(detail.locator("button.cancel")).to_have_count(0)
        # the polling viewer sees the end too
        expect(other.locator("#image-log-state")).to_have_text("End of log.", timeout=30_000)
        expect(other.locator("#image-detail .detail-head .badge")).to_have_text("cancelled")
        other.watch.assert_clean()
    finally:
        site.polaris.gate.open()
    uuid = detail.get_attribute("data-uuid")
    record = site.api("GET", f"/api/v2/images/{uuid}").json()
    assert record["status"] == "cancelled" and "cancelled by alice" in record["meta"]["error"]

    # filters on images
    page.select_option("#image-filters select[name=status]", "cancelled")
    expect(page.locator("#images-count")).to_have_text("1 images")
    assert names_in_table(page, "#images") == ["slow"]
    page.watch.assert_clean()


def test_buttons_follow_the_role_and_delete_needs_its_permission(page: Page, site: Site):
    r = site.api("POST", "/api/v2/images/polaris_build", user="alice", json={"name": "todelete", "tag": "1",
                                                                            "git_ref": "main"})
    assert r.status_code == 200, r.text
    uuid = r.json()["uuid"]

    # a guest: no submit form, no action on an image
    sign_in(page, site, "gus")
    page.click("button[data-tab=images]")
    expect(page.locator("#images tbody tr", has_text="todelete")).to_have_count(1)
    assert not page.locator("#submit-form").is_visible()
    page.locator("#images tbody button.link", has_text="todelete").click()
    expect(page.locator("#image-log-state")).to_have_text("End of log.", timeout=60_000)
    assert page.locator("#image-detail .actions button").count() == 0
    page.click("#sign-out")

    # a privilege member: delete (armed by a first click, done by a second)
    sign_in(page, site, "bob")
    page.click("button[data-tab=images]")
    page.locator("#images tbody button.link", has_text="todelete").click()
    expect(page.locator("#image-log-state")).to_have_text("End of log.", timeout=60_000)
    delete = page.locator("#image-detail button.delete")
    delete.click()
    expect(delete).to_have_text("Click again to delete")
    assert site.api("GET", f"/api/v2/images/{uuid}").json()["is_deleted"] is False
    delete.click()
    expect(page.locator("#image-detail .field-is_deleted")).to_have_text("true")
    expect(page.locator("#images tbody tr", has_text="todelete")).to_have_count(0)  # deleted leave lists
    assert site.api("GET", f"/api/v2/images/{uuid}").json()["is_deleted"] is True
    page.watch.assert_clean()


def test_api_reference_page_is_served_from_the_package(page: Page, site: Site, tmp_path: Path):
    page.goto(site.url + "/ui/api.html")
    expect(page.locator(".opblock-summary-path", has_text="/api/v2/harnesses").first).to_be_visible(timeout=30_000)
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("xpresso")
    page.locator(".opblock-summary-path", has_text="/api/v2/images/polaris_build").first.click()
    expect(page.locator(".opblock-body").first).to_be_visible()
    page.screenshot(path=str(tmp_path / "api-reference.png"), full_page=False)
    assert page.evaluate("window.__csp") == []
    page.watch.assert_clean()


def _raw_get(site: Site, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", site.server.port, timeout=10)
    conn.request("GET", path)  # sent as written: no client-side clean-up of ".."
    resp = conn.getresponse()
    resp.body = resp.read()  # type: ignore[attr-defined]
    conn.close()
    return resp


def test_headers_and_only_the_shipped_files(site: Site):
    for path, kind in (("/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css"),
                       ("/ui/api.html", "text/html"), ("/ui/swagger-ui-bundle.js", "text/javascript")):
        r = _raw_get(site, path)
        assert r.status == 200, path
        assert r.getheader("Content-Type").startswith(kind)
        csp = r.getheader("Content-Security-Policy")
        assert csp.startswith("default-src 'self';") and "unsafe-inline" not in csp and "http" not in csp
        if path != "/ui/api.html":  # only Swagger UI's page allows data: images (its icons)
            assert "data:" not in csp
        assert r.getheader("X-Content-Type-Options") == "nosniff"
    page = _raw_get(site, "/").body.decode()
    assert "<script>" not in page and "style=" not in page and "http" not in page.replace('http-equiv', '')
    for path in ("/ui/../setup.py", "/ui/..%2f..%2fsetup.py", "/ui/%2e%2e/README.md", "/ui/index.html",
                 "/ui/swagger-ui/LICENSE", "/ui/swagger-ui-bundle.js.map", "/ui/", "/ui/app.js/x",
                 "/ui/..", "/ui/%00"):
        r = _raw_get(site, path)
        assert r.status == 404, path
        assert r.getheader("Content-Type").startswith("application/json"), path
