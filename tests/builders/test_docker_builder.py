"""The docker builder against a real, private dockerd (no network: FROM scratch or the busybox base)."""
from __future__ import annotations

import json
import subprocess
import tarfile
import time

import pytest
from xpresso_env_plugins.builder_docker import DockerBuilder

from xpresso_env.builds.sdk.builder import BuildCancelled, BuildFailed, BuildTimedOut
from xpresso_env.core.errors import ConfigError, ServiceUnavailable
from xpresso_env.testing.daemons import BUSYBOX_REF

from .conftest import SLEEP_S, cancel_when_seen, leftovers, make_context, processes_running, wait_until


@pytest.fixture
def builder(docker_url) -> DockerBuilder:
    return DockerBuilder(base_url=docker_url)


def docker_cli(docker_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "-H", docker_url, *args], capture_output=True, text=True, timeout=timeout)


def repo_tags(tar_path) -> list[str]:
    with tarfile.open(tar_path) as tar:
        return json.load(tar.extractfile("manifest.json"))[0]["RepoTags"]


def test_available(builder):
    assert builder.available() is None


def test_unreachable_daemon(tmp_path, make_request):
    bad = DockerBuilder(base_url=f"unix://{tmp_path}/nothing.sock")
    reason = bad.available()
    assert reason and reason.startswith(f"docker daemon not reachable at unix://{tmp_path}/nothing.sock")
    assert "\n" not in reason
    request, _ = make_request(make_context(tmp_path / "ctx", "FROM scratch\n"), "x:1")
    with pytest.raises(BuildFailed, match="docker daemon not reachable"):
        bad.build(request)
    with pytest.raises(ServiceUnavailable):
        bad.remove_image("x:1")
    # DOCKER_HOST is used when no base_url is configured.
    assert DockerBuilder(environ={"DOCKER_HOST": f"unix://{tmp_path}/other.sock"}).where() == f"unix://{tmp_path}/other.sock"


def test_from_scratch(builder, docker_api, docker_url, tmp_path, make_request):
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY hello.txt /hello.txt\nLABEL test=scratch\n",
                       {"hello.txt": "hello\n"})
    request, log = make_request(ctx, "xpresso-test/scratch:1")
    result = builder.build(request)
    info = docker_api.inspect_image("xpresso-test/scratch:1")
    assert result.image_id == info["Id"] and result.image_id.startswith("sha256:")
    assert result.size == request.output_tar.stat().st_size > 0
    assert result.virtual_size == info["Size"]
    assert "Step 2/3 : COPY hello.txt /hello.txt" in log.lines
    assert repo_tags(request.output_tar) == ["xpresso-test/scratch:1"]
    assert leftovers(request.output_tar.parent) == ["1.tar"]  # no temporary file left
    # The tar loads back as the same image.
    builder.remove_image("xpresso-test/scratch:1")
    loaded = docker_cli(docker_url, "load", "-i", str(request.output_tar))
    assert loaded.returncode == 0, loaded.stderr
    assert docker_api.inspect_image("xpresso-test/scratch:1")["Id"] == result.image_id


def test_run_step_and_the_tar_loads_and_runs(builder, docker_api, docker_url, docker_busybox, tmp_path,
                                            make_request):
    ctx = make_context(tmp_path / "ctx", f"FROM {BUSYBOX_REF}\nRUN echo built-in-run > /built.txt\n"
                                         "COPY hello.txt /hello.txt\n", {"hello.txt": "hello\n"})
    request, log = make_request(ctx, "xpresso-test/run:2")
    result = builder.build(request)
    assert result.image_id.startswith("sha256:")
    docker_api.remove_image("xpresso-test/run:2", force=True)
    loaded = docker_cli(docker_url, "load", "-i", str(request.output_tar))
    assert loaded.returncode == 0 and "xpresso-test/run:2" in loaded.stdout, loaded.stderr
    ran = docker_cli(docker_url, "run", "--rm", "--network", "none", "xpresso-test/run:2",
                     "/bin/sh", "-c", "cat /built.txt /hello.txt; echo ok")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["built-in-run", "hello", "ok"]


def test_failing_run(builder, docker_busybox, docker_api, tmp_path, make_request):
    ctx = make_context(tmp_path / "ctx", f"FROM {BUSYBOX_REF}\nRUN echo about to fail && exit 3\n")
    request, log = make_request(ctx, "xpresso-test/fail:1")
    with pytest.raises(BuildFailed) as caught:
        builder.build(request)
    assert type(caught.value) is BuildFailed
    assert "returned a non-zero code: 3" in str(caught.value) and "\n" not in str(caught.value)
    assert "about to fail" in log.lines
    assert not request.output_tar.exists() and leftovers(request.output_tar.parent) == []
    assert docker_api.containers(all=True, filters={"ancestor": BUSYBOX_REF}) == []  # forcerm


