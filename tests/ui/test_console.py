"""Issue 17's page (CONTRACT section 14) in headless Chromium against a real `xpresso-env serve`:
the Overview, create / edit / delete of harnesses and engines as the role allows (field errors
beside their fields, write-only credentials), relative times with the exact time on hover,
lists and states that refresh by themselves with conditional GETs (no redraw, the open record
kept), the followed build log that keeps its end and shows step n/m, elapsed time and the final
status line, the details a new user hit (Pin Version, jobs/manifests as lists, 420 px, an empty
group), keyboard use with a visible focus, and axe-core on every view (no serious or critical
violation)."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import XSS_NAME, Site, readme_shot
from .test_page import sign_in

pytestmark = pytest.mark.slow  # a real serve and Chromium

def wait_for_probes(site: Site) -> None:
    """The server probes at start: wait until the fixtures' harness at a missing path is OFFLINE."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = site.api("GET", f"/api/v2/harnesses/{site.ids['pyats-rtp']}/state").json()
        if st["operational_state"] == "OFFLINE":
            return
        time.sleep(0.3)
    raise AssertionError("the first probe round never set pyats-rtp OFFLINE")


def test_overview_by_state_with_reasons_builds_and_one_click_to_the_record(page: Page, site: Site, a11y,
                                                                            tmp_path: Path):
    wait_for_probes(site)
    site.polaris.gate.close()  # a build that is really running while the overview is read
    try:
        r = site.api("POST", "/api/v2/images/polaris_build", json={"name": "ovbuild", "tag": "1", "git_ref": "main"})
        assert r.status_code == 200, r.text
        assert site.polaris.gate.waiting.wait(30)
        sign_in(page, site, "bob", tab="overview")
        ov = page.locator("#overview")
        harnesses = ov.locator("section[aria-labelledby=ov-harnesses]")
        expect(harnesses.locator(".count-offline strong")).not_to_have_text("0")
        offline = harnesses.locator("li.offline-item", has_text="pyats-rtp")
        expect(offline).to_contain_text("OFFLINE")
        expect(offline.locator(".reason")).to_contain_text("/opt/pyats-rtp")  # why
        expect(offline.locator("time")).to_have_count(1)  # since when
        engines = ov.locator("section[aria-labelledby=ov-engines]")
        expect(engines.locator("li.offline-item", has_text="jenkins-ott").locator(".reason")).to_contain_text(
            "connection refused")
        # the build that runs (claimed by this server) is under Running
        expect(ov.locator("ul.builds-running li", has_text="ovbuild:1")).to_have_count(1)
        expect(ov.locator("ul.builds-running li", has_text="ovbuild:1")).to_contain_text("by bob")
        expect(ov.locator("table.latest tbody tr").first).to_be_visible()
        a11y(page, "overview")
        readme_shot(page, tmp_path, "overview.png", full_page=True)

        # one click to the record: the harnesses tab with the record open
        offline.locator("button.link").click()
        expect(page.locator("button[data-tab=harnesses]")).to_have_attribute("aria-current", "page")
        expect(page.locator("#record-detail h3")).to_have_text("pyats-rtp")
        expect(page.locator("#record-state .field-reason")).to_contain_text("/opt/pyats-rtp")

        page.click("button[data-tab=overview]")
        page.locator("ul.builds-running button.link", has_text="ovbuild:1").click()
        expect(page.locator("#image-detail h3")).to_have_text("ovbuild:1")
        expect(page.locator("#image-log-state")).to_have_text("Following the build…")
    finally:
        site.polaris.gate.open()
    expect(page.locator("#image-log-state")).to_have_text("End of log.", timeout=60_000)
    page.watch.assert_clean()


