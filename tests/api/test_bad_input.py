"""Bad input: a clear 4xx with a body, and nothing changes in storage (issue 2's list)."""
from __future__ import annotations

import json

import pytest

H = "/api/v2/harnesses"
E = "/api/v2/engines"

BAD_HARNESS_BODIES = [
    {"name": "x", "path": "relative/path"},
    {"name": "", "path": "/p"},
    {"name": "x" * 10_000, "path": "/p"},
    {"name": 5, "path": "/p"},
    {"name": None, "path": "/p"},
    {"name": ["x"], "path": "/p"},
    {"name": "x", "path": "/p", "harness": "pytest"},
    {"name": "x", "path": "/p", "configuration_state": "enabled"},
    {"name": "x", "path": "/p", "operational_state": "ONLINE"},
    {"name": "x", "path": "/p", "id": "94f03015-5f0d-4c2e-a6e6-49ca71442a36"},
    {"name": "x", "path": "/p", "created_by": "admin"},
    {"name": "x", "path": "/p", "deleted": True},
    {"name": "x", "path": "/p", "date_created": "2019-05-30T17:22:12.733397Z"},
    {"name": "x", "path": "/p", "unknown_field": 1},
    {"name": "x", "path": "/p", "support_liveview": "yes"},
    {"name": "x\u0000y", "path": "/p"},
    {"name": " x", "path": "/p"},
    {"path": "/p"},
    {"name": "x"},
    {"name": "x", "path": "/p", "site": "s" * 65},
]
BAD_ENGINE_URLS = ["file:///etc/passwd", "javascript:alert(1)", "ftp://x.example.com", "http://", "//x.example.com",
                   "not a url", "http://exa mple.com", "https://x.example.com:99999/", 42, ""]


@pytest.mark.parametrize("body", BAD_HARNESS_BODIES, ids=range(len(BAD_HARNESS_BODIES)))
def test_bad_harness_bodies(world, body):
    before = world.dump()
    r = world.post(H, body, user="priv")
    assert r.status_code == 400, r.text
    assert isinstance(r.json, dict) and r.json
    assert world.dump() == before


@pytest.mark.parametrize("url", BAD_ENGINE_URLS)
def test_bad_engine_urls(world, url):
    before = world.dump()
    r = world.post(E, {"name": "e", "base_url": url}, user="priv")
    assert r.status_code == 400 and "base_url" in r.json, r.text
    assert world.dump() == before


@pytest.mark.parametrize("raw", ["{bad json", "[1, 2]", '"a string"', "42", "null", "", "\xff\xfe"])
def test_non_object_bodies(world, raw):
    before = world.dump()
    r = world.client.simulate_post(H, body=raw.encode("latin-1"),
                                   headers={**world.headers("priv"), "Content-Type": "application/json"})
    assert r.status_code == 400 and "detail" in r.json
    assert world.dump() == before


def test_patch_cannot_set_read_only_fields(world):
    h = world.post(H, {"name": "x", "path": "/p"}, user="priv").json
    before = world.dump()
    for body in ({"operational_state": "ONLINE"}, {"id": "x"}, {"created_by": "x"}, {"deleted": True},
                 {"path": "rel"}, [], {"date_modified": "2020-01-01T00:00:00.000000Z"}):
        r = world.patch(f"{H}/{h['id']}", body, user="priv")
        assert r.status_code == 400, body
    assert world.dump() == before


@pytest.mark.parametrize("rid", ["not-a-uuid", "1", "94f03015", "%2e%2e", "..", "' OR 1=1 --",
                                 "94f03015-5f0d-4c2e-a6e6-49ca71442a3g", "x" * 5000])
def test_non_uuid_ids_are_404(world, rid):
    for call in (world.get, world.delete):
        r = call(f"{H}/{rid}")
        assert r.status_code == 404 and r.json == {"detail": "Not Found"}
    r = world.patch(f"{H}/{rid}", {"site": "x"})
    assert r.status_code == 404


def test_body_over_the_limit_is_413(world):
    before = world.dump()
    r = world.post(H, {"name": "x", "path": "/p", "site": "s" * (1 << 20)}, user="priv")
    assert r.status_code == 413 and "detail" in r.json
    assert world.dump() == before


def test_json_with_huge_nesting_is_a_400_not_a_crash(world):
    body = "[" * 100_000 + "]" * 100_000
    r = world.client.simulate_post(H, body=body, headers={**world.headers("priv"), "Content-Type": "application/json"})
    assert r.status_code in (400, 413)
    assert json.loads(r.text)["detail"]


# --------------------------------------------------------------------------- lone surrogates
# JSON bodies go through json.loads, which turns the escape "\ud800" into a lone surrogate: a str
# that cannot be written as UTF-8. Every such string is a 400 field error and nothing is stored.

SURROGATE = "\\ud800"  # as written in the JSON text
LONE = json.loads(f'"{SURROGATE}"')
I = "/api/v2/images/polaris_build"

