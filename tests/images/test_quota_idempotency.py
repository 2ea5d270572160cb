"""CONTRACT section 11: builds.max_queued_per_group (429 with Retry-After) and Idempotency-Key on
POST /api/v2/images/polaris_build (the first request's image again, 422 for another body, 400 for
a bad key), remembered in storage so that a second service on the same storage honours it.

The services here are not started: submitted builds stay queued (`building`), which is what the
quota counts, without racing the workers."""
from __future__ import annotations

from falcon.testing import TestClient

from tests.conftest import World
from tests.images.conftest import FakeClock
from xpresso_env.app import build_context, create_app
from xpresso_env.builds.log import BuildLogStore

BUILD = "/api/v2/images/polaris_build"


def body(tag: str = "v1", **more) -> dict:
    return {"name": "polaris", "tag": tag, "git_ref": "main", **more}


def post(w, payload, key=None, group="g1", user="mem"):
    extra = {} if key is None else {"Idempotency-Key": key}
    return w.client.simulate_post(BUILD, json=payload, headers=w.headers(user, group, **extra))


def test_queue_limit_per_group_answers_429_with_retry_after(make_image_world):
    w = make_image_world(start=False, config={"builds": {"max_queued_per_group": 3}})
    ids = []
    for i in range(3):
        r = post(w, body(f"t{i}"))
        assert r.status_code == 200, r.text
        ids.append(r.json["uuid"])
    r = post(w, body("t3"))
    assert r.status_code == 429, r.text
    assert set(r.json) == {"detail"} and "max_queued_per_group" in r.json["detail"]
    assert int(r.headers["Retry-After"]) > 0
    assert len(w.get("/api/v2/images").json) == 3  # nothing was stored
    # another group has a queue of its own
    assert post(w, body("t3"), group="g2", user="other").status_code == 200
    # a build that ends frees a place
    assert w.post(f"/api/v2/images/{ids[0]}/cancel", user="mem").status_code == 200
    assert post(w, body("t3")).status_code == 200
    assert post(w, body("t4")).status_code == 429


def test_same_key_and_body_answers_the_first_image(make_image_world):
    w = make_image_world(start=False)
    first = post(w, body(), key="build-42")
    assert first.status_code == 200, first.text
    again = post(w, {"git_ref": "main", "tag": "v1", "name": "polaris"}, key="build-42")  # key order differs
    assert again.status_code == 200 and again.json["uuid"] == first.json["uuid"]
    # not a second build, and not the 409 a new submit of a building name:tag gets
    assert post(w, body()).status_code == 409
    assert len(w.get("/api/v2/images").json) == 1
    # the key is the group's: the same key in another group is another request
    other = post(w, body(), key="build-42", group="g2", user="other")
    assert other.status_code == 200 and other.json["uuid"] != first.json["uuid"]
    # after the build ended, the same key still answers the same image (as it is now)
    assert w.post(f"/api/v2/images/{first.json['uuid']}/cancel", user="mem").status_code == 200
    later = post(w, body(), key="build-42")
    assert later.status_code == 200 and later.json["uuid"] == first.json["uuid"]
    assert later.json["status"] == "cancelled"


def test_same_key_other_body_is_422(make_image_world):
    w = make_image_world(start=False)
    assert post(w, body(), key="k1").status_code == 200
    r = post(w, body("v2"), key="k1")
    assert r.status_code == 422, r.text
    assert set(r.json) == {"detail"} and "Idempotency-Key" in r.json["detail"]
    assert len(w.get("/api/v2/images").json) == 1


def test_bad_keys_are_400(make_image_world):
    w = make_image_world(start=False)
    for key in ("k" * 65, "a\tb", "a\x7fb", "with space", "ünï"):
        r = w.client.simulate_post(BUILD, json=body(), headers=w.headers("mem", "g1", **{
            "Idempotency-Key": key.encode("utf-8").decode("latin-1")}))
        assert r.status_code == 400, (key, r.text)
        assert "Idempotency-Key" in r.json["detail"]
    assert w.get("/api/v2/images").json == []
    assert post(w, body(), key="k" * 64).status_code == 200  # 64 is allowed