def test_create_edit_delete_as_the_role_allows_with_field_errors_beside_fields(page: Page, open_page, site: Site,
                                                                               a11y, tmp_path: Path):
    # a guest and a member are offered nothing to change
    for user in ("gus", "alice"):
        p = open_page()
        sign_in(p, site, user)
        expect(p.locator("#records-count")).to_have_text(re.compile(r"^\d+ harnesses$"))
        assert not p.locator("#new-record").is_visible()
        p.locator("#records tbody button.link", has_text="tcl-ott").click()
        expect(p.locator("#record-detail h3")).to_have_text("tcl-ott")
        assert p.locator("#record-detail .actions button").count() == 0
        p.watch.assert_clean()

    sign_in(page, site, "bob")  # privilege_member: add and change, no delete
    expect(page.locator("#new-record")).to_have_text("New harness")
    page.click("#new-record")
    form = page.locator("#record-form")
    form.locator("#f-name").fill("ui-made")
    form.locator("#f-path").fill("relative/path")
    form.locator("#f-site").fill("SJC")
    form.locator("button[type=submit]").click()
    # the API's field error, beside its field, and the field marked invalid
    expect(form.locator("#err-path")).to_contain_text("absolute")
    expect(form.locator("#f-path")).to_have_attribute("aria-invalid", "true")
    expect(form.locator("#f-path")).to_be_focused()
    assert form.locator("#err-name").inner_text() == ""
    a11y(page, "harness form with a field error")
    readme_shot(page, tmp_path, "record-edit.png")
    assert site.api("GET", "/api/v2/harnesses?name=ui-made").json() == []  # nothing was made
    form.locator("#f-path").fill("/opt/ui-made")
    form.locator("button[type=submit]").click()
    expect(page.locator("#record-detail h3")).to_have_text("ui-made")
    expect(page.locator("#records tbody button.link", has_text="ui-made")).to_have_count(1)
    made = site.api("GET", "/api/v2/harnesses?name=ui-made").json()
    assert len(made) == 1 and made[0]["path"] == "/opt/ui-made" and made[0]["site"] == "SJC"
    assert made[0]["created_by"] == "bob"

    # edit: only what changed is sent; a duplicate name is the API's 409 shown on the form
    page.locator("#record-detail button.edit").click()
    expect(page.locator("#f-site")).to_have_value("SJC")
    page.fill("#f-name", "tcl-ott")
    page.locator("#record-form button[type=submit]").click()
    expect(page.locator("#form-error")).to_contain_text("tcl-ott")
    page.fill("#f-name", "ui-made")
    page.select_option("#f-configuration_state", "MAINTENANCE")
    page.locator("#record-form button[type=submit]").click()
    expect(page.locator("#record-detail .field-configuration_state")).to_have_text("MAINTENANCE")
    expect(page.locator("#record-history tr.event-updated td.changes")).to_contain_text(
        "configuration_state: ENABLED → MAINTENANCE")
    assert page.locator("#record-detail button.delete").count() == 0  # bob may not delete
    page.watch.assert_clean()

    # a group admin deletes (two clicks); the record leaves the list
    admin = open_page()
    sign_in(admin, site, "gina")
    admin.locator("#records tbody button.link", has_text="ui-made").click()
    delete = admin.locator("#record-detail button.delete")
    delete.click()
    expect(delete).to_have_text("Click again to delete")
    assert site.api("GET", f"/api/v2/harnesses/{made[0]['id']}").json()["deleted"] is False
    delete.click()
    expect(admin.locator("#records tbody button.link", has_text="ui-made")).to_have_count(0)
    assert site.api("GET", f"/api/v2/harnesses/{made[0]['id']}").json()["deleted"] is True
    admin.watch.assert_clean()


def test_engine_credentials_are_write_only_password_fields(page: Page, site: Site, a11y):
    sign_in(page, site, "bob", tab="engines")
    page.click("#new-record")
    expect(page.locator("#f-api_token")).to_have_attribute("type", "password")
    page.fill("#f-name", "jenkins-ui")
    page.fill("#f-base_url", "not a url")
    page.fill("#f-username", "ci")
    page.fill("#f-api_token", "s3cret-token-ui")
    page.locator("#record-form button[type=submit]").click()
    expect(page.locator("#err-base_url")).not_to_be_empty()
    a11y(page, "engine form")
    page.fill("#f-base_url", "http://127.0.0.1:9/jenkins-ui")
    page.locator("#record-form button[type=submit]").click()
    expect(page.locator("#record-detail h3")).to_have_text("jenkins-ui")
    assert "s3cret-token-ui" not in page.content()
    # editing shows empty credential fields (never what is stored); leaving them empty keeps them
    page.locator("#record-detail button.edit").click()
    expect(page.locator("#f-api_token")).to_have_value("")
    expect(page.locator("#f-username")).to_have_value("")
    expect(page.locator("#hint-api_token")).to_contain_text("leave empty to keep")
    page.fill("#f-site", "OTT")
    page.locator("#record-form button[type=submit]").click()
    expect(page.locator("#record-detail .field-site")).to_have_text("OTT")
    history = page.locator("#record-history tr.event-created td.changes")
    expect(history).to_contain_text("api_token: ***")  # the history masks it; the page sends nothing more
    assert "s3cret-token-ui" not in page.content()
    page.watch.assert_clean()