SURROGATE_BODIES = [
    # (path, JSON text, the field the error names)
    (H, '{"name": "a\\ud800", "path": "/p"}', "name"),
    (H, '{"name": "a", "path": "/p\\ud800"}', "path"),
    (H, '{"name": "a", "path": "/p", "supporting_path": "/s\\udfff"}', "supporting_path"),
    (H, '{"name": "a", "path": "/p", "site": "\\ud800"}', "site"),
    (H, '{"name": "a", "path": "/p", "bldg": "\\ud800x"}', "bldg"),
    (H, '{"name": "a", "path": "/p", "harness": "\\ud800"}', "harness"),
    (H, '{"name": "a", "path": "/p", "configuration_state": "\\ud800"}', "configuration_state"),
    (E, '{"name": "e", "base_url": "http://x\\ud800.example.com"}', "base_url"),
    (E, '{"name": "e", "base_url": "http://x.example.com", "api_token": "t\\ud800"}', "api_token"),
    (E, '{"name": "e", "base_url": "http://x.example.com", "username": "\\ud800"}', "username"),
    (E, '{"name": "e", "base_url": "http://x.example.com", "type": "\\ud800"}', "type"),
    (I, '{"name": "a\\ud800", "tag": "t", "git_ref": "main"}', "name"),
    (I, '{"name": "a", "tag": "t\\ud800", "git_ref": "main"}', "tag"),
    (I, '{"name": "a", "tag": "t", "git_ref": "m\\ud800"}', "git_ref"),
    (I, '{"name": "a", "tag": "t", "git_ref": "main", "base_ref": "\\ud800"}', "base_ref"),
    (I, '{"name": "a", "tag": "t", "git_ref": "main", "groups": ["g1", "\\ud800"]}', "groups"),
]


def _post_raw(world, path: str, raw: str, method: str = "POST"):
    return world.client.simulate_request(method, path, body=raw.encode("ascii"),
                                         headers={**world.headers("admin"), "Content-Type": "application/json"})


@pytest.mark.parametrize("path,raw,field", SURROGATE_BODIES,
                         ids=[f"{p.split('/')[3]}-{f}" for p, _, f in SURROGATE_BODIES])
def test_lone_surrogate_in_a_field_is_a_400_field_error(make_world, path, raw, field):
    world = make_world(images=True)
    before = world.dump()
    r = _post_raw(world, path, raw)
    assert r.status_code == 400, r.text
    assert field in r.json and isinstance(r.json[field], list), r.text
    assert world.dump() == before


def test_lone_surrogate_in_a_key_or_an_unknown_field_is_a_400(world):
    before = world.dump()
    for raw in ('{"name": "a", "path": "/p", "\\ud800": 1}', '{"name": "a", "path": "/p", "x": ["\\ud800"]}',
                '{"name": "a", "path": "/p", "id": "\\ud800"}'):
        r = _post_raw(world, H, raw)
        assert r.status_code == 400, r.text
        assert all(isinstance(v, list) for v in r.json.values()), r.text
        r.text.encode("utf-8")  # the answer itself is valid UTF-8 JSON
    assert world.dump() == before


@pytest.mark.parametrize("path,body", [(H, {"name": "h", "path": "/p"}),
                                       (E, {"name": "e", "base_url": "https://j.example.com"})])
def test_patch_with_a_lone_surrogate_stores_nothing_and_export_still_works(world, tmp_path, path, body):
    from xpresso_env.admin.transfer import export_file
    from xpresso_env.builds.files import ImagePaths

    rid = world.post(path, body).json["id"]
    before = world.dump()
    field = "site"
    r = _post_raw(world, f"{path}/{rid}", f'{{"{field}": "x{SURROGATE}"}}', method="PATCH")
    assert r.status_code == 400 and field in r.json, r.text
    assert world.dump() == before
    report = export_file(world.ctx.storage, tmp_path / "out.yaml", world.ctx.clock,
                         ImagePaths.from_settings(world.ctx.settings))
    assert sum(report.counts.values()) >= 1


def test_lone_surrogate_in_a_query_filter(world):
    # Over HTTP a query string is bytes: an encoded surrogate arrives as U+FFFD and matches nothing.
    for path in (H, E, "/api/v1/harnesses"):
        r = world.get(path, query_string="name=%ED%A0%80&site=%ED%A0%80")
        assert r.status_code == 200 and r.json == [], r.text
    # A filter value handed to the service directly is refused like a body field.
    from xpresso_env.core.errors import ValidationError
    from xpresso_env.registry.service import HARNESS, RegistryService

    with pytest.raises(ValidationError) as caught:
        RegistryService.parse_query(HARNESS, {"name": f"a{LONE}"})
    assert list(caught.value.fields) == ["name"]


def test_the_codec_never_stores_a_lone_surrogate(world):
    """The last line of defence: a record that skipped validation still cannot reach storage."""
    import dataclasses

    from xpresso_env.core.codec import from_doc, to_doc
    from xpresso_env.core.errors import UnencodableText
    from xpresso_env.core.models import Harness

    created = world.post(H, {"name": "h", "path": "/p"}).json
    with world.ctx.storage.read() as tx:
        record = from_doc(tx.get(Harness.KIND, created["id"]))
    before = world.dump()
    for bad in (dataclasses.replace(record, site=f"x{LONE}"), dataclasses.replace(record, name=LONE)):
        with pytest.raises(UnencodableText) as caught:
            to_doc(bad)
        assert caught.value.fields and all(k in ("site", "name") for k in caught.value.fields)
    assert world.dump() == before


# --------------------------------------------------------------------------- PATCH of a deleted record

@pytest.mark.parametrize("path,body", [(H, {"name": "h", "path": "/p"}),
                                       (E, {"name": "e", "base_url": "https://j.example.com"})])
def test_patch_of_a_deleted_record_is_a_409_and_changes_nothing(world, path, body):
    rid = world.post(path, body).json["id"]
    assert world.delete(f"{path}/{rid}").status_code == 204
    before = world.dump()
    for change in ({"site": "OTT"}, {"name": "renamed"}, {}):
        r = world.patch(f"{path}/{rid}", change)
        assert r.status_code == 409, r.text
        assert list(r.json) == ["detail"] and "deleted" in r.json["detail"]
    assert world.dump() == before
    # Its name is free again: a new record may take it, and the deleted one still cannot.
    assert world.post(path, body).status_code == 201
    assert world.patch(f"{path}/{rid}", {"site": "x"}).status_code == 409