def test_bad_dockerfile_and_missing_dockerfile(builder, tmp_path, make_request):
    request, _ = make_request(make_context(tmp_path / "a", "FROM scratch\nNOTACOMMAND x\n"), "xpresso-test/bad:1")
    with pytest.raises(BuildFailed, match="(?i)unknown instruction"):
        builder.build(request)
    (tmp_path / "b").mkdir()
    request, _ = make_request(tmp_path / "b", "xpresso-test/bad:2")
    with pytest.raises(BuildFailed, match="no Dockerfile"):
        builder.build(request)
    request, _ = make_request(make_context(tmp_path / "c", "FROM scratch\n"), "xpresso-test/bad:3",
                              dockerfile="../a/Dockerfile")
    with pytest.raises(BuildFailed, match="outside the build context"):
        builder.build(request)


def _sleeping_build(tmp_path, make_request, timeout_s=120):
    ctx = make_context(tmp_path / "ctx", f"FROM {BUSYBOX_REF}\nRUN echo sleeping-now && sleep {SLEEP_S}\n")
    return make_request(ctx, "xpresso-test/sleep:1", wanted="sleeping-now", timeout_s=timeout_s)


def _nothing_left(docker_api, request) -> None:
    # The daemon killed the RUN container and removed it; no sleep process is left on the host.
    assert wait_until(lambda: docker_api.containers(all=True, filters={"ancestor": BUSYBOX_REF}) == [], 10)
    assert wait_until(lambda: not processes_running(["sleep", str(SLEEP_S)]), 10)
    assert not request.output_tar.exists() and leftovers(request.output_tar.parent) == []


def test_cancel_stops_the_daemons_build(builder, docker_busybox, docker_api, tmp_path, make_request):
    request, log = _sleeping_build(tmp_path, make_request)
    when = cancel_when_seen(request, log)
    with pytest.raises(BuildCancelled):
        builder.build(request)
    assert time.monotonic() - when["cancelled_at"] < 3
    _nothing_left(docker_api, request)


def test_timeout_stops_the_daemons_build(builder, docker_busybox, docker_api, tmp_path, make_request):
    request, log = _sleeping_build(tmp_path, make_request, timeout_s=3)
    started = time.monotonic()
    with pytest.raises(BuildTimedOut, match="timed out"):
        builder.build(request)
    assert 2.9 < time.monotonic() - started < 8
    assert "sleeping-now" in log.lines
    _nothing_left(docker_api, request)


def test_cancel_before_start(builder, tmp_path, make_request):
    request, _ = make_request(make_context(tmp_path / "ctx", "FROM scratch\n"), "xpresso-test/never:1")
    request.cancel.set()
    with pytest.raises(BuildCancelled):
        builder.build(request)
    assert not request.output_tar.exists()


def test_rebuild_replaces_the_tar(builder, tmp_path, make_request):
    out = tmp_path / "nfs" / "same.tar"
    first, _ = make_request(make_context(tmp_path / "v1", "FROM scratch\nCOPY f /f\n", {"f": "1"}),
                            "xpresso-test/same:1", output=out)
    second, _ = make_request(make_context(tmp_path / "v2", "FROM scratch\nCOPY f /f\n", {"f": "22"}),
                             "xpresso-test/same:1", output=out)
    a, b = builder.build(first), builder.build(second)
    assert a.image_id != b.image_id and b.size == out.stat().st_size
    assert leftovers(out.parent) == ["same.tar"]


def test_remove_image(builder, docker_api, tmp_path, make_request):
    import docker

    request, _ = make_request(make_context(tmp_path / "ctx", "FROM scratch\nCOPY f /f\n", {"f": "x"}),
                              "xpresso-test/gone:1")
    builder.build(request)
    builder.remove_image("xpresso-test/gone:1")
    with pytest.raises(docker.errors.NotFound):
        docker_api.inspect_image("xpresso-test/gone:1")
    builder.remove_image("xpresso-test/gone:1")  # already gone: not an error
    assert request.output_tar.exists()  # the tar is the service's business


def test_missing_sdk_is_a_config_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_docker(name, *args, **kwargs):
        if name == "docker" or name.startswith("docker."):
            raise ImportError("No module named 'docker'")
        return real_import(name, *args, **kwargs)

    # Stands in for a broken installation (the SDK is a dependency: it cannot be uninstalled here).
    monkeypatch.setattr(builtins, "__import__", no_docker)
    with pytest.raises(ConfigError, match=r"the docker SDK is not installed \(pip install docker\)"):
        DockerBuilder(base_url="unix:///nowhere.sock")
