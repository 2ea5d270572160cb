"""One source per wire shape: the records the API sends and the document describes come from the
tables in xpresso_env/core/wire.py, and every body field's rule accepts exactly what the schema it
states allows (checked with jsonschema-rs, the ECMA-262 reading the document is written for)."""
from __future__ import annotations

import string
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xpresso_env.builds.service import PATCH_VALIDATORS, SUBMIT_VALIDATORS
from xpresso_env.builds.workspace import validate_ref
from xpresso_env.core import render, wire
from xpresso_env.core.errors import ValidationError
from xpresso_env.core.validation import FieldError, GitRef, Nullable, Rule, Text
from xpresso_env.http.openapi import SCHEMAS, build_openapi
from xpresso_env.registry.service import ENGINE, HARNESS

SETTINGS = settings(max_examples=200, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))
RULES: dict[str, Rule] = {
    **{f"harness.{k}": r for k, r in HARNESS.fields.items()},
    **{f"engine.{k}": r for k, r in ENGINE.fields.items()},
    **{f"image.{k}": r for k, r in SUBMIT_VALIDATORS.items()},
    **{f"image_patch.{k}": r for k, r in PATCH_VALIDATORS.items()},
}
# Characters that sit on the edges of the grammars: controls, spaces of every kind, URL and ref
# delimiters, non-ASCII letters.
EDGE_ALPHABET = (string.ascii_letters + string.digits + " ./:-_@~^?*[]\\{}#%+!$&'()=,;\t\n\x00\x1f\x7f\x85\xa0"
                 "\u1680\u2000\u2028\u2029\u3000\ufeffé日")


def _accepts(rule: Rule, value: Any) -> bool:
    try:
        rule(value)
    except FieldError:
        return False
    return True


# Docker names drawn by parts: st.from_regex on the nested grammar is slow.
_COMPONENT = st.builds(lambda parts, seps: "".join(p + s for p, s in zip(parts, seps + [""])),
                       st.lists(st.from_regex(r"[a-z0-9]{1,4}", fullmatch=True), min_size=1, max_size=3),
                       st.lists(st.sampled_from([".", "_", "__", "-", "---"]), max_size=2))
DOCKER_NAMES = st.lists(_COMPONENT, min_size=1, max_size=3).map("/".join)


def _pattern_values(rule: Rule) -> st.SearchStrategy[Any]:
    inner = rule.inner if isinstance(rule, Nullable) else rule
    if isinstance(inner, Text) and inner.grammar is wire.IMAGE_NAME:
        return DOCKER_NAMES
    if isinstance(inner, Text):
        return st.from_regex(inner.grammar.regex, fullmatch=True)
    if isinstance(inner, GitRef):
        return st.from_regex(wire.GIT_REF.regex, fullmatch=True)
    return st.nothing()


def _values(rule: Rule) -> st.SearchStrategy[Any]:
    near = _pattern_values(rule).flatmap(
        lambda v: st.sampled_from([v, v + " ", " " + v, v + ".", v + "/", "-" + v, v * 3, v[:-1], v.upper()]))
    return st.one_of(near, st.text(EDGE_ALPHABET, max_size=40), st.text(max_size=20), st.none(), st.booleans(),
                     st.integers(), st.lists(st.text(EDGE_ALPHABET, max_size=8), max_size=3),
                     st.sampled_from([e.value for e in _enums()]))


def _enums() -> list:
    from xpresso_env.core.models import ConfigurationState, EngineType, HarnessType

    return [*ConfigurationState, *EngineType, *HarnessType]


@pytest.mark.parametrize("name", sorted(RULES))
def test_each_rule_accepts_exactly_what_its_schema_allows(name):
    rule = RULES[name]
    validator = jsonschema_rs.validator_for(rule.schema())

    @SETTINGS
    @given(value=_values(rule))
    def check(value: Any) -> None:
        assert _accepts(rule, value) == validator.is_valid(value), (name, value)

    check()


TRICKY_REFS = ["main", "a.lock", "a.lock/b", "a/b.lock", "a/.b", ".a", "@", "a@b", "a@{b", "a..b", "-a", "a-", "a.",
               "a//b", "/a", "a/", "x" * 255, "x" * 256, "abcdef1", "ABCDEF0123", "a~1", "a^", "a:b", "a?", "a*",
               "a[b", "a\\b", "a b", "a\x7f", "é", "a\u2028b"]


@SETTINGS
@given(value=st.one_of(st.sampled_from(TRICKY_REFS), st.from_regex(wire.GIT_REF.regex, fullmatch=True),
                       st.text(EDGE_ALPHABET, max_size=30), st.from_regex(r"[0-9a-f]{7,40}", fullmatch=True)))
@pytest.mark.slow
def test_the_git_ref_grammar_is_the_one_git_commands_are_checked_with(value):
    """workspace.validate_ref guards every git call; the document's grammar must say the same."""
    try:
        validate_ref("git_ref", value)
        checked = True
    except ValidationError:
        checked = False
    assert checked == wire.GIT_REF.matches(value), value


