"""Retention: tars of successful images are removed retention_day days after they were built,
unless pinned; the sweep runs periodically in the server and as `xpresso-env images sweep`."""
from __future__ import annotations

from pathlib import Path

import yaml

from xpresso_env.cli import main

from .conftest import FakeClock, wait_until


def _build(w, tag: str, name: str = "polaris", **extra) -> dict:
    rec = w.submit({"name": name, "tag": tag, "git_ref": "main", **extra}).json
    done = w.wait(rec["uuid"])
    assert done["status"] == "successful", w.log(rec["uuid"])
    return done


def test_sweep_with_an_injected_clock(make_image_world):
    clock = FakeClock()
    w = make_image_world(clock=clock)
    old = _build(w, "old")
    pinned = _build(w, "pinned")
    assert w.patch(f"/api/v2/images/{pinned['uuid']}", {"pin_version": True}, user="mem").status_code == 200
    replaced = _build(w, "same")
    failed = w.wait(w.submit({"name": "polaris", "tag": "f", "git_ref": "nope"}).json["uuid"])
    assert failed["status"] == "failed"
    clock.advance(days=5)
    recent = _build(w, "recent")
    newer_same = _build(w, "same")  # a rebuild of polaris:same: its tar replaced the old one
    assert newer_same["nfs_path"] == replaced["nfs_path"]

    clock.advance(days=1, minutes=1)  # 6 days and a minute after the first builds (retention 6 days)
    items = w.ctx.images.sweep(dry_run=True)
    by_tag = {(i.image.tag, str(i.image.id)): i for i in items}
    assert set(by_tag) == {("old", old["uuid"]), ("pinned", pinned["uuid"]), ("same", replaced["uuid"])}
    assert by_tag[("old", old["uuid"])].removed is True and "6.0 days ago; retention 6 days" in by_tag[("old", old["uuid"])].reason
    assert by_tag[("pinned", pinned["uuid"])].removed is False and "pinned" in by_tag[("pinned", pinned["uuid"])].reason
    assert all(Path(r["nfs_path"]).exists() for r in (old, pinned, recent, newer_same)), "dry run removes nothing"
    assert w.image(old["uuid"])["is_deleted"] is False

    items = w.ctx.images.sweep(dry_run=False)
    assert {str(i.image.id) for i in items if i.removed} == {old["uuid"], replaced["uuid"]}
    assert not Path(old["nfs_path"]).exists()
    assert Path(pinned["nfs_path"]).exists() and Path(recent["nfs_path"]).exists()
    assert Path(newer_same["nfs_path"]).exists(), "an older record never removes a newer build's tar"
    gone = w.image(old["uuid"])
    assert gone["is_deleted"] is True and gone["meta"]["retention"]["reason"].startswith("built ")
    assert w.image(replaced["uuid"])["is_deleted"] is True
    for r in (pinned, recent, newer_same, failed):
        assert w.image(r["uuid"])["is_deleted"] is False
    assert [i.image.tag for i in w.ctx.images.sweep(dry_run=False)] == ["pinned"]  # idempotent

    # unpinning puts it back under retention
    w.patch(f"/api/v2/images/{pinned['uuid']}", {"pin_version": False}, user="mem")
    assert [(i.image.tag, i.removed) for i in w.ctx.images.sweep()] == [("pinned", True)]
    assert not Path(pinned["nfs_path"]).exists()


def test_the_server_sweeps_periodically(make_image_world):
    clock = FakeClock()
    w = make_image_world(clock=clock, config={"images": {"sweep_interval_s": 0.2}})
    done = _build(w, "x")
    clock.advance(days=7)
    assert wait_until(lambda: w.image(done["uuid"])["is_deleted"], 10)
    assert not Path(done["nfs_path"]).exists()


def test_images_sweep_command(make_image_world, tmp_path, capsys):
    w = make_image_world(config={"images": {"retention_days": 0}})
    keep = _build(w, "keep")
    w.patch(f"/api/v2/images/{keep['uuid']}", {"pin_version": True}, user="mem")
    drop = _build(w, "drop")
    w.ctx.stop()  # no sweep of its own while the command sweeps
    s = w.ctx.settings
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"backend": "sqlite", "path": s.storage.path}, "auth": {"secret": "x" * 40},
        "builder": {"backend": "dry-run"}, "polaris": {"repo": s.polaris.repo},
        "images": {"nfs_root": s.images.nfs_root, "logs_root": s.images.logs_root,
                   "workspace_root": s.images.workspace_root, "retention_days": 0}}))
    assert main(["--config", str(config), "images", "sweep", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"would remove g1/polaris:drop {drop['uuid']} {drop['nfs_path']}: built ")
               and "retention 0 days" in line and line.endswith("; builder image polaris:drop")
               for line in out), out
    assert any(line.startswith(f"kept g1/polaris:keep {keep['uuid']}") and "pinned" in line for line in out), out
    assert out[-1] == "would remove 1 image; 1 pinned image past retention kept"
    assert Path(drop["nfs_path"]).exists()
    assert main(["--config", str(config), "images", "sweep"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("removed g1/polaris:drop") and "tar removed" in line
               and line.endswith("; builder image polaris:drop") for line in out), out
    assert not Path(drop["nfs_path"]).exists() and Path(keep["nfs_path"]).exists()
    assert w.image(drop["uuid"])["is_deleted"] is True
