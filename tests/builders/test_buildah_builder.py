"""The buildah builder with real buildah (vfs storage, chroot isolation, a private store)."""
from __future__ import annotations

import json
import tarfile
import time

import pytest
from xpresso_env_plugins.builder_buildah import BuildahBuilder, normalize_ref

from xpresso_env.builds.sdk.builder import BuildCancelled, BuildFailed, BuildTimedOut
from xpresso_env.testing.daemons import BUSYBOX_REF

from .conftest import SLEEP_S, cancel_when_seen, leftovers, make_context, processes_running, wait_until
from .test_docker_builder import docker_cli


@pytest.fixture
def builder(buildah_store) -> BuildahBuilder:
    return BuildahBuilder(storage_driver=buildah_store.storage_driver, isolation="chroot",
                          root=buildah_store.root, runroot=buildah_store.runroot)


def manifest(tar_path) -> dict:
    with tarfile.open(tar_path) as tar:
        return json.load(tar.extractfile("manifest.json"))[0]


def working_containers(store) -> list[dict]:
    res = store.buildah("containers", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout or "[]") or []


def test_available(builder):
    assert builder.available() is None
    assert BuildahBuilder(executable="no-such-buildah").available() == "no-such-buildah is not installed"


def test_normalize_ref():
    assert normalize_ref("foo:1") == "docker.io/library/foo:1"
    assert normalize_ref("me/foo:1") == "docker.io/me/foo:1"
    assert normalize_ref("registry.example.com/me/foo:1") == "registry.example.com/me/foo:1"
    assert normalize_ref("localhost:5000/foo:1") == "localhost:5000/foo:1"
    assert normalize_ref("localhost/foo:1") == "localhost/foo:1"


def test_from_scratch(builder, buildah_store, tmp_path, make_request):
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY hello.txt /hello.txt\n", {"hello.txt": "hello\n"})
    request, log = make_request(ctx, "xpresso-test/scratch:1")
    result = builder.build(request)
    assert result.image_id.startswith("sha256:") and len(result.image_id) == 71
    assert result.size == request.output_tar.stat().st_size > 0
    assert result.virtual_size > 0
    m = manifest(request.output_tar)
    assert m["RepoTags"] == ["docker.io/xpresso-test/scratch:1"]
    assert m["Config"].removesuffix(".json").rsplit("/", 1)[-1] == result.image_id.split(":")[1]
    assert leftovers(request.output_tar.parent) == ["1.tar"]
    assert any("COPY hello.txt /hello.txt" in line for line in log.lines)


def test_run_step_and_the_tar_loads_and_runs_in_docker(builder, buildah_store, docker_url, docker_api,
                                                       tmp_path, make_request):
    ctx = make_context(tmp_path / "ctx", f"FROM {BUSYBOX_REF}\nRUN echo built-in-run > /built.txt\n"
                                         "COPY hello.txt /hello.txt\n", {"hello.txt": "hello\n"})
    request, log = make_request(ctx, "xpresso-test/brun:2")
    result = builder.build(request)
    loaded = docker_cli(docker_url, "load", "-i", str(request.output_tar))
    assert loaded.returncode == 0 and "xpresso-test/brun:2" in loaded.stdout, loaded.stderr
    # Docker names the image by the same id buildah reported.
    assert docker_api.inspect_image("xpresso-test/brun:2")["Id"] == result.image_id
    ran = docker_cli(docker_url, "run", "--rm", "--network", "none", "xpresso-test/brun:2",
                     "/bin/sh", "-c", "cat /built.txt /hello.txt; echo ok")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["built-in-run", "hello", "ok"]
    docker_api.remove_image("xpresso-test/brun:2", force=True)


