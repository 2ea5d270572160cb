"""export/import moves everything between backends: sqlite -> postgres -> yaml -> sqlite; both
stream (CONTRACT §16), and files of the previous version still import."""
from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import pytest
import yaml
from yaml import events

from tests.conftest import make_settings, seed
from xpresso_env.admin import yaml_stream
from xpresso_env.admin.fixtures import load_fixtures
from xpresso_env.admin.transfer import DELIVERY_KINDS, KINDS, export_file, import_file
from xpresso_env.app import build_context
from xpresso_env.builds.files import ImagePaths
from xpresso_env.builds.log import BuildLogStore


def _everything(ctx) -> dict:
    with ctx.storage.read() as tx:
        return {kind: tx.query(kind) for kind in KINDS}


def _ctx(settings):
    ctx = build_context(settings, check_schema=False, images=False)
    ctx.storage.init()
    return ctx


def test_round_trip_through_every_backend(tmp_path):
    from xpresso_env.testing.postgres import temp_database

    source = _ctx(make_settings(tmp_path / "a", "sqlite"))
    tokens = seed(source)
    with source.storage.read() as tx:  # a webhook, and a change with its history row and pending delivery
        caller = source.auth.authenticate(tokens["admin"], "g1", tx)
    source.webhooks.create(caller, lambda: {"url": "http://127.0.0.1:9/hook", "events": ["*"], "secret": "s" * 16})
    from xpresso_env.registry.service import HARNESS
    source.registry.create(caller, HARNESS, lambda: {"name": "journalled", "path": "/p"})
    source.deliveries.fan_out()  # its event becomes a delivery and an outbox entry
    source.registry.create(caller, HARNESS, lambda: {"name": "not-yet-fanned-out", "path": "/p"})  # an event
    load_fixtures(source.storage, {"groups": ["myGroup"], "harnesses": [
        {"group": "myGroup", "id": "94f03015-5f0d-4c2e-a6e6-49ca71442a36", "name": "TestHarness",
         "path": "/p", "date_created": "2019-05-30T17:22:12.733397Z", "operational_state": "ONLINE",
         "deleted": True}],
        "engines": [{"group": "g1", "name": "E", "base_url": "https://j.example.com", "api_token": "t0k"}]},
        source.clock)
    source.auth.revoke("0123456789abcdef0123456789abcdef")
    with source.storage.write() as tx:  # the audit, and failed sign-ins counted for the lockout
        from xpresso_env.core.codec import to_doc
        from xpresso_env.core.models import AuditEntry, LoginFailures

        tx.insert(to_doc(AuditEntry(id="a" * 32, date_created=source.clock(), event="login", user="admin",
                                    by="admin", address="127.0.0.1")))
        tx.insert(to_doc(LoginFailures(name="admin", times=[1.5], date_created=source.clock())))
    with source.storage.write() as tx:  # an image visible in more than one group
        from xpresso_env.storage import Doc

        tx.insert(Doc(kind="image", id="7d8f4f48-55a2-4f0f-9a0b-2c1f0f0d0e01", group="g1", name=None, deleted=False,
                      created="2021-08-25T19:35:14.765536Z", body={"id": "7d8f4f48-55a2-4f0f-9a0b-2c1f0f0d0e01",
                                                                   "group": "g1", "groups": ["g2", "g3"]},
                      visible=("g2", "g3")))
    image_id = "7d8f4f48-55a2-4f0f-9a0b-2c1f0f0d0e01"
    log_text = "2024-05-02T09:14:03.112233Z queued: pölaris\n"
    source_paths = ImagePaths.from_settings(source.settings)
    source_paths.logs_root.mkdir(parents=True)
    source_paths.log_path(image_id).write_text(log_text, encoding="utf-8")
    expected = _everything(source)
    assert all(expected[k] for k in KINDS)

    with temp_database() as dsn:
        hops = [make_settings(tmp_path / "b", "postgres", dsn), make_settings(tmp_path / "c", "yaml"),
                make_settings(tmp_path / "d", "sqlite")]
        current = source
        for i, settings in enumerate(hops):
            file = tmp_path / f"export-{i}.yaml"
            report = export_file(current.storage, file, current.clock, ImagePaths.from_settings(current.settings),
                                 with_deliveries=True)
            assert yaml.safe_load(file.read_text())["format"] == "xpresso-env-export" and report.logs == 1
            nxt = _ctx(settings)
            paths = ImagePaths.from_settings(settings)
            assert import_file(nxt.storage, file, paths).logs == 1
            assert _everything(nxt) == expected, f"hop {i} to {settings.storage.backend}"
            # The build log moved too, into the new storage (chunk documents), not into logs_root.
            assert BuildLogStore(nxt.storage, paths.logs_root).read_from(image_id) == log_text.encode("utf-8")
            assert not paths.log_path(image_id).exists()
            if current is not source:
                current.close()
            current = nxt
        current.close()
    # By default the webhook deliveries, their outbox and queues stay behind; everything else moves.
    file = tmp_path / "default.yaml"
    report = export_file(source.storage, file, source.clock, source_paths)
    assert report.left_out == DELIVERY_KINDS and not set(DELIVERY_KINDS) & set(report.counts)
    assert "left out: webhook_queue, delivery, outbox, event; --with-deliveries" in str(report)
    assert not set(DELIVERY_KINDS) & set(yaml.safe_load(file.read_text())["kinds"])
    target = _ctx(make_settings(tmp_path / "e", "sqlite"))
    import_file(target.storage, file, ImagePaths.from_settings(target.settings))
    moved = _everything(target)
    assert moved == {k: ([] if k in DELIVERY_KINDS else v) for k, v in expected.items()}
    target.close()
    source.close()


