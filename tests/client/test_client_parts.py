"""The client's small parts without a server: step lines of each builder's log, token forms,
the config path."""
from __future__ import annotations

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