def test_lists_and_states_refresh_by_themselves_without_redraw_or_losing_the_open_record(page: Page, site: Site):
    statuses: list[tuple[str, int, str]] = []
    page.on("response", lambda r: statuses.append((r.url, r.status, r.request.headers.get("if-none-match", "")))
            if "/api/v2/harnesses" in r.url else None)
    sign_in(page, site, "alice")
    expect(page.locator("#records tbody tr").first).to_be_visible()
    page.locator("#records tbody button.link", has_text="tcl-ott").click()
    expect(page.locator("#record-detail h3")).to_have_text("tcl-ott")
    # mark the rows: an unchanged list must not be drawn again
    page.evaluate("document.querySelectorAll('#records tbody tr').forEach(r => r.__mark = 1)")
    page.wait_for_timeout(9_000)  # two refresh rounds
    assert page.evaluate("[...document.querySelectorAll('#records tbody tr')].every(r => r.__mark === 1)")
    # the list was asked again with If-None-Match, and the server answered 304 each time
    listed = [(status, etag) for url, status, etag in statuses if url == site.url + "/api/v2/harnesses"]
    conditional = [status for status, etag in listed if etag]
    assert len(conditional) >= 2, listed
    assert set(conditional) == {304}, listed

    # a change made elsewhere shows by itself, and the open record stays open
    r = site.api("POST", "/api/v2/harnesses", json={"name": "appears-later", "path": "/opt/later"})
    assert r.status_code == 201, r.text
    expect(page.locator("#records tbody button.link", has_text="appears-later")).to_have_count(1, timeout=15_000)
    expect(page.locator("#record-detail h3")).to_have_text("tcl-ott")
    assert page.locator("#record-detail").is_visible()
    page.watch.assert_clean()


def test_times_are_relative_with_the_exact_time_on_hover(page: Page, site: Site):
    sign_in(page, site, "alice")
    cell = page.locator("#records tbody td.col-date_modified time").first
    expect(cell).to_have_text(re.compile(r"^(just now|\d+ (min|h|days?) ago)$"))
    iso = cell.get_attribute("datetime")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", iso)
    # the exact time in the user's zone (UTC unless the preferences say otherwise)
    title = cell.get_attribute("title")
    assert iso[:10] in title and iso[11:19] in title and "UTC" in title
    page.watch.assert_clean()


def test_followed_build_log_keeps_its_end_shows_elapsed_time_and_the_final_status(page: Page, site: Site, a11y,
                                                                                  tmp_path: Path):
    sign_in(page, site, "alice", tab="images")
    site.polaris.gate.close()
    try:
        form = page.locator("#submit-form")
        form.locator("input[name=name]").fill("follow")
        form.locator("input[name=tag]").fill("1")
        form.locator("button[type=submit]").click()
        expect(page.locator("#image-detail h3")).to_have_text("follow:1")
        assert site.polaris.gate.waiting.wait(30)
        expect(page.locator("#image-log")).to_contain_text("git clone")
        expect(page.locator("#image-progress")).to_contain_text(re.compile(r"\d+:\d\d elapsed"))
        # a short box, so the log overflows it (CSSOM from a script: allowed by the CSP)
        page.evaluate("document.getElementById('image-log').style.maxHeight = '2.6em'")
        page.evaluate("const l = document.getElementById('image-log'); l.scrollTop = l.scrollHeight")
    finally:
        site.polaris.gate.open()
    expect(page.locator("#image-log-state")).to_have_text("End of log.", timeout=60_000)
    log = page.locator("#image-log")
    # the end is still in view (it used to jump back to the top), and the final status is shown
    assert log.evaluate("l => l.scrollHeight > l.clientHeight + 10"), "the log did not overflow its box"
    assert log.evaluate("l => l.scrollTop + l.clientHeight >= l.scrollHeight - 4")
    final = page.locator("#image-final")
    expect(final).to_be_visible()
    expect(final).to_contain_text("successful: follow:1")
    expect(page.locator("#image-progress")).to_contain_text(re.compile(r"took \d+:\d\d"))
    expect(page.locator("#image-detail .field-pin_version")).to_have_text("not pinned")  # null is not blank
    a11y(page, "image with its followed log")
    page.evaluate("document.getElementById('image-log').style.maxHeight = ''")  # as a reader sees it
    readme_shot(page, tmp_path, "image-log.png", full_page=True)
    page.watch.assert_clean()


