"""The README opens its usage part with the client and a screenshot of the page (issue 10's
"Done when"): right after the install part ("Two commands") and the table of contents come the
client's section, then the page's with two screenshots that the browser tests made and that are
in the repository. The table of contents follows the sections."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _sections(text: str) -> list[tuple[str, str]]:
    """(title, body) of each `## ` section, in order (lines inside ``` blocks are not headings)."""
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            sections[-1][1].append(line)
    return [(title, "\n".join(body)) for title, body in sections]


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def test_usage_opens_with_the_client_then_the_page_and_its_screenshots():
    sections = _sections((ROOT / "README.md").read_text())
    titles = [t for t, _ in sections]
    assert titles[:4] == ["Two commands", "Contents", "The xpresso client", "Web page"], titles[:6]
    client, page = sections[2][1], sections[3][1]
    assert "xpresso login" in client and "--follow" in client
    shots = re.findall(r"!\[[^\]]+\]\(([^)]+\.png)\)", page)
    assert len(shots) >= 2, page
    for shot in shots:
        data = (ROOT / shot).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, shot


def test_contents_lists_the_sections_in_their_order():
    text = (ROOT / "README.md").read_text()
    sections = _sections(text)
    anchors = {_anchor(t) for t, _ in sections} | {_anchor(m) for m in re.findall(r"^### (.+)$", text, re.MULTILINE)}
    contents = dict(sections)["Contents"]
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    assert links and set(links) <= anchors, set(links) - anchors
    # the `## ` sections the contents names appear in the same order in the README
    order = [_anchor(t) for t, _ in sections]
    named = [a for a in links if a in order]
    assert named == sorted(named, key=order.index)