@pytest.mark.slow
@SETTINGS
@given(value=st.from_regex(wire.HTTP_URL.regex, fullmatch=True))
def test_every_url_the_grammar_allows_parses_with_a_host_and_port(value):
    if len(value) > wire.HTTP_URL.max_length:
        return
    parts = urlsplit(value)
    assert parts.scheme.lower() in ("http", "https")
    assert parts.hostname
    parts.port  # a bad port raises ValueError


@pytest.mark.parametrize("url,ok", [
    ("https://jenkins.example.com", True), ("HTTP://JENKINS.EXAMPLE.COM/", True), ("http://[::1]:8080/x", True),
    ("http://10.0.0.1:65535", True), ("http://user:pw@host/p?q#f", True), ("http://h:65536", False),
    ("http://", False), ("http://[:::1]/", False), ("ftp://h", False), ("http://exa mple.com", False),
    ("http://h/\u2028", False), ("//h", False), ("http://h\u00e9.com", False),
])
def test_base_url_examples(url, ok):
    assert wire.HTTP_URL.matches(url) is ok
    # an engine's base_url takes no user information (CONTRACT section 16): credentials go elsewhere
    assert _accepts(ENGINE.fields["base_url"], url) is (ok and "@" not in url)


# --------------------------------------------------------------------------- record shapes

def test_rendered_records_have_exactly_the_documented_keys_in_order(world):
    h = world.post("/api/v2/harnesses", {"name": "h", "path": "/p"}).json
    e = world.post("/api/v2/engines", {"name": "e", "base_url": "https://j.example.com",
                                       "username": "u", "api_token": "secret"}).json
    assert tuple(h) == wire.HARNESS.keys == tuple(SCHEMAS["Harness"]["properties"])
    assert tuple(e) == wire.ENGINE.keys == tuple(SCHEMAS["Engine"]["properties"])
    assert not set(wire.CREDENTIALS) & set(e)
    h1 = world.get(f"/api/v1/harnesses/{h['id']}").json
    e1 = world.get(f"/api/v1/engines/{e['id']}").json
    assert tuple(h1) == wire.HARNESS_V1.keys == tuple(SCHEMAS["HarnessV1"]["properties"])
    assert tuple(e1) == wire.ENGINE_V1.keys == tuple(SCHEMAS["EngineV1"]["properties"])
    # v1 = v2 renamed (uuid, config_state, oper_state) + support_liveview after bldg on harnesses.
    assert h1["uuid"] == h["id"] and h1["config_state"] == h["configuration_state"]
    assert list(h1)[list(h1).index("bldg") + 1] == "support_liveview" and h1["support_liveview"] is False
    assert {wire.V1_NAMES.get(k, k) for k in e} == set(e1)
    meta = world.get("/api/v2/resouces/harnesses/h").json
    meta1 = world.get("/api/v1/resouces/harnesses/h").json
    assert tuple(meta) == wire.RESOURCE_META.keys and tuple(meta1) == wire.RESOURCE_META_V1.keys
    assert meta["owner"] == h["created_by"] and meta1["uuid"] == h["id"]


def test_an_old_body_without_support_liveview_renders_false():
    body = {k: "x" for k in wire.HARNESS.keys}
    assert render.harness_v1(body)["support_liveview"] is False


def test_the_image_record_follows_the_wire_table():
    import uuid
    from datetime import datetime, timezone

    from xpresso_env.core.models import Image

    now = datetime(2024, 1, 2, tzinfo=timezone.utc)
    image = Image(id=uuid.uuid4(), group="g1", name="n", tag="t", git_ref="main", submitter="u",
                  nfs_path="/nfs/g1/n/t.tar", retention_day=30, date_created=now, date_updated=now,
                  worker_meta={"worker_id": "w", "host": "h", "pid": 1, "claimed_at": "x", "boot_id": "secret"})
    record = render.image_v2(image)
    assert tuple(record) == wire.IMAGE.keys == tuple(SCHEMAS["Image"]["properties"])
    assert set(record["worker_meta"]) == set(wire.WORKER_KEYS)
    jsonschema_rs.validator_for(SCHEMAS["Image"]).validate(record)


def test_the_document_states_the_service_tables():
    """Required fields, filters and grammars in the document are the services' own."""
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    assert set(schemas["HarnessCreate"]["required"]) == HARNESS.required
    assert set(schemas["EngineCreate"]["properties"]) == set(ENGINE.fields)
    assert set(schemas["PolarisBuild"]["properties"]) == set(SUBMIT_VALIDATORS)
    assert schemas["PolarisBuild"]["properties"]["name"]["pattern"] == f"^(?:{wire.IMAGE_NAME.pattern})$"
    assert schemas["PolarisBuild"]["properties"]["name"]["maxLength"] == 255
    for body in ("HarnessCreate", "HarnessPatch", "EngineCreate", "EnginePatch", "PolarisBuild", "ImagePatch"):
        assert schemas[body]["additionalProperties"] is False
    params = {p["name"]: p for p in doc["paths"]["/api/v2/harnesses"]["get"]["parameters"] if "name" in p}
    assert set(params) == set(HARNESS.filters)
    assert params["configuration_state"]["schema"]["enum"] == ["ENABLED", "DISABLED", "MAINTENANCE"]
