"""image.submitted and image.finished, from real dry-run builds, delivered by the running
delivery loop (ctx.start) to a real receiver on loopback. SQLite only, as the image tests are."""
from __future__ import annotations

from tests.images.conftest import backend, make_image_world, polaris_repo  # noqa: F401,F811 (fixtures)

from .receiver import Receiver

SECRET = "image-events-secret-0123"


def test_submitted_and_finished_are_delivered_with_the_image_record(make_image_world):  # noqa: F811
    w = make_image_world(config={"events": {"poll_s": 0.05}})
    with Receiver() as receiver:
        res = w.post("/api/v2/webhooks", {"url": receiver.url, "events": ["image.*"], "secret": SECRET}, user="ga")
        assert res.status_code == 201, res.text
        sub = w.submit({"name": "polaris-image", "tag": "t1", "git_ref": "main"})
        assert sub.status_code == 200, sub.text
        done = w.wait(sub.json["uuid"])
        got = receiver.wait_for(2)
        assert receiver.events(got) == ["image.submitted", "image.finished"]
        assert all(r.signed_with(SECRET) for r in got)
        assert got[0].json["data"]["status"] == "building" and got[0].json["data"]["uuid"] == sub.json["uuid"]
        finished = got[1].json["data"]
        assert finished["status"] == done["status"] == "successful"
        assert set(finished) == set(done) and finished["uuid"] == done["uuid"]
        # a cancelled build is finished too
        w2 = w.submit({"name": "polaris-image", "tag": "t2", "git_ref": "main"}).json
        w.post(f"/api/v2/images/{w2['uuid']}/cancel", user="mem")
        w.wait(w2["uuid"])
        got = receiver.wait_for(4)
        assert receiver.events(got)[2] == "image.submitted"
        assert receiver.events(got)[3] == "image.finished"
        assert got[3].json["data"]["status"] in ("cancelled", "successful")
