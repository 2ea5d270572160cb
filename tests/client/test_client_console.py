"""The client as a new user tries it (issue 17, CONTRACT section 14): images found by an id prefix
or NAME:TAG, `-f` on every list, ids whole at 70 columns, `images show` data as JSON, pinned and
deleted shown plainly, refused groups explained, login asking for a group, completion scripts,
and the follow's conditional GETs. Against a real `serve` on loopback; the client as a
subprocess (or, for the HTTP layer, in-process against the same server)."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.client.conftest import CLIENT, Site
from xpresso_env.client.http import Api

pytestmark = pytest.mark.slow  # a real serve and the client as a subprocess in every test

AMBIGUOUS = ("abcd1000-0000-4000-8000-000000000001", "abcd2000-0000-4000-8000-000000000002")


def _insert_images(site: Site, images: list[dict[str, Any]]) -> None:
    """Image records with chosen ids, written to the server's store by another process (as
    `xpresso-env import` would): the only way to get two ids that share a prefix on purpose.
    Final states only, so no worker picks them up."""
    from xpresso_env.cli.admin import opened
    from xpresso_env.config import load_settings
    from xpresso_env.core.codec import to_doc
    from xpresso_env.core.models import Image, ImageStatus

    now = datetime.now(timezone.utc)
    with opened(load_settings(str(site.config)), images=False) as ctx, ctx.storage.write() as tx:
        for i, spec in enumerate(images):
            when = now - timedelta(minutes=len(images) - i)
            tx.insert(to_doc(Image(
                id=uuid.UUID(spec["id"]), group="g1", name=spec["name"], tag=spec["tag"], git_ref="main",
                submitter="alice", nfs_path=f"/nfs/g1/{spec['name']}/{spec['tag']}.tar", retention_day=6,
                date_created=when, date_updated=when, status=ImageStatus(spec.get("status", "successful")),
                pin_version=spec.get("pin_version"), is_deleted=spec.get("is_deleted", False))))


@pytest.fixture(scope="module")
def images(site: Site) -> dict[str, str]:
    ids = {"a": AMBIGUOUS[0], "b": AMBIGUOUS[1], "old": str(uuid.uuid4()), "new": str(uuid.uuid4()),
           "failed": str(uuid.uuid4())}
    _insert_images(site, [
        {"id": ids["a"], "name": "twin", "tag": "one"},
        {"id": ids["b"], "name": "twin", "tag": "two", "pin_version": True},
        {"id": ids["old"], "name": "polaris-image", "tag": "v1", "is_deleted": True},
        {"id": ids["new"], "name": "polaris-image", "tag": "v1", "pin_version": False},
        {"id": ids["failed"], "name": "broken", "tag": "v1", "status": "failed"},
    ])
    return ids


def _error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpresso: error: "), r.stderr
    return lines[0][len("xpresso: error: "):]


def test_images_by_unique_prefix_or_name_tag(site: Site, home: Path, images: dict[str, str]):
    new = images["new"]
    for ref in (new, new[:4], new[:8].upper(), new[:13], "polaris-image:v1"):
        r = site.xpresso("--json", "images", "show", ref)
        assert r.returncode == 0, (ref, r.stderr)
        assert json.loads(r.stdout)["uuid"] == new  # NAME:TAG: the live one, not the deleted older one
    r = site.xpresso("images", "pin", new[:6])
    assert r.returncode == 0, r.stderr
    assert site.image(new)["pin_version"] is True
    assert site.xpresso("images", "unpin", "polaris-image:v1").returncode == 0
    assert site.image(new)["pin_version"] is False
    assert site.xpresso("--json", "logs", new[:5]).returncode == 0


def test_an_ambiguous_prefix_lists_the_matches(site: Site, home: Path, images: dict[str, str]):
    message = _error(site.xpresso("images", "show", "abcd"))
    assert message.startswith("abcd is the start of 2 image ids: ")
    assert f"{AMBIGUOUS[0]} (twin:one, successful)" in message and f"{AMBIGUOUS[1]} (twin:two, successful)" in message
    assert message.endswith("give more characters")
    assert "give at least 4 characters" in _error(site.xpresso("images", "pin", "abc"))
    assert _error(site.xpresso("images", "show", "fffff")) == "no image id in the group starts with fffff"
    assert _error(site.xpresso("images", "show", "nothing:here")) == "no image nothing:here in the group"
    assert "neither an image id" in _error(site.xpresso("images", "show", "polaris-image"))
    assert json.loads(site.xpresso("--json", "images", "show", "ABCD2").stdout)["uuid"] == AMBIGUOUS[1]


def test_f_filters_every_list(site: Site, home: Path, images: dict[str, str]):
    r = site.xpresso("--json", "images", "list", "-f", "status=failed")
    assert r.returncode == 0, r.stderr
    assert [i["uuid"] for i in json.loads(r.stdout)] == [images["failed"]]
    r = site.xpresso("--json", "images", "list", "-f", "name=twin", "-f", "tag=two")
    assert [i["uuid"] for i in json.loads(r.stdout)] == [images["b"]]
    assert "status" in _error(site.xpresso("images", "list", "-f", "status=sleeping"))
    assert site.xpresso("harnesses", "add", "filtered-h", "--path", "/p", "--site", "F1").returncode == 0
    assert site.xpresso("harnesses", "edit", "filtered-h", "--site", "F2").returncode == 0
    r = site.xpresso("--json", "harnesses", "list", "-f", "site=F2")
    assert [h["name"] for h in json.loads(r.stdout)] == ["filtered-h"]
    r = site.xpresso("--json", "harnesses", "history", "filtered-h", "-f", "event=updated")
    assert r.returncode == 0, r.stderr
    assert [e["event"] for e in json.loads(r.stdout)] == ["updated"]
    assert "no field colour here" in _error(site.xpresso("harnesses", "history", "filtered-h", "-f", "colour=red"))
    assert "-f wants FIELD=VALUE" in _error(site.xpresso("engines", "list", "-f", "site"))


def test_pinned_reads_yes_no_or_dash_and_deleted_rows_are_marked(site: Site, home: Path, images: dict[str, str]):
    r = site.xpresso("images", "list", "--deleted", env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:] if line.strip()}
    pinned = r.stdout.splitlines()[0].split().index("pinned")

    def cells(image: str) -> list[str]:
        return rows[images[image]].split()

    assert cells("b")[pinned] == "yes"
    assert cells("a")[pinned] == "no"  # pin_version null: never pinned
    assert cells("failed")[pinned] == "-"  # no tar to keep
    assert "polaris-image (deleted)" in rows[images["old"]] and cells("old")[pinned + 1] == "-"
    assert "(deleted)" not in rows[images["new"]]
    assert site.xpresso("harnesses", "add", "gone-h", "--path", "/p").returncode == 0
    assert site.xpresso("harnesses", "rm", "gone-h").returncode == 0
    r = site.xpresso("harnesses", "list", "-f", "deleted=true", "-f", "name=gone-h")
    assert r.returncode == 0, r.stderr
    assert "gone-h (deleted)" in r.stdout


def test_images_show_prints_data_as_json(site: Site, home: Path):
    r = site.xpresso("build", "shown:v1", "--ref", "main", "--follow")
    assert r.returncode == 0, r.stderr
    r = site.xpresso("images", "show", "shown:v1")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    start = text.index("{", text.index("data"))
    data = json.JSONDecoder().raw_decode(text[start:])[0]
    assert data["name"] == "shown" and data["tag"] == "v1" and data["is_nfs_storage"] is True
    assert "'name'" not in text and "True" not in text  # no Python repr
    assert re.search(r"^pin_version\s+no\s*$", text, re.M)  # null: never pinned


def test_ids_are_never_cut_or_wrapped_at_70_columns(site: Site, home: Path, images: dict[str, str]):
    for i in range(2):
        name = f"a-harness-with-a-rather-long-name-number-{i}-for-narrow-terminals"
        assert site.xpresso("harnesses", "add", name, "--path", "/opt/pyats/some/long/path",
                            "--site", "OTT").returncode == 0
    harness_ids = [h["id"] for h in json.loads(site.xpresso("--json", "harnesses", "list").stdout)]
    image_ids = [i["uuid"] for i in json.loads(site.xpresso("--json", "images", "list").stdout)]
    for command, ids in ((["harnesses", "list"], harness_ids), (["images", "list"], image_ids),
                         (["engines", "list"], [])):
        r = site.xpresso(*command, env={"COLUMNS": "70"})
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert max(len(line) for line in lines) <= 70, r.stdout
        for record_id in ids:
            assert any(record_id in line for line in lines), (record_id, r.stdout)


def test_a_refused_group_is_explained_from_me(site: Site, home: Path):
    message = _error(site.xpresso("--group", "nope", "harnesses", "list"))
    assert message == "not a member of 'nope'; your groups: g1"
    message = _error(site.xpresso("harnesses", "list", user="bob", group=None))
    assert message.startswith("bob is in several groups: g1, g2; name one with --group G")
    message = _error(site.xpresso("harnesses", "add", "x-h", "--path", "/p", user="carol"))
    assert message == "You do not have permission to perform this action. (HTTP 403); your role in g1 is guest"
    message = _error(site.xpresso("login", site.url, "--token", site.tokens["bob"], "--group", "nope",
                                  user=None, group=None))
    assert message == "not a member of 'nope'; your groups: g1, g2"
    assert not (home / ".config" / "xpresso" / "config.yaml").exists()


def test_login_for_several_groups_lists_them_and_asks(site: Site, home: Path):
    path = home / ".config" / "xpresso" / "config.yaml"
    message = _error(site.xpresso("login", site.url, "--token", site.tokens["bob"], user=None, group=None))
    assert message == "bob is in several groups: g1, g2; name one with --group G"
    assert not path.exists()
    # on a terminal it asks
    out = _on_a_terminal([*CLIENT, "login", site.url, "--token", site.tokens["bob"]],
                         site.client_env(), answer_after="which one", answer="g2\n")
    assert "g1" in out and "g2" in out and "Logged in" in out, out
    assert yaml.safe_load(path.read_text())["group"] == "g2"
    me = json.loads(site.xpresso("whoami", "--json", user=None, group=None).stdout)
    assert (me["user"], me["group"]) == ("bob", "g2")


def _on_a_terminal(argv: list[str], env: dict[str, str], answer_after: str, answer: str) -> str:
    """Run ``argv`` with a pseudo-terminal as its stdin/stdout/stderr; type ``answer`` once the
    output shows ``answer_after``. All it printed."""
    main, child = pty.openpty()
    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    seen = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and answer_after.encode() in seen:
                os.write(main, answer.encode())
                answered = True
            if proc.poll() is not None and not ready:
                break
        assert proc.wait(timeout=30) == 0, seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    return seen.decode(errors="replace")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_complete_commands_and_options(site: Site, home: Path, shell: str, tmp_path: Path):
    r = site.xpresso("completion", shell, user=None, group=None)
    assert r.returncode == 0, r.stderr
    script = tmp_path / f"xpresso.{shell}"
    script.write_text(r.stdout)

    def complete(*words: str) -> set[str]:
        """What the script offers for the last of ``words`` (the command line typed so far)."""
        array = " ".join(f"'{w}'" for w in ("xpresso", *words))
        probe = (f'source {script}\nCOMP_WORDS=({array}); COMP_CWORD={len(words)}\n'
                 f'_xpresso; print -l -- "${{COMPREPLY[@]}}"\n' if shell == "zsh" else
                 f'source {script}\nCOMP_WORDS=({array}); COMP_CWORD={len(words)}\n'
                 f'_xpresso; printf "%s\\n" "${{COMPREPLY[@]}}"\n')
        argv = ["zsh", "-f", "-c", probe] if shell == "zsh" else ["bash", "--norc", "-c", probe]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"],
                                                                                  "HOME": str(home)})
        assert p.returncode == 0, p.stderr
        return {w for w in p.stdout.split() if w}

    assert {"harnesses", "images", "tokens", "completion", "login"} <= complete("")
    assert complete("im") == {"images"}
    assert complete("images", "") == {"list", "show", "pin", "unpin", "rm"}
    assert complete("images", "list", "--de") == {"--deleted", "--debug"}
    assert "--filter" in complete("harnesses", "list", "--")
    assert complete("--group", "g1", "tokens", "c") == {"create"}
    assert complete("login", "--p") == {"--password-stdin"}
    assert complete("completion", "") == {"bash", "zsh"}


def test_conditional_gets_answer_304_while_nothing_changed(site: Site, home: Path, images: dict[str, str]):
    """What the follow uses for the image's record and the polled log."""
    api = Api(site.url, site.tokens["alice"].split()[1], "g1")
    first = api.get_fresh("images", images["a"])
    assert api.get_fresh("images", images["a"]) == first and api.not_modified == 1
    log = api.conditional("images", images["a"], "logs", params={"offset": "0"})
    assert api.conditional("images", images["a"], "logs", params={"offset": "0"}) == log and api.not_modified == 2
    assert site.xpresso("images", "pin", images["a"]).returncode == 0
    assert api.get_fresh("images", images["a"])["pin_version"] is True and api.not_modified == 2
    assert site.xpresso("images", "unpin", images["a"]).returncode == 0