def test_a_reader_who_scrolled_up_stays_where_he_is(page: Page, site: Site):
    sign_in(page, site, "alice", tab="images")
    site.polaris.gate.close()
    try:
        form = page.locator("#submit-form")
        form.locator("input[name=name]").fill("reader")
        form.locator("input[name=tag]").fill("1")
        form.locator("button[type=submit]").click()
        assert site.polaris.gate.waiting.wait(30)
        expect(page.locator("#image-log")).to_contain_text("git clone")
        page.evaluate("document.getElementById('image-log').style.maxHeight = '1.3em'")
        page.locator("#image-log").evaluate("l => { l.scrollTop = 0; l.dispatchEvent(new Event('scroll')); }")
        assert page.locator("#image-log").evaluate("l => l.scrollHeight > l.clientHeight")
    finally:
        site.polaris.gate.open()
    expect(page.locator("#image-log-state")).to_have_text("End of log.", timeout=60_000)
    assert page.locator("#image-log").evaluate("l => l.scrollTop") == 0
    expect(page.locator("#image-final")).to_contain_text("successful: reader:1")  # still shown below the log
    page.watch.assert_clean()


def test_a_finished_build_opens_at_its_end_with_the_builders_steps(page: Page, site: Site):
    """The dry-run builder writes a few lines and no step lines; a docker build's log is long and
    has them. A stand-in for that log (Playwright answers the page's log request with one, named
    as such) checks that a finished build opens at its end and that step n/m is read."""
    r = site.api("POST", "/api/v2/images/polaris_build", user="alice", json={"name": "steps", "tag": "1",
                                                                            "git_ref": "main"})
    uuid = r.json()["uuid"]
    deadline = time.monotonic() + 60
    while site.api("GET", f"/api/v2/images/{uuid}").json()["status"] == "building":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    lines = [f"2026-12-07T10:00:{i % 60:02d}.000000Z Step {i // 20 + 1}/7 : RUN echo {i}" for i in range(140)]
    lines.append("2026-12-07T10:02:20.000000Z successful: steps:1 image_id sha256:feed (stand-in log)")
    body = "\n".join(lines) + "\n"
    page.route(re.compile(r".*/api/v2/images/[^/]+/logs\?.*"),
               lambda route: route.fulfill(status=200, content_type="text/plain; charset=utf-8", body=body))
    sign_in(page, site, "alice", tab="images")
    page.locator("#images tbody button.link", has_text="steps").first.click()
    expect(page.locator("#image-log-state")).to_have_text("End of log.", timeout=30_000)
    expect(page.locator("#image-progress")).to_contain_text("step 7/7")
    log = page.locator("#image-log")
    assert log.evaluate("l => l.scrollHeight > l.clientHeight")
    assert log.evaluate("l => l.scrollTop + l.clientHeight >= l.scrollHeight - 4")
    expect(page.locator("#image-final")).to_contain_text("successful: steps:1")
    page.watch.assert_clean()


