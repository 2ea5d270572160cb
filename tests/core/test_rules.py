"""Rules written once (issue 15, "one source per rule"), held to every place that uses them.

The git-ref grammar has its own tests against git (tests/builders/test_workspace.py) and the
OpenAPI document (tests/api/test_wire_shapes.py); these cover the rules that had no direct test:
the group and user name grammar, the Docker name grammar of registry namespaces, the ``/state``
shape, the one renderer behind API answers and webhook payloads, and the index rules the YAML
backend derives its columns with.
"""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import jsonschema_rs
import pytest
from xpresso_env_plugins.storage_yaml import format as yaml_format

from xpresso_env.access.auth import check_name
from xpresso_env.builds.service import SUBMIT_VALIDATORS
from xpresso_env.core import render, wire
from xpresso_env.core.codec import record_body, to_doc
from xpresso_env.core.documents import INDEX_RULES
from xpresso_env.core.errors import ValidationError
from xpresso_env.core.models import (
    RECORD_TYPES,
    AuditEntry,
    Engine,
    EngineType,
    Group,
    Harness,
    HarnessType,
    Image,
    LoginFailures,
    Revocation,
    Role,
    TokenRecord,
    User,
)
from xpresso_env.core.push_address import render_namespace
from xpresso_env.core.validation import FieldError
from xpresso_env.probes.state import ProbeState, describe, fingerprint
from xpresso_env.storage import Doc

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)

# --------------------------------------------------------------------------- group and user names

NAMES = ["a", "alice", "Team-1", "a.b@c+d_e", "9", "x" * 128, "x" * 129, "", "-a", ".a", "_a", "a b", " a", "a ",
         "a\n", "a\t", "é", "a/b", "a:b", "a,b", "a\x00"]


def _accepted(rule: Any, value: Any) -> bool:
    try:
        rule(value)
    except (ValidationError, FieldError):
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_every_check_of_a_group_or_user_name_is_the_one_grammar(name):
    expected = wire.ACCOUNT_NAME.matches(name)
    assert _accepted(lambda v: check_name("group", v), name) is expected
    # The groups an image is shared with, and what the document says of them and of the Group header.
    assert _accepted(SUBMIT_VALIDATORS["groups"], [name]) is expected
    assert jsonschema_rs.validator_for(wire.ACCOUNT_NAME.schema()).is_valid(name) is expected


def test_a_name_with_a_trailing_newline_is_refused():
    """The old ``re.match`` with ``$`` let ``alice\\n`` through the CLI and fixtures, not the API."""
    with pytest.raises(ValidationError) as caught:
        check_name("user", "alice\n")
    assert caught.value.fields == {"user": [wire.ACCOUNT_NAME.message]}


# --------------------------------------------------------------------------- Docker names

@pytest.mark.parametrize("group", ["team", "Team", "a.b", "a_b", "a__b", "a-b", "a--b", "a___b", "a..b", "a_",
                                   "_a", "a.", "a/b", "a//b", "a b", "é"])
def test_a_registry_namespace_is_a_repository_path_of_the_image_name_grammar(group):
    """registry.namespace renders to path components of the grammar a submitted image name is
    checked with (wire.IMAGE_NAME): one grammar for both."""
    rendered = f"ns/{group}".lower()
    try:
        assert render_namespace("ns/{group}", group) == rendered
        accepted = True
    except ValueError:
        accepted = False
    assert accepted is wire.IMAGE_NAME.matches(rendered), rendered


# --------------------------------------------------------------------------- /state

def _harness(**kw: Any) -> dict[str, Any]:
    return record_body(Harness(id=uuid.uuid4(), group="g", name="h", harness=HarnessType.PYATS, path="/p",
                               created_by="u", date_created=T0, date_modified=T0, **kw))


def _states() -> list[dict[str, Any]]:
    body = _harness()
    doc = Doc(kind="harness", id=body["id"], group="g", name="h", deleted=False, created=body["date_created"],
              body=body)
    probed = ProbeState.fresh(doc, "harness", T0)
    # last_probe as probes/service.py writes it
    probed = probed.but(operational_state="ONLINE", since="2024-05-01T10:00:01.000000Z", reason="pyATS 24.3",
                        last_probe={"at": "2024-05-01T10:00:01.000000Z", "ok": True, "latency_ms": 1.5,
                                    "detail": "pyATS 24.3", "version": "24.3"},
                        consecutive_successes=1, target=fingerprint("harness", body))
    online = {**body, "operational_state": "ONLINE"}
    return [describe("harness", body, None, True), describe("harness", body, None, False),
            describe("harness", online, probed, True), describe("harness", {**online, "configuration_state": "DISABLED"},
                                                             probed, True)]