def _set_password(site: Site, user: str, password: str) -> None:
    p = subprocess.run([sys.executable, "-m", "xpresso_env.cli", "--config", str(site.config), "user",
                        "set-password", user, "--stdin"], input=password + "\n", capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr


def test_login_with_a_password_keeps_an_api_token_of_its_own_never_the_password(site: Site, home: Path):
    """CONTRACT section 13: sign in, make an API token named after the host, end the session,
    keep the token."""
    _set_password(site, "bob", "correct horse battery")
    path = home / ".config" / "xpresso" / "config.yaml"
    r = subprocess.run([*CLIENT, "login", site.url, "--user", "bob", "--password-stdin", "--group", "g1",
                        "--days", "7"], input="correct horse battery\n", capture_output=True, text=True, timeout=120,
                       env=site.client_env())
    assert r.returncode == 0, r.stderr
    assert "Logged in" in r.stderr and "bob" in r.stderr and "correct horse" not in r.stderr + r.stdout
    saved = yaml.safe_load(path.read_text())
    assert saved["group"] == "g1" and "correct horse" not in path.read_text()
    tokens = requests.get(f"{site.url}/api/v2/me/tokens", headers={"Authorization": f"Jwt {saved['token']}"},
                          timeout=30).json()
    api = [t for t in tokens if t["name"].startswith("xpresso on ")]
    assert len(api) == 1 and api[0]["name"] == f"xpresso on {_host()}" and api[0]["typ"] == "api", tokens
    assert [t["typ"] for t in tokens if t["typ"] == "session" and not t["revoked"]] == []  # the session ended
    created = datetime.fromisoformat(api[0]["created"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(api[0]["expires"].replace("Z", "+00:00"))
    assert abs((expires - created) - timedelta(days=7)) < timedelta(minutes=1)
    me = json.loads(site.xpresso("--json", "whoami", user=None, group=None).stdout)
    assert (me["user"], me["group"]) == ("bob", "g1")


def test_login_with_a_wrong_password_keeps_nothing(site: Site, home: Path):
    _set_password(site, "carol", "the right one")
    r = subprocess.run([*CLIENT, "login", site.url, "--user", "carol", "--password-stdin"], input="wrong\n",
                       capture_output=True, text=True, timeout=120, env=site.client_env())
    assert r.returncode == 1
    assert r.stderr.strip() == "xpresso: error: Invalid username or password. (HTTP 401)"
    assert not (home / ".config").exists()
    # no terminal and no --password-stdin: said plainly, nothing asked
    r = site.xpresso("login", site.url, "--user", "carol", user=None, group=None)
    assert _error(r) == "no terminal to ask the password on: pipe it with --password-stdin"
    # several groups, none named, off a terminal: told which, and the session is ended
    _set_password(site, "bob", "correct horse battery")
    r = subprocess.run([*CLIENT, "login", site.url, "--user", "bob", "--password-stdin"],
                       input="correct horse battery\n", capture_output=True, text=True, timeout=120,
                       env=site.client_env())
    assert _error(r) == "bob is in several groups: g1, g2; name one with --group G"
    assert not (home / ".config").exists()


def test_login_with_a_password_on_a_terminal_asks_for_it(site: Site, home: Path):
    _set_password(site, "carol", "typed on a terminal")
    out = _on_a_terminal([*CLIENT, "login", site.url, "--user", "carol"], site.client_env(),
                         answer_after="Password for carol", answer="typed on a terminal\n")
    assert "Logged in" in out and "typed on a terminal" not in out, out  # no echo
    assert json.loads(site.xpresso("--json", "whoami", user=None, group=None).stdout)["user"] == "carol"


def test_tokens_list_create_revoke(site: Site, home: Path):
    r = site.xpresso("tokens", "create", "ci-runner", "--days", "3", user="alice")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("Jwt ") and "shown this once" in r.stderr
    me = site.xpresso("--json", "whoami", env={"XPRESSO_TOKEN": token})
    assert me.returncode == 0 and json.loads(me.stdout)["user"] == "alice"
    listed = json.loads(site.xpresso("--json", "tokens", "list", "-f", "name=ci-runner").stdout)
    assert [t["name"] for t in listed] == ["ci-runner"] and "token" not in listed[0]
    table = site.xpresso("tokens", "list", env={"COLUMNS": "70"})
    assert table.returncode == 0 and listed[0]["jti"] in table.stdout, table.stdout
    assert site.xpresso("tokens", "revoke", listed[0]["jti"]).returncode == 0
    assert "Invalid token" in _error(site.xpresso("whoami", env={"XPRESSO_TOKEN": token}))
    revoked = json.loads(site.xpresso("--json", "tokens", "list", "-f", "revoked=true").stdout)
    assert listed[0]["jti"] in [t["jti"] for t in revoked]
    assert "(HTTP 404)" in _error(site.xpresso("tokens", "revoke", listed[0]["jti"], user="bob", group="g1"))


def _host() -> str:
    from xpresso_env.client.signin import token_name

    return token_name().removeprefix("xpresso on ")
