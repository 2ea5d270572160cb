"""Issue 19: what a change announces to the other processes on PostgreSQL, each with its commit.

A created or edited harness (the probe schedulers look at it), queued webhook deliveries (the
delivery loops look), a submitted build (idle workers claim it) and a grown build log (its
followers read on). A listener of the same database hears each; the app is not started, so
nothing here claims or delivers. How a notice wakes a worker in another process:
``tests/workers/test_wakeups.py``; the contract of notices: ``ChangeNoticeConformance``."""
from __future__ import annotations

import pytest

from tests.conftest import make_settings
from xpresso_env.storage import BUILD_LOG, BUILDS, OUTBOX, PROBE_TARGETS, Notice
from xpresso_env.testing import require
from xpresso_env.testing.storage_suite.notices import collect, listening


@pytest.fixture
def pg_world(make_world, tmp_path, polaris_repo, pg_database):
    require(pg_database is not None, "PostgreSQL is not among XPRESSO_TEST_BACKENDS")
    from xpresso_env.testing.postgres import reset_database

    reset_database(pg_database)
    settings = make_settings(tmp_path, "postgres", pg_database, extra={
        "polaris": {"repo": str(polaris_repo.path)}, "builder": {"backend": "dry-run"}})
    return make_world(images=True, settings_override=settings)


def test_changes_announce_what_other_processes_wait_for(pg_world):
    w = pg_world
    listener = listening(w.ctx.storage)
    try:
        r = w.post("/api/v2/harnesses", {"name": "h", "path": "/p"})
        assert r.status_code == 201, r.text
        harness = r.json["id"]
        assert Notice(PROBE_TARGETS, f"harness:{harness}") in collect(listener, Notice(PROBE_TARGETS,
                                                                                       f"harness:{harness}"))

        r = w.post("/api/v2/webhooks", {"url": "http://127.0.0.1:9/x", "events": ["harness.*"], "secret": "s" * 20})
        assert r.status_code == 201, r.text
        r = w.patch(f"/api/v2/harnesses/{harness}", {"path": "/q"})
        assert r.status_code == 200, r.text
        heard = collect(listener, Notice(OUTBOX))
        assert Notice(PROBE_TARGETS, f"harness:{harness}") in heard

        r = w.post("/api/v2/images/polaris_build", {"name": "polaris", "tag": "v1", "git_ref": "main"})
        assert r.status_code == 200, r.text
        image = r.json["uuid"]
        heard = collect(listener, Notice(BUILDS))
        heard += collect(listener, Notice(BUILD_LOG, image)) if Notice(BUILD_LOG, image) not in heard else []
        # A refused change announces nothing: the same build again is a 409, rolled back.
        r = w.post("/api/v2/images/polaris_build", {"name": "polaris", "tag": "v1", "git_ref": "main"})
        assert r.status_code == 409, r.text
        w.ctx.images.logs.line(image, "g1", "one more line")
        assert collect(listener, Notice(BUILD_LOG, image)) == [Notice(BUILD_LOG, image)]
    finally:
        listener.close()
