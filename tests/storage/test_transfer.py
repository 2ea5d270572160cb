"""export/import moves everything between backends: sqlite -> postgres -> yaml -> sqlite."""
from __future__ import annotations

import pytest
import yaml

from tests.conftest import make_settings, seed
from xpresso_env.admin.fixtures import load_fixtures
from xpresso_env.admin.transfer import KINDS, export_file, import_file
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
            report = export_file(current.storage, file, current.clock, ImagePaths.from_settings(current.settings))
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
    cli(b, "init")
    assert "1 group, 1 user, " in cli(b, "import", str(tmp_path / "all.yaml")).stdout
    p = cli(b, "import", str(tmp_path / "missing.yaml"), check=False)
    assert p.returncode == 1 and p.stderr.startswith("xpresso-env: error:")
