"""The `xpresso` client (CONTRACT section 12) against a real server on loopback: login file,
settings precedence, tables and --json, errors, builds on the dry-run builder (exit codes,
plain followed logs), and resuming a followed log after the connection drops (a real TCP proxy
between client and server, which the test cuts)."""
from __future__ import annotations

import json
import re
import socket
import stat
import threading
from pathlib import Path

import pytest
import yaml

from tests.client.conftest import Site
from xpresso_env.testing.server import cli, free_port

pytestmark = pytest.mark.slow  # a real serve and the client as a subprocess in every test


def test_login_keeps_url_token_and_group_in_a_0600_file(site: Site, home: Path):
    token = site.tokens["alice"]
    r = site.xpresso("login", site.url + "/", "--token", token, "--group", "g1", user=None, group=None)
    assert r.returncode == 0, r.stderr
    assert "alice" in r.stderr and "g1" in r.stderr
    path = home / ".config" / "xpresso" / "config.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text()) == {"url": site.url, "token": token.split()[1], "group": "g1"}
    r = site.xpresso("whoami", user=None, group=None)
    assert r.returncode == 0, r.stderr
    assert "alice at " + site.url in r.stdout and "* g1: group_admin" in r.stdout
    # a bare token works as well, and a new login replaces the file (still 0600); a user of
    # several groups names one (off a terminal, a login without --group is refused: see
    # test_client_console.py)
    r = site.xpresso("login", site.url, "--token", site.tokens["bob"].split()[1], "--group", "g2",
                     user=None, group=None)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(path.read_text())["group"] == "g2"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    me = json.loads(site.xpresso("whoami", "--json", user=None, group=None).stdout)
    assert {k: me[k] for k in ("user", "superuser", "groups", "group", "permissions")} == {
        "user": "bob", "superuser": False, "groups": {"g1": "member", "g2": "member"}, "group": "g2",
        "permissions": ["add_docker_image"]}
    # carol has one group: none is named, the server takes it
    r = site.xpresso("login", site.url, "--token", site.tokens["carol"], user=None, group=None)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(path.read_text())["group"] is None


def test_login_refuses_a_bad_token_and_keeps_nothing(site: Site, home: Path):
    r = site.xpresso("login", site.url, "--token", "Jwt not-a-token", user=None, group=None)
    assert r.returncode == 1
    assert r.stderr.strip() == "xpresso: error: Invalid token. (HTTP 401)"
    assert not (home / ".config" / "xpresso" / "config.yaml").exists()


def test_xdg_config_home_is_respected(site: Site, home: Path, tmp_path: Path):
    xdg = tmp_path / "xdg"
    r = site.xpresso("login", site.url, "--token", site.tokens["alice"], user=None, group=None,
                     env={"XDG_CONFIG_HOME": str(xdg)})
    assert r.returncode == 0, r.stderr
    assert (xdg / "xpresso" / "config.yaml").exists()
    assert not (home / ".config").exists()