def test_details_pin_column_lists_and_what_an_empty_group_says(page: Page, site: Site, a11y):
    r = site.api("POST", "/api/v2/images/polaris_build", user="alice", json={"name": "details", "tag": "1",
                                                                            "git_ref": "main"})
    uuid = r.json()["uuid"]
    deadline = time.monotonic() + 60
    while site.api("GET", f"/api/v2/images/{uuid}").json()["status"] == "building":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    sign_in(page, site, "alice", tab="images")
    row = page.locator("#images tbody tr", has=page.locator("button.link", has_text="details"))
    expect(row.locator("td.col-pin_version")).to_have_text("not pinned")
    row.locator("button.link").click()
    jobs = page.locator("#image-detail .field-jobs li")
    expect(jobs).to_have_count(1)
    expect(jobs).to_have_text("basic/basic_example_job.py")
    expect(page.locator("#image-detail .field-manifests li")).to_have_text("manifests/basic.tem")
    assert "[" not in page.locator("#image-detail .field-jobs").inner_text()
    expect(page.locator("#image-log-state")).to_have_text("End of log.", timeout=30_000)
    a11y(page, "images")

    # g2 is empty: the page says what to do next (alice is a guest there: ask someone who may add)
    page.select_option("#group-select", "g2")
    expect(page.locator("#images-count")).to_have_text("0 images")
    expect(page.locator("#images-empty")).to_contain_text("a member of the group can build one")
    page.click("button[data-tab=harnesses]")
    expect(page.locator("#records-count")).to_have_text("0 harnesses")
    expect(page.locator("#records-empty")).to_contain_text("Ask a privilege member or group admin of g2")
    page.click("button[data-tab=overview]")
    expect(page.locator("#overview .empty-group")).to_contain_text("Nothing in g2 yet")
    expect(page.locator("#overview .empty-group")).to_contain_text("ask a group admin")
    a11y(page, "empty overview")
    page.watch.assert_clean()


def test_usable_at_420_and_400_px(open_page, site: Site, a11y):
    page = open_page()
    loaded = {"overview": "#overview .card", "harnesses": "#records-count:has-text('harnesses')",
              "engines": "#records-count:has-text('engines')", "images": "#images-count:has-text('images')",
              "profile": "#profile #p-prefs"}
    page.set_viewport_size({"width": 420, "height": 800})
    sign_in(page, site, "bob", tab="overview")
    for width in (420, 400):
        page.set_viewport_size({"width": width, "height": 800})
        for tab, ready in loaded.items():
            page.click(f"button[data-tab={tab}]")
            expect(page.locator(ready).first).to_be_visible()
            header = page.locator("header.top")
            assert header.evaluate("h => h.scrollWidth <= h.clientWidth"), (width, tab)
            assert page.evaluate(f"document.documentElement.scrollWidth <= {width}"), (width, tab)
            if width == 400:
                a11y(page, f"{tab} at {width} px")
    page.watch.assert_clean()


def test_every_action_works_from_the_keyboard_with_a_visible_focus(page: Page, site: Site):
    sign_in(page, site, "bob", tab="overview")
    # the tabs: reached with Tab, opened with Enter
    page.focus("button[data-tab=overview]")
    page.keyboard.press("Tab")
    expect(page.locator("button[data-tab=harnesses]")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#records-count")).to_have_text(re.compile(r"harnesses$"))
    # New harness, fill, submit: keyboard only
    page.focus("#new-record")
    page.keyboard.press("Enter")
    expect(page.locator("#f-name")).to_be_focused()
    page.keyboard.type("by-keyboard")
    page.keyboard.press("Tab")  # harness kind
    page.keyboard.press("Tab")  # path
    expect(page.locator("#f-path")).to_be_focused()
    page.keyboard.type("/opt/by-keyboard")
    page.keyboard.press("Enter")  # submits the form
    expect(page.locator("#record-detail h3")).to_have_text("by-keyboard")
    expect(page.locator("#record-title")).to_be_focused()
    # a record opened from the list with the keyboard: Tab from the open record's title back to
    # its buttons shows a drawn focus
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    width = page.evaluate("parseFloat(getComputedStyle(document.activeElement).outlineWidth)")
    assert outline != "none" and width >= 2, (outline, width)  # the focus is visible
    page.focus("#records tbody button.link >> nth=0")
    page.keyboard.press("Enter")
    expect(page.locator("#record-detail h3")).not_to_have_text("by-keyboard")
    page.watch.assert_clean()


def test_values_from_the_api_stay_text_in_the_overview(page: Page, site: Site):
    wait_for_probes(site)
    sign_in(page, site, "alice", tab="overview")
    item = page.locator("#overview li.offline-item", has_text="<img")
    expect(item.locator("button.link")).to_have_text(XSS_NAME)
    assert page.locator("#overview img, #overview script").count() == 0
    page.watch.assert_clean()