def test_key_is_remembered_24_hours_across_services(make_image_world):
    clock = FakeClock()
    w = make_image_world(start=False, clock=clock)
    # a second service on the same storage (as another process would be)
    ctx2 = build_context(w.ctx.settings, check_schema=False, images=True, clock=clock)
    try:
        w2 = World(ctx=ctx2, client=TestClient(create_app(ctx2)), tokens=w.tokens)
        first = post(w, body(), key="nightly")
        assert first.status_code == 200
        r = post(w2, body(), key="nightly")
        assert r.status_code == 200 and r.json["uuid"] == first.json["uuid"]
        assert post(w2, body("v2"), key="nightly").status_code == 422
        clock.advance(hours=23, minutes=59)
        assert post(w2, body(), key="nightly").json["uuid"] == first.json["uuid"]
        clock.advance(minutes=2)  # 24 h on: the key is free again, for any body
        assert w.post(f"/api/v2/images/{first.json['uuid']}/cancel", user="mem").status_code == 200
        fresh = post(w2, body("v2"), key="nightly")
        assert fresh.status_code == 200 and fresh.json["uuid"] != first.json["uuid"]
        assert post(w, body("v2"), key="nightly").json["uuid"] == fresh.json["uuid"]
    finally:
        ctx2.close()


def test_submit_log_line_is_in_storage(make_image_world):
    """The queued line is written to storage by the server that took the request."""
    w = make_image_world(start=False)
    image_id = post(w, body()).json["uuid"]
    store = BuildLogStore(w.ctx.storage)  # no logs_root: storage alone
    assert b"queued: polaris:v1 submitted by mem in group g1" in store.read_from(image_id)


def test_racing_requests_with_one_key_make_one_build(make_image_world):
    """Requests with one key sent at once, through two services on one storage: one build."""
    import threading

    w = make_image_world(start=False)
    ctx2 = build_context(w.ctx.settings, check_schema=False, images=True)
    try:
        w2 = World(ctx=ctx2, client=TestClient(create_app(ctx2)), tokens=w.tokens)
        answers = []
        barrier = threading.Barrier(8)

        def send(world):
            barrier.wait()
            answers.append(post(world, body(), key="race"))

        threads = [threading.Thread(target=send, args=(w if i % 2 else w2,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
        assert len({a.json["uuid"] for a in answers}) == 1
        assert len(w.get("/api/v2/images").json) == 1
    finally:
        ctx2.close()


def test_a_retry_with_its_key_is_answered_even_when_the_queue_is_full(make_image_world):
    """The key is looked up before the quota: the retry of an accepted submit is never a 429."""
    w = make_image_world(start=False, config={"builds": {"max_queued_per_group": 1}})
    first = post(w, body(), key="lost-answer")
    assert first.status_code == 200
    assert post(w, body("v2")).status_code == 429  # the queue is full
    again = post(w, body(), key="lost-answer")
    assert again.status_code == 200 and again.json["uuid"] == first.json["uuid"], again.text
    assert post(w, body("v2"), key="lost-answer").status_code == 422


def test_a_retry_with_its_key_is_answered_while_builds_are_unavailable(make_image_world, monkeypatch):
    """The key is looked up before the 503 of a builder gone away: the retry gets its image."""
    w = make_image_world(start=False)
    first = post(w, body(), key="lost-answer")
    assert first.status_code == 200
    monkeypatch.setattr(w.ctx.images.builders, "problem", lambda: "docker: the daemon does not answer")
    assert post(w, body("v2")).status_code == 503
    assert post(w, body("v2"), key="another").status_code == 503  # a new key: a new submit, refused
    again = post(w, body(), key="lost-answer")
    assert again.status_code == 200 and again.json["uuid"] == first.json["uuid"], again.text
    assert len(w.get("/api/v2/images").json) == 1