def test_flags_beat_environment_beats_file(site: Site, home: Path):
    assert site.xpresso("login", site.url, "--token", site.tokens["bob"], "--group", "g2",
                        user=None, group=None).returncode == 0

    def who(*args: str, env=None) -> dict:
        r = site.xpresso("whoami", "--json", *args, user=None, group=None, env=env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    assert (who()["user"], who()["group"]) == ("bob", "g2")  # the file
    env = {"XPRESSO_TOKEN": site.tokens["alice"], "XPRESSO_GROUP": "g1"}
    assert (who(env=env)["user"], who(env=env)["group"]) == ("alice", "g1")  # environment over file
    me = who("--token", site.tokens["carol"], env=env)  # flag over environment
    assert (me["user"], me["group"], me["permissions"]) == ("carol", "g1", [])
    me = who("--group", "g1")  # a flag for one setting, the file for the others
    assert (me["user"], me["group"]) == ("bob", "g1")
    # the URL too: a flag pointing nowhere wins over the file
    port = free_port()
    r = site.xpresso("whoami", "--url", f"http://127.0.0.1:{port}", user=None, group=None)
    assert r.returncode == 1 and f"http://127.0.0.1:{port}" in r.stderr


def test_harness_and_engine_commands_tables_and_json(site: Site, home: Path):
    r = site.xpresso("harnesses", "add", "cli-h1", "--path", "/opt/pyats", "--site", "OTT")
    assert r.returncode == 0, r.stderr
    assert re.search(r"name\s+cli-h1", r.stdout) and re.search(r"site\s+OTT", r.stdout)
    added = json.loads(site.xpresso("harnesses", "show", "cli-h1", "--json").stdout)
    assert added["path"] == "/opt/pyats" and added["created_by"] == "alice"
    r = site.xpresso("harnesses", "edit", "cli-h1", "--config-state", "MAINTENANCE", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["configuration_state"] == "MAINTENANCE"
    # the list: a table with a header and the record's row; --json is the API's own array
    r = site.xpresso("harnesses", "list", "-f", "site=OTT")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "harness", "config", "state"]
    row = next(line for line in lines if line.startswith("cli-h1"))
    cells = row.split()
    assert cells[:3] == ["cli-h1", "pyATS", "MAINTENANCE"] and cells[3] in ("ONLINE", "OFFLINE", "UNKNOWN")
    assert cells[4:7] == ["OTT", "-", "/opt/pyats"]  # site, bldg (none), path
    assert added["id"] in r.stdout
    listed = json.loads(site.xpresso("harnesses", "list", "--json", "-f", "name=cli-h1").stdout)
    assert listed == [site.api("GET", f"harnesses/{added['id']}").json()]
    # show by id too
    assert json.loads(site.xpresso("--json", "harnesses", "show", added["id"]).stdout)["name"] == "cli-h1"
    # engines: credentials are sent, never shown
    r = site.xpresso("engines", "add", "cli-e1", "--base-url", "http://127.0.0.1:9/", "--username", "u",
                     "--api-token", "secret-token-123", "--json")
    assert r.returncode == 0, r.stderr
    engine = json.loads(r.stdout)
    assert "api_token" not in engine and "secret-token-123" not in r.stdout
    assert site.xpresso("engines", "rm", "cli-e1").returncode == 0
    r = site.xpresso("engines", "show", "cli-e1")
    assert r.returncode == 1 and r.stderr.strip() == "xpresso: error: no engine named 'cli-e1' in group g1"
    assert site.xpresso("harnesses", "rm", added["id"]).returncode == 0
    assert json.loads(site.xpresso("harnesses", "list", "--json", "-f", "name=cli-h1").stdout) == []


def test_api_errors_are_one_line_and_exit_1(site: Site, home: Path):
    # a field error: the field and the API's message, one line
    r = site.xpresso("harnesses", "add", "bad-h", "--path", "relative/path")
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("xpresso: error: path: ") and "(HTTP 400)" in r.stderr
    # a detail: permission, as the API says it
    r = site.xpresso("harnesses", "add", "x-h", "--path", "/p", user="carol")
    assert r.returncode == 1
    assert r.stderr.strip() == ("xpresso: error: You do not have permission to perform this action. (HTTP 403); "
                                "your role in g1 is guest")
    # two groups and none named: the API's 400, explained with the groups
    r = site.xpresso("harnesses", "list", user="bob", group=None)
    assert r.returncode == 1 and "bob is in several groups: g1, g2; name one with --group G" in r.stderr
    # a query value the API refuses
    r = site.xpresso("images", "list", "--limit", "0")
    assert r.returncode == 1 and "limit" in r.stderr and "Traceback" not in r.stderr
    # no server configured at all
    r = site.xpresso("whoami", user=None, group=None)
    assert r.returncode == 1 and "xpresso login" in r.stderr


def test_connection_refused_names_the_url_and_debug_shows_a_traceback(site: Site, home: Path):
    url = f"http://127.0.0.1:{free_port()}"
    r = site.xpresso("images", "list", env={"XPRESSO_URL": url})
    assert r.returncode == 1
    assert r.stderr.strip() == f"xpresso: error: cannot connect to {url}: connection refused"
    assert "Traceback" not in r.stderr
    r = site.xpresso("--debug", "images", "list", env={"XPRESSO_URL": url})
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"xpresso: error: cannot connect to {url}: connection refused"


def test_build_follow_successful_exits_0_with_the_plain_log(site: Site, home: Path):
    r = site.xpresso("build", "cli-ok:v1", "--ref", "main", "--follow")
    assert r.returncode == 0, r.stderr
    image_id = re.search(r"as ([0-9a-f-]{36})", r.stderr).group(1)
    record = site.image(image_id)
    assert record["status"] == "successful"
    # not a terminal: stdout is exactly the build's log, status lines go to stderr
    assert r.stdout == site.log(image_id)
    assert "dry-run builder" in r.stdout
    assert "cli-ok:v1 successful" in r.stderr
    # images: table, show, pin, unpin, --json
    r = site.xpresso("images", "list", "--name", "cli-ok")
    assert r.returncode == 0 and image_id in r.stdout and "successful" in r.stdout
    assert json.loads(site.xpresso("images", "pin", image_id, "--json").stdout)["pin_version"] is True
    r = site.xpresso("images", "unpin", image_id)
    assert r.returncode == 0 and re.search(r"pin_version\s+no", r.stdout)
    assert json.loads(site.xpresso("images", "show", image_id, "--json").stdout) == site.image(image_id)
    # logs without --follow: the log as it is; with --follow on an ended build: the same, exit 0
    assert site.xpresso("logs", image_id).stdout == site.log(image_id)
    r = site.xpresso("logs", image_id, "--follow")
    assert r.returncode == 0 and r.stdout == site.log(image_id)
    # --json: only the final record on stdout, the log on stderr
    r = site.xpresso("build", "cli-ok:v2", "--ref", "main", "--follow", "--json")
    assert r.returncode == 0, r.stderr
    final = json.loads(r.stdout)
    assert final["status"] == "successful" and "dry-run builder" in r.stderr
    assert site.xpresso("images", "rm", final["uuid"]).returncode == 0
    assert site.image(final["uuid"])["is_deleted"] is True


def test_build_follow_failed_exits_non_zero(site: Site, home: Path):
    r = site.xpresso("build", "cli-bad:v1", "--ref", "no-such-branch", "--follow")
    assert r.returncode == 1, r.stderr
    image_id = re.search(r"as ([0-9a-f-]{36})", r.stderr).group(1)
    assert site.image(image_id)["status"] == "failed"
    assert "cli-bad:v1 failed" in r.stderr
    assert r.stdout == site.log(image_id)
    r = site.xpresso("logs", image_id, "--follow")
    assert r.returncode == 1
    # cancel of an ended build: the API's 409 detail
    r = site.xpresso("cancel", image_id)
    assert r.returncode == 1 and "(HTTP 409)" in r.stderr


def test_build_without_follow_and_group_share(site: Site, home: Path):
    r = site.xpresso("build", "cli-share:v1", "--ref", "main", "--group-share", "g2", "--json", user="bob")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["status"] == "building" and record["group"] == "g1"
    site.wait(record["uuid"])
    r = site.xpresso("images", "list", "--json", user="bob", group="g2")
    assert record["uuid"] in [i["uuid"] for i in json.loads(r.stdout)]
    r = site.xpresso("build", "nocolon", "--ref", "main")
    assert r.returncode == 1 and "NAME:TAG" in r.stderr


class CuttableProxy:
    """A real TCP proxy on loopback in front of the server. The first answer to a log request
    is cut, both sockets closed, once it has carried ``cut_after``
    bytes (as a restarted load balancer or a dropped network would); everything else is carried
    whole."""

    def __init__(self, target_port: int, cut_after: int):
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            state = {"request": b"", "follow": False}
            threading.Thread(target=self._pipe, args=(client, upstream, state, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, state, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, state: dict, answer: bool) -> None:
        carried = 0
        try:
            while True:
                data = src.recv(1)  # byte by byte: the cut lands inside the streamed log
                if not data:
                    break
                if not answer:
                    state["request"] = (state["request"] + data)[-64:]
                    state["follow"] = state["follow"] or b"/logs" in state["request"]
                dst.sendall(data)
                if answer and state["follow"] and self.cuts == 0:
                    carried += 1
                    if carried >= self.cut_after:
                        self.cuts += 1
                        break
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._stop = True
        self.listener.close()


def test_logs_follow_resumes_after_a_dropped_connection(site: Site, home: Path):
    image_id = json.loads(site.xpresso("build", "cli-resume:v1", "--ref", "main", "--json").stdout)["uuid"]
    site.wait(image_id)
    full = site.log(image_id)
    assert len(full.encode()) > 300
    # The followed answer is cut after its headers (under 200 bytes) and part of the log; the
    # client reads again from the byte it had, and prints the log exactly once.
    proxy = CuttableProxy(site.server.port, cut_after=200 + len(full.encode()) // 2)
    try:
        r = site.xpresso("logs", image_id, "--follow", env={"XPRESSO_URL": f"http://127.0.0.1:{proxy.port}"})
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert r.returncode == 0, r.stderr
    assert r.stdout == full
    assert "connection lost, resuming at byte" in r.stderr


def test_history_and_state(site: Site, home: Path):
    r = site.xpresso("harnesses", "add", "cli-hist", "--path", "/nowhere/pyats", "--json")
    assert r.returncode == 0, r.stderr
    harness = json.loads(r.stdout)
    assert site.xpresso("harnesses", "edit", "cli-hist", "--site", "SJC").returncode == 0
    r = site.xpresso("harnesses", "history", "cli-hist", "--json")
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)
    assert entries == site.api("GET", f"harnesses/{harness['id']}/history").json()
    assert [e["event"] for e in entries if e["event"] != "state"][:2] == ["created", "updated"]
    r = site.xpresso("harnesses", "history", "cli-hist")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == ["at", "event", "by", "changes", "reason"]
    assert re.search(r'updated\s+alice\s+site: "" -> SJC', r.stdout), r.stdout
    r = site.xpresso("harnesses", "state", harness["id"], "--json")
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)
    assert state["operational_state"] in ("ONLINE", "OFFLINE", "UNKNOWN")
    r = site.xpresso("harnesses", "state", "cli-hist")
    assert r.returncode == 0 and re.search(r"operational_state\s+(ONLINE|OFFLINE|UNKNOWN)", r.stdout), r.stdout
    r = site.xpresso("engines", "history", "no-such-engine")
    assert r.returncode == 1 and "no engine named 'no-such-engine'" in r.stderr


def test_login_takes_the_token_as_token_create_prints_it(site: Site, home: Path):
    """`xpresso-env token create`'s output as it is: its last line (`Jwt ...`), or both lines
    (`--token "$(xpresso-env token create carol)"`)."""
    output = cli(site.config, "token", "create", "carol").stdout
    lines = output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("token for carol") and lines[1].startswith("Jwt ")
    path = home / ".config" / "xpresso" / "config.yaml"
    for given in (lines[-1], output):
        path.unlink(missing_ok=True)
        r = site.xpresso("login", site.url, "--token", given, user=None, group=None)
        assert r.returncode == 0, r.stderr
        assert yaml.safe_load(path.read_text())["token"] == lines[1].split()[1]
        assert json.loads(site.xpresso("whoami", "--json", user=None, group=None).stdout)["user"] == "carol"
    # the same forms in XPRESSO_TOKEN
    r = site.xpresso("whoami", "--json", user=None, group=None, env={"XPRESSO_URL": site.url, "XPRESSO_TOKEN": output})
    assert r.returncode == 0 and json.loads(r.stdout)["user"] == "carol", r.stderr
    r = site.xpresso("login", site.url, "--token", "Basic a b", user=None, group=None)
    assert r.returncode == 1 and r.stderr.strip() == "xpresso: error: the token should be `Jwt <token>` or the bare token"


def test_engine_commands_list_show_edit_history_state(site: Site, home: Path):
    r = site.xpresso("engines", "add", "cli-e2", "--base-url", "http://127.0.0.1:9/", "--site", "RTP", "--json")
    assert r.returncode == 0, r.stderr
    engine = json.loads(r.stdout)
    assert engine["type"] == "jenkins"
    r = site.xpresso("engines", "edit", engine["id"], "--name", "cli-e2b", "--bldg", "B7", "--json")
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["name"], json.loads(r.stdout)["bldg"]) == ("cli-e2b", "B7")
    r = site.xpresso("engines", "list", "-f", "name=cli-e2b")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "type", "config", "state"]
    assert lines[1].split()[:3] == ["cli-e2b", "jenkins", "ENABLED"] and engine["id"] in lines[1]
    r = site.xpresso("engines", "show", "cli-e2b")
    assert r.returncode == 0 and re.search(r"bldg\s+B7", r.stdout), r.stdout
    r = site.xpresso("engines", "history", "cli-e2b", "--json")
    assert r.returncode == 0, r.stderr
    events = [e for e in json.loads(r.stdout) if e["event"] != "state"]
    assert [e["event"] for e in events][:2] == ["created", "updated"]
    assert events[1]["changes"]["name"] == ["cli-e2", "cli-e2b"]
    r = site.xpresso("engines", "state", "cli-e2b", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["operational_state"] in ("ONLINE", "OFFLINE", "UNKNOWN")
    r = site.xpresso("engines", "edit", "cli-e2b")
    assert r.returncode == 1 and "nothing to change" in r.stderr
    assert site.xpresso("engines", "rm", "cli-e2b").returncode == 0


def test_tables_fit_the_terminal_width(site: Site, home: Path):
    """$COLUMNS is the width rich sees: a narrow one drops columns (bldg first) and folds, never
    wider than the terminal, the id kept whole; a wide one shows every column."""
    r = site.xpresso("harnesses", "add", "cli-wide", "--path", "/opt/pyats/a/rather/long/installation/path",
                     "--site", "SITE-OTT", "--bldg", "BLDG-22", "--json")
    assert r.returncode == 0, r.stderr
    harness_id = json.loads(r.stdout)["id"]
    wide = site.xpresso("harnesses", "list", "-f", "name=cli-wide", env={"COLUMNS": "200"})
    assert wide.returncode == 0, wide.stderr
    assert wide.stdout.splitlines()[0].split() == ["name", "harness", "config", "state", "site", "bldg", "path", "id"]
    assert "BLDG-22" in wide.stdout and harness_id in wide.stdout
    for columns in (100, 72):
        narrow = site.xpresso("harnesses", "list", "-f", "name=cli-wide", env={"COLUMNS": str(columns)})
        assert narrow.returncode == 0, narrow.stderr
        lines = narrow.stdout.splitlines()
        assert max(len(line) for line in lines) <= columns, narrow.stdout
        assert "bldg" not in lines[0].split() and "BLDG-22" not in narrow.stdout
        assert harness_id in narrow.stdout  # whole, on one line
    assert site.xpresso("harnesses", "rm", harness_id).returncode == 0


def test_build_with_a_base_ref_merges_it(site: Site, home: Path):
    # steps and extra both branch off main: a real 3-way merge (dry-run: checkout and merge are real)
    r = site.xpresso("build", "cli-base:v1", "--ref", "steps", "--base", "extra", "--follow")
    assert r.returncode == 0, r.stderr
    image_id = re.search(r"as ([0-9a-f-]{36})", r.stderr).group(1)
    record = site.image(image_id)
    assert record["status"] == "successful" and record["base_ref"] == "extra"
    assert re.search(r"merge of extra into steps: merged", r.stdout), r.stdout
    r = site.xpresso("build", "cli-base:v2", "--ref", "main", "--base", "no-such-base", "--follow")
    assert r.returncode == 1 and "cli-base:v2 failed" in r.stderr
