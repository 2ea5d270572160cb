"""The client's small parts without a server: step lines of each builder's log, token forms,
the config path; tables, filters, login's naming and group rule, completion scripts."""
from __future__ import annotations

import json

import pytest

from xpresso_env.client.config import ClientConfig, bare_token, config_path, resolve
from xpresso_env.client.errors import ClientError
from xpresso_env.client.follow import elapsed_text, step_of


@pytest.mark.parametrize("line, step", [
    ("2026-11-30T13:51:40.911218Z Step 2/3 : COPY hello.txt /hello.txt", (2, 3)),  # docker, classic builder
    ("Step 10/12 : RUN make", (10, 12)),
    ("2026-11-30T13:51:40.911218Z STEP 4/9: RUN pip install pyats", (4, 9)),  # buildah
    ("#5 [2/4] RUN echo hi", (2, 4)),  # BuildKit
    ("#7 [builder 3/5] COPY . /src", (3, 5)),  # BuildKit, a named stage
    ("2026-11-30T13:51:40.911218Z copied 1/2 files", None),
    ("#3 [internal] load metadata", None),
])
def test_step_of(line, step):
    assert step_of(line) == step


def test_elapsed_text():
    assert [elapsed_text(s) for s in (0, 59.9, 61, 3600 + 62)] == ["0:00", "0:59", "1:01", "1:01:02"]


def test_token_forms():
    assert bare_token("Jwt abc.def.ghi") == bare_token("bearer abc.def.ghi") == bare_token(" abc.def.ghi\n") \
        == "abc.def.ghi"
    with pytest.raises(ClientError):
        bare_token("Basic a b")


def test_config_path_and_precedence():
    assert str(config_path({"HOME": "/h"})) == "/h/.config/xpresso/config.yaml"
    assert str(config_path({"HOME": "/h", "XDG_CONFIG_HOME": "/x"})) == "/x/xpresso/config.yaml"
    saved = ClientConfig(url="http://file", token="f", group="gf")
    env = {"XPRESSO_URL": "http://env/", "XPRESSO_GROUP": "ge"}
    assert resolve({"group": "gflag"}, env, saved) == ClientConfig(url="http://env", token="f", group="gflag")
    with pytest.raises(ClientError):
        resolve({"url": "ftp://x"}, {}, saved)


def test_narrow_terminals_drop_columns_but_never_the_id():
    from xpresso_env.client.render import fitting

    record = {"name": "h1", "harness": "pyATS", "configuration_state": "ENABLED", "operational_state": "ONLINE",
              "site": "OTT", "bldg": "B1", "path": "/opt/pyats/24.3", "id": "5d2d4844-b667-4ac8-abd5-22910ed6e694"}
    assert fitting("harnesses", [record], 200) == ["name", "harness", "configuration_state", "operational_state",
                                                   "site", "bldg", "path", "id"]
    narrow = fitting("harnesses", [record], 80)
    assert "id" in narrow and "name" in narrow and "bldg" not in narrow
    assert fitting("harnesses", [record], 10)[-1] == "id"


def test_pinned_reads_yes_no_or_dash():
    from xpresso_env.client.render import pinned_cell

    ok = {"status": "successful", "is_deleted": False}
    assert [pinned_cell({**ok, "pin_version": v}) for v in (True, False, None)] == ["yes", "no", "no"]
    assert pinned_cell({**ok, "pin_version": True, "is_deleted": True}) == "-"  # nothing left to keep
    assert pinned_cell({"status": "building", "pin_version": None}) == "-"


def test_structured_values_show_as_json():
    from xpresso_env.client.render import as_json

    data = "{'name': 'polaris', 'tag': 'v1', 'is_nfs_storage': True, 'retention_day': 6}"
    assert json.loads(as_json(data)) == {"name": "polaris", "tag": "v1", "is_nfs_storage": True, "retention_day": 6}
    assert as_json({"a": [1, None]}) == '{\n  "a": [\n    1,\n    null\n  ]\n}'
    assert as_json("plain text") is None and as_json("{not python") is None and as_json(["a"]) is None


def test_filters_and_client_side_matching():
    from xpresso_env.client.main import filters, matching

    assert filters(["site=OTT", "name=a=b"]) == {"site": "OTT", "name": "a=b"}
    with pytest.raises(ClientError, match="FIELD=VALUE"):
        filters(["site"])
    rows = [{"event": "created", "ok": True}, {"event": "updated", "ok": False}]
    assert matching(rows, {"event": "updated"}) == [rows[1]]
    assert matching(rows, {"ok": "true"}) == [rows[0]]
    with pytest.raises(ClientError, match="no field colour here; fields: event, ok"):
        matching(rows, {"colour": "red"})


def test_the_login_token_is_named_after_the_host_and_the_group_is_settled():
    from xpresso_env.client.signin import settle_group, token_name

    assert token_name("build-host.example.com") == "xpresso on build-host.example.com"
    assert token_name("we ird/host") == "xpresso on we-ird-host" and len(token_name("h" * 300)) == 100
    me = {"user": "bob", "superuser": False, "groups": {"g2": "member", "g1": "member"}}
    assert settle_group(me, "g2", None) == "g2"
    with pytest.raises(ClientError, match=r"^not a member of 'nope'; your groups: g1, g2$"):
        settle_group(me, "nope", None)
    with pytest.raises(ClientError, match=r"^bob is in several groups: g1, g2; name one with --group G$"):
        settle_group(me, None, None)
    asked = []
    assert settle_group(me, None, lambda q, choices: asked.append(choices) or "g1") == "g1"
    assert asked == [["g1", "g2"]]
    assert settle_group({"user": "carol", "groups": {"g1": "guest"}}, None, None) is None  # the server's fallback


def test_completion_scripts_are_valid_shell():
    import shutil
    import subprocess

    from xpresso_env.client.completion import bash_script, zsh_script
    from xpresso_env.client.parser import build_parser

    for shell, text in (("bash", bash_script(build_parser())), ("zsh", zsh_script(build_parser()))):
        assert shutil.which(shell), f"{shell} is installed by .ci/run"
        p = subprocess.run([shell, "-n"], input=text, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert "complete -F _xpresso xpresso" in text
        for command in ("harnesses", "images", "tokens", "completion", "--password-stdin", "--filter"):
            assert command in text