def test_the_state_answer_has_exactly_the_wire_shape():
    validator = jsonschema_rs.validator_for(wire.PROBE_STATE.schema())
    answers = _states()
    assert answers[2]["last_probe"] is not None
    for answer in answers:
        assert tuple(answer) == wire.PROBE_STATE.keys
        validator.validate(answer)
        if answer["last_probe"] is not None:
            assert tuple(answer["last_probe"]) == wire.LAST_PROBE.keys


# --------------------------------------------------------------------------- the one renderer

def _image(**kw: Any) -> Image:
    return Image(id=uuid.uuid4(), group="g", name="polaris", tag="1", git_ref="main", submitter="u",
                 nfs_path="/nfs/p.tar", retention_day=6, date_created=T0, date_updated=T0, **kw)


def test_a_webhook_payload_is_the_record_the_api_answers():
    harness = _harness()
    engine = record_body(Engine(id=uuid.uuid4(), group="g", name="e", type=EngineType.JENKINS,
                                base_url="https://j", created_by="u", date_created=T0, date_modified=T0,
                                username="bot", api_token="secret"))
    image = _image(groups=("g2",), meta={"push_url": "r/x@sha256:0"})
    assert render.record_v2("harness", harness) == render.harness_v2(harness)
    assert render.record_v2("engine", engine) == render.engine_v2(engine)
    assert "api_token" not in render.record_v2("engine", engine)
    assert render.record_v2("image", record_body(image)) == render.image_v2(image)
    with pytest.raises(ValueError):
        render.record_v2("group", {})


def test_a_body_lacking_a_key_renders_it_as_null_or_its_default():
    body = _harness()
    del body["site"], body["support_liveview"]
    assert render.harness_v2(body)["site"] is None
    assert render.harness_v1(body)["support_liveview"] is False
    assert tuple(render.harness_v1(body)) == wire.HARNESS_V1.keys


# --------------------------------------------------------------------------- index rules

def _records() -> list[Any]:
    return [Group(name="g", date_created=T0),
            User(name="alice", date_created=T0, roles={"g": Role.MEMBER}),
            User(name="bob", date_created=T0, deleted=True),
            Revocation(jti="0123456789abcdef", date_created=T0, user="alice"),
            TokenRecord(id="feedface", user="alice", date_created=T0, expires=T0 + timedelta(days=1)),
            Harness(id=uuid.uuid4(), group="g", name="h", harness=HarnessType.PYATS, path="/p", created_by="u",
                    date_created=T0, date_modified=T0, deleted=True),
            Engine(id=uuid.uuid4(), group="g", name="e", type=EngineType.CLOUD, base_url="https://c",
                   created_by="u", date_created=T0, date_modified=T0),
            _image(groups=("z", "g", "a", "z"), is_deleted=True),
            AuditEntry(id="a1", date_created=T0, event="login", user="alice", by="alice", address="127.0.0.1"),
            LoginFailures(name="alice", times=[1.5, 2.5], date_created=T0)]


def test_every_record_kind_has_a_sample_here():
    assert {type(r).KIND for r in _records()} == set(RECORD_TYPES)
    assert set(INDEX_RULES) <= set(RECORD_TYPES)


@pytest.mark.parametrize("record", _records(), ids=lambda r: type(r).KIND)
def test_the_yaml_file_derives_the_index_columns_codec_builds(record):
    """codec.to_doc and the yaml backend read a kind's columns from the same rules, so a record's
    body is all the file needs (no ``_index`` override)."""
    # as the backend keeps it: visible groups sorted, without repeats
    doc = to_doc(record)
    doc = replace(doc, visible=yaml_format.normalize_visible(doc.visible, doc.group))
    version = yaml_format.SCHEMA_VERSION
    assert yaml_format.derive(doc.kind, doc.body, version) == (doc.id, doc.group, doc.name, doc.deleted,
                                                              doc.created, doc.visible)
    assert yaml_format.to_record(doc, version) is doc.body
    assert yaml_format.from_record(doc.kind, doc.body, version, "records", 0) == doc