def test_import_is_all_or_nothing(tmp_path):
    from xpresso_env.core.errors import BadRequest

    ctx = _ctx(make_settings(tmp_path, "sqlite"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"format": "xpresso-env-export", "version": 1, "kinds": {
        "group": [{"id": "g", "group": None, "name": None, "deleted": False, "created": "2020-01-01T00:00:00.000000Z",
                   "visible": [], "body": {"name": "g", "date_created": "2020-01-01T00:00:00.000000Z"}}],
        "harness": [{"id": "x"}]}}))
    paths = ImagePaths.from_settings(ctx.settings)
    with pytest.raises(BadRequest):
        import_file(ctx.storage, bad, paths)
    assert _everything(ctx)["group"] == []
    (tmp_path / "other.yaml").write_text("just: text\n")
    with pytest.raises(BadRequest, match="not an xpresso-env export"):
        import_file(ctx.storage, tmp_path / "other.yaml", paths)
    # a log may only name an image of the export: its id becomes a file name under logs_root
    traversal = tmp_path / "traversal.yaml"
    traversal.write_text(yaml.safe_dump({"format": "xpresso-env-export", "version": 1, "kinds": {},
                                         "logs": {"../../evil": "x"}}))
    with pytest.raises(BadRequest, match="not the id of an image in this export"):
        import_file(ctx.storage, traversal, paths)
    assert not (tmp_path / "evil.log").exists()
    ctx.close()


@pytest.mark.slow
def test_cli_export_import(tmp_path):
    from xpresso_env.testing.server import cli, write_config

    a = write_config(tmp_path / "a", {"storage": {"backend": "sqlite"}, "auth": {"secret": "k" * 40}})
    b = write_config(tmp_path / "b", {"storage": {"backend": "yaml"}, "auth": {"secret": "k" * 40}})
    cli(a, "init", "--group", "g", "--admin", "root")
    out = cli(a, "export", str(tmp_path / "all.yaml")).stdout
    assert "1 group, 1 user, " in out and "0 harnesses" in out and "(s)" not in out, out
    assert "deliver" not in out.split("(left out")[0]
    assert "(left out: webhook_queue, delivery, outbox, event; --with-deliveries exports them)" in out
    out = cli(a, "export", str(tmp_path / "with.yaml"), "--with-deliveries").stdout
    assert "0 deliveries, 0 outbox entries" in out and "left out" not in out, out
    assert (tmp_path / "with.yaml").stat().st_mode & 0o777 == 0o600
    cli(b, "init")
    assert "1 group, 1 user, " in cli(b, "import", str(tmp_path / "all.yaml")).stdout
    p = cli(b, "import", str(tmp_path / "missing.yaml"), check=False)
    assert p.returncode == 1 and p.stderr.startswith("xpresso-env: error:")


V1_FILE = Path(__file__).parent / "data" / "export-v1.yaml"