def test_failing_run(builder, buildah_store, tmp_path, make_request):
    ctx = make_context(tmp_path / "ctx", f"FROM {BUSYBOX_REF}\nRUN echo about to fail && exit 3\n")
    request, log = make_request(ctx, "xpresso-test/bfail:1")
    with pytest.raises(BuildFailed) as caught:
        builder.build(request)
    assert type(caught.value) is BuildFailed
    assert "exit status 3" in str(caught.value) and "\n" not in str(caught.value)
    assert "about to fail" in log.lines
    assert not request.output_tar.exists() and leftovers(request.output_tar.parent) == []
    assert working_containers(buildah_store) == []


def test_missing_dockerfile(builder, tmp_path, make_request):
    (tmp_path / "empty").mkdir()
    request, _ = make_request(tmp_path / "empty", "xpresso-test/none:1")
    with pytest.raises(BuildFailed, match="no Dockerfile"):
        builder.build(request)


def _sleeping_build(tmp_path, make_request, timeout_s=120):
    ctx = make_context(tmp_path / "ctx", f"FROM {BUSYBOX_REF}\nRUN echo sleeping-now && sleep {SLEEP_S}\n")
    return make_request(ctx, "xpresso-test/bsleep:1", wanted="sleeping-now", timeout_s=timeout_s)


def _nothing_left(store, request) -> None:
    assert wait_until(lambda: not processes_running(["sleep", str(SLEEP_S)]), 10)
    assert wait_until(lambda: working_containers(store) == [], 10), request.log.text
    assert not request.output_tar.exists() and leftovers(request.output_tar.parent) == []


def test_cancel_kills_the_build(builder, buildah_store, tmp_path, make_request):
    request, log = _sleeping_build(tmp_path, make_request)
    when = cancel_when_seen(request, log)
    with pytest.raises(BuildCancelled):
        builder.build(request)
    assert time.monotonic() - when["cancelled_at"] < 3
    _nothing_left(buildah_store, request)


def test_timeout_kills_the_build(builder, buildah_store, tmp_path, make_request):
    request, log = _sleeping_build(tmp_path, make_request, timeout_s=3)
    started = time.monotonic()
    with pytest.raises(BuildTimedOut, match="timed out"):
        builder.build(request)
    assert 2.9 < time.monotonic() - started < 10
    assert "sleeping-now" in log.lines
    _nothing_left(buildah_store, request)


def test_output_folder_with_a_colon(builder, tmp_path, make_request):
    # docker-archive:<path>:<ref> splits on ':'; a registry port in the name puts one in the path.
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY f /f\n", {"f": "x"})
    out = tmp_path / "nfs" / "g1" / "localhost:5000" / "app" / "1.tar"
    request, _ = make_request(ctx, "localhost:5000/app:1", output=out)
    builder.build(request)
    assert manifest(out)["RepoTags"] == ["localhost:5000/app:1"]
    assert leftovers(out.parent) == ["1.tar"]


def test_remove_image(builder, buildah_store, tmp_path, make_request):
    request, _ = make_request(make_context(tmp_path / "ctx", "FROM scratch\nCOPY f /f\n", {"f": "x"}),
                              "xpresso-test/bgone:1")
    builder.build(request)
    assert buildah_store.buildah("inspect", "--type", "image", "docker.io/xpresso-test/bgone:1").returncode == 0
    builder.remove_image("xpresso-test/bgone:1")
    assert buildah_store.buildah("inspect", "--type", "image", "docker.io/xpresso-test/bgone:1").returncode != 0
    builder.remove_image("xpresso-test/bgone:1")  # already gone: not an error


def test_hard_kill_leftovers_are_removed(buildah_store, tmp_path, make_request):
    # No grace: buildah itself is killed at once, wherever it is (it then cannot clean up);
    # the builder removes the working container it left, as no other build is running.
    hard = BuildahBuilder(storage_driver=buildah_store.storage_driver, isolation="chroot",
                          root=buildah_store.root, runroot=buildah_store.runroot, stop_grace_s=0)
    request, log = _sleeping_build(tmp_path, make_request)
    cancel_when_seen(request, log)
    with pytest.raises(BuildCancelled):
        hard.build(request)
    assert any(line.startswith("removed working containers left by the stopped build") for line in log.lines)
    _nothing_left(buildah_store, request)
