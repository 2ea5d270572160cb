"""The queue lives in storage: claims, leases, take-over of a dead worker's build, give-up after
too many attempts, several services sharing one database, the build_finished hook."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import timedelta

from xpresso_env.core.codec import from_doc, to_doc
from xpresso_env.core.models import Image
from xpresso_env.core.timeutil import utcnow
from xpresso_env.hookspecs import hookimpl
from xpresso_env.plugin import make_plugin_manager
from xpresso_env.runtime.lease import Identity

from .conftest import ImageWorld, wait_until


class Recorder:
    def __init__(self):
        self.finished: list[Image] = []

    @hookimpl
    def xpresso_build_finished(self, image):
        self.finished.append(image)


def _edit(w, image_id: str, **changes) -> None:
    """Change a stored record the way a crashed process leaves it."""
    with w.ctx.storage.write() as tx:
        image = from_doc(tx.get("image", image_id, lock=True))
        tx.update(to_doc(replace(image, **changes)))


def _dead_claim(pid: int = 1, host: str = "gone.example.com", **identity):
    meta = {"worker_id": f"{host}:{pid}:dead/w0", "host": host, "pid": pid, "boot": "b", "pidns": "p", **identity}
    return {"claimed_by": meta["worker_id"], "worker_meta": meta, "attempts": 1}


def test_an_expired_claim_is_taken_over(make_image_world):
    recorder = Recorder()
    w = make_image_world(start=False, pm=make_plugin_manager([recorder]))
    rec = w.submit({"name": "p", "tag": "1", "git_ref": "main"}).json
    _edit(w, rec["uuid"], lease_until=utcnow() - timedelta(seconds=1), **_dead_claim())
    live = w.submit({"name": "p", "tag": "2", "git_ref": "main"}).json
    # a live claim of another machine is left alone
    _edit(w, live["uuid"], lease_until=utcnow() + timedelta(hours=1), **_dead_claim(host="alive.example.com"))
    w.ctx.start()
    done = w.wait(rec["uuid"])
    assert done["status"] == "successful" and done["meta"]["attempt"] == 2
    assert "stopped renewing its claim" in w.log(rec["uuid"])
    assert done["worker_meta"]["pid"] == Identity.here().pid
    assert w.image(live["uuid"])["status"] == "building"
    assert wait_until(lambda: recorder.finished) and [str(i.id) for i in recorder.finished] == [rec["uuid"]]


def test_a_dead_local_owner_is_taken_over_without_waiting_for_its_lease(make_image_world):
    w = make_image_world(start=False)
    rec = w.submit({"name": "p", "tag": "1", "git_ref": "main"}).json
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid of this machine that no longer runs
    me = Identity.here()
    _edit(w, rec["uuid"], lease_until=utcnow() + timedelta(hours=1),
          **_dead_claim(pid=gone.pid, host=me.host, boot=me.boot, pidns=me.pidns))
    w.ctx.start()
    assert w.wait(rec["uuid"], timeout_s=20)["status"] == "successful"


def test_after_too_many_attempts_the_build_fails_interrupted_by_restart(make_image_world):
    recorder = Recorder()
    w = make_image_world(start=False, pm=make_plugin_manager([recorder]))
    rec = w.submit({"name": "p", "tag": "1", "git_ref": "main"}).json
    _edit(w, rec["uuid"], lease_until=utcnow() - timedelta(seconds=1), **{**_dead_claim(), "attempts": 3})
    (w.root.parent / "ws" / rec["uuid"]).mkdir(parents=True)  # the dead attempt's workspace
    w.ctx.start()
    done = w.wait(rec["uuid"])
    assert done["status"] == "failed" and done["meta"]["error"] == "interrupted by restart (3 attempts did not finish)"
    assert "interrupted by restart" in w.log(rec["uuid"])
    assert wait_until(lambda: not (w.root.parent / "ws" / rec["uuid"]).exists())
    assert wait_until(lambda: recorder.finished) and recorder.finished[0].status.value == "failed"


def test_a_claimed_build_is_not_claimed_twice(make_image_world):
    w = make_image_world(start=False)
    rec = w.submit({"name": "p", "tag": "1", "git_ref": "main"}).json
    queue = w.ctx.images.queue
    claimed = queue.claim_next("test-worker")
    assert claimed is not None and str(claimed.id) == rec["uuid"] and claimed.attempts == 1
    assert queue.claim_next("another-worker") is None, "a claimed build is not claimed twice"
    stored = w.image(rec["uuid"])
    assert stored["status"] == "building" and stored["worker_meta"]["worker_id"] == "test-worker"


def test_build_finished_fires_once_per_build(make_image_world):
    recorder = Recorder()
    w = make_image_world(pm=make_plugin_manager([recorder]))
    ok = w.submit({"name": "p", "tag": "1", "git_ref": "main"}).json
    bad = w.submit({"name": "p", "tag": "2", "git_ref": "nope"}).json
    w.wait(ok["uuid"])
    w.wait(bad["uuid"])
    assert wait_until(lambda: len(recorder.finished) == 2)
    assert {(str(i.id), i.status.value) for i in recorder.finished} == {(ok["uuid"], "successful"), (bad["uuid"], "failed")}


def test_two_services_on_one_postgres_database_share_the_queue(tmp_path, polaris_repo):
    from falcon.testing import TestClient

    from tests.conftest import World, make_settings, seed
    from xpresso_env.app import build_context, create_app
    from xpresso_env.testing import require
    from xpresso_env.testing.postgres import postgres_available, temp_database

    require(postgres_available(), "PostgreSQL is not reachable on 127.0.0.1:5432")

    with temp_database() as dsn:
        settings = make_settings(tmp_path, "postgres", dsn, extra={
            "polaris": {"repo": str(polaris_repo.path)}, "builder": {"backend": "dry-run"},
            "builds": {"max_concurrent": 2, "lease_s": 6.0}})
        contexts = []
        try:
            for _ in range(2):
                ctx = build_context(settings, check_schema=False, images=True, poll_s=0.1)
                contexts.append(ctx)
            contexts[0].storage.init()
            tokens = seed(contexts[0])
            a = ImageWorld(World(ctx=contexts[0], client=TestClient(create_app(contexts[0])), tokens=tokens))
            ids = [a.submit({"name": "p", "tag": str(n), "git_ref": "main"}).json["uuid"] for n in range(8)]
            for ctx in contexts:
                ctx.start()
            done = [a.wait(i, timeout_s=60) for i in ids]
            assert all(d["status"] == "successful" for d in done)
            # each build was claimed exactly once, by one of the two services
            assert all(d["meta"]["attempt"] == 1 for d in done)
            assert all(a.log(i).count(" attempt 1 of ") == 1 for i in ids)
            services = {d["worker_meta"]["worker_id"].rsplit("/", 1)[0] for d in done}
            assert services <= {c.images.queue.service_id for c in contexts}
        finally:
            for ctx in contexts:
                ctx.close()