@pytest.mark.parametrize("backend", ["sqlite", "yaml"])
def test_a_file_of_the_previous_version_imports(tmp_path, backend):
    # export-v1.yaml was written by the previous version's `export` (one yaml.dump of the whole,
    # block style, before exports streamed): odd characters, a float with an exponent, a shared
    # image, a UTF-8 log with an empty line and a !!binary one, pending deliveries.
    ctx = _ctx(make_settings(tmp_path, backend))
    paths = ImagePaths.from_settings(ctx.settings)
    report = import_file(ctx.storage, V1_FILE, paths)
    data = yaml.safe_load(V1_FILE.read_text(encoding="utf-8"))  # the whole file, as that version read it
    # kinds newer than version 1's code (the fan-out's events) are absent from its file
    assert report.counts == {k: len(data["kinds"].get(k, [])) for k in KINDS} and report.logs == 2
    from xpresso_env.journal.journal import SUBSCRIPTIONS_KIND
    with ctx.storage.read() as tx:  # each group's subscriptions rebuilt: its writes fan out to its webhooks
        hooks = data["kinds"]["webhook"]
        assert hooks
        for hook in hooks:
            subs = tx.get(SUBSCRIPTIONS_KIND, hook["group"])
            assert subs is not None and hook["id"] in {w["id"] for w in subs.body["webhooks"]}
    from xpresso_env.admin.transfer import _doc_in

    with ctx.storage.read() as tx:
        for kind in KINDS:
            want = sorted((_doc_in(kind, item, kind) for item in data["kinds"].get(kind, [])), key=lambda d: d.id)
            assert list(tx.scan(kind)) == want, kind
    logs = BuildLogStore(ctx.storage, paths.logs_root)
    for image_id, text in data["logs"].items():
        raw = text.encode("utf-8") if isinstance(text, str) else text.decode("utf-8", "replace").encode("utf-8")
        assert logs.read_from(image_id) == raw
    # and what this version writes of it is the same data again
    again = tmp_path / "again.yaml"
    export_file(ctx.storage, again, ctx.clock, paths, with_deliveries=True)
    written = yaml.safe_load(again.read_text(encoding="utf-8"))
    for kind in KINDS:
        assert sorted(written["kinds"][kind], key=lambda d: d["id"]) == sorted(data["kinds"].get(kind, []), key=lambda d: d["id"])
    ctx.close()


ODD_VALUES = [
    "a\u2028b\u2029c\x85d\x7fe\x9ff\ufeffg\ufffeh", "tab\there\nnew line\r", "😀 pölaris – \u00a0", 'quote " back \\ slash',
    "", "null", "yes", "1e5", "2024-01-01", "- x", "#", "{a: b}", "  lead", "trail  ", "\x00\x01",
    1e-05, 1e+20, -2.5e-300, 0.1, -0.0, 10**30, -7, 0, True, False, None, [], {}, [1, [2, {"k": "v"}]],
    {"e": "9b2e-41", "f": 3e-07, "nested": {"x": "3e+4"}},
]


def test_each_line_is_yaml_and_json_and_reads_back(tmp_path):
    for value in ODD_VALUES:
        line = yaml_stream.flow(value)
        assert "\n" not in line
        assert yaml.safe_load(line) == value, repr(value)
        assert json.loads(line) == value, repr(value)
    text = "items:\n" + "".join(yaml_stream.item(v) for v in ODD_VALUES) + yaml_stream.item({"nan": math.nan})
    (tmp_path / "f.yaml").write_text(text, encoding="utf-8")
    with open(tmp_path / "f.yaml", encoding="utf-8") as fh:  # read back an item at a time
        stream = yaml_stream.YamlStream(fh)
        stream.take(events.StreamStartEvent)
        stream.take(events.DocumentStartEvent)
        got = {key: list(stream.sequence()) for key in stream.mapping()}
    assert got["items"][:-1] == ODD_VALUES and math.isnan(got["items"][-1]["nan"])


def _fill(ctx, n: int) -> None:
    """n history rows of about 1 kB, straight into storage."""
    from xpresso_env.storage import Doc

    with ctx.storage.write() as tx:
        for i in range(n):
            tx.insert(Doc(kind="history", id=f"{i:020d}", group="r", name=None, deleted=False,
                          created="2024-01-01T00:00:00.000000Z",
                          body={"i": i, "event": "updated", "changes": {"path": ["/a" * 200, "/b" * 200]}}))


@pytest.mark.slow
def test_export_and_import_hold_a_page_not_the_store(tmp_path):
    # Python's own allocations at the peak, per direction, on 10,000 rows of 1 kB (10 MB of
    # documents): the previous version held every document and the whole text (more than 30 MB here), this one a
    # page of them and one line of the file.
    source = _ctx(make_settings(tmp_path / "a", "sqlite"))
    _fill(source, 10000)
    file = tmp_path / "all.yaml"
    paths = ImagePaths.from_settings(source.settings)
    tracemalloc.start()
    try:
        assert export_file(source.storage, file, source.clock, paths).counts["history"] == 10000
        _, export_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        target = _ctx(make_settings(tmp_path / "b", "sqlite"))
        assert import_file(target.storage, file, ImagePaths.from_settings(target.settings)).counts["history"] == 10000
        _, import_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert file.stat().st_size > 9 * 2**20
    assert export_peak < 5 * 2**20, export_peak
    assert import_peak < 5 * 2**20, import_peak
    with target.storage.read() as tx:
        assert [d.body["i"] for d in tx.scan("history", page=5000)] == list(range(10000))
    source.close()
    target.close()


def _export(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GROUP_ITEM = ('{"id": "g", "group": null, "name": null, "deleted": false, "created": "2020-01-01T00:00:00.000000Z", '
              '"visible": [], "body": {"name": "g"}}')


@pytest.mark.parametrize("text, message", [
    # version comes after kinds when keys are sorted: the import is rolled back when it is read
    (f"format: xpresso-env-export\nkinds:\n  group:\n  - {GROUP_ITEM}\nversion: 2\n", "unsupported export version 2"),
    (f"format: xpresso-env-export\nversion: 1\nkinds:\n  group:\n  - {GROUP_ITEM}\n  elephant: []\n",
     "unknown kind(s) in the export: elephant"),
    (f"format: xpresso-env-export\nversion: 1\nkinds:\n  group:\n  - {GROUP_ITEM}\n  user: {{}}\n",
     "kinds.user must be a list"),
    (f"format: xpresso-env-export\nversion: 1\nkinds:\n  group:\n  - {GROUP_ITEM}\n---\nmore: 1\n", "a single document"),
    (f"kinds:\n  group:\n  - {GROUP_ITEM}\nformat: xpresso-env-export\nversion: 1\n", "not an xpresso-env export"),
    ("format: xpresso-env-export\nversion: 1\n", "the export has no kinds"),
    (f"format: xpresso-env-export\nversion: 1\nkinds:\n  group:\n  - {GROUP_ITEM}\n  - [unclosed\n", "not valid YAML"),
    ("", "not an xpresso-env export"),
    ("- a list\n", "not an xpresso-env export"),
])
def test_a_bad_file_changes_nothing(tmp_path, text, message):
    from xpresso_env.core.errors import BadRequest

    ctx = _ctx(make_settings(tmp_path, "sqlite"))
    with pytest.raises(BadRequest) as caught:
        import_file(ctx.storage, _export(tmp_path, text), ImagePaths.from_settings(ctx.settings))
    assert message in caught.value.detail
    assert _everything(ctx)["group"] == []
    ctx.close()


def test_both_readers_read_an_export_alike_and_a_hand_edit_falls_back(tmp_path):
    # An export is read a line at a time (json); any other layout as YAML events. Both give the
    # same store, and a file edited by hand (here a comment) is read as YAML, all of it again.
    from xpresso_env.admin.transfer import import_stream, read_yaml
    from xpresso_env.storage import Doc

    source = _ctx(make_settings(tmp_path / "src", "sqlite"))
    with source.storage.write() as tx:
        for i, value in enumerate(ODD_VALUES):
            tx.insert(Doc(kind="history", id=f"h{i:03d}", group="r", name=None, deleted=bool(i % 2),
                          created="2024-01-01T00:00:00.000000Z", body={"value": value}, visible=("x",) * (i % 3 == 0)))
    file = tmp_path / "all.yaml"
    export_file(source.storage, file, source.clock, ImagePaths.from_settings(source.settings))
    stores = []
    for name, read in (("lines", yaml_stream.read_lines), ("yaml", read_yaml)):
        ctx = _ctx(make_settings(tmp_path / name, "sqlite"))
        with open(file, encoding="utf-8") as fh:
            import_stream(ctx.storage, fh, ImagePaths.from_settings(ctx.settings), read)
        stores.append(_everything(ctx))
        ctx.close()
    assert stores[0] == stores[1] == _everything(source)
    with open(file, "a", encoding="utf-8") as fh:
        fh.write("# checked by hand\n")
    with open(file, encoding="utf-8") as fh, pytest.raises(yaml_stream.NotLines):
        yaml_stream.read_lines(fh, yaml_stream.LineSink())
    ctx = _ctx(make_settings(tmp_path / "edited", "sqlite"))
    import_file(ctx.storage, file, ImagePaths.from_settings(ctx.settings))
    assert _everything(ctx) == stores[0]
    ctx.close()
    source.close()
