"""The dry-run builder (a tar of the build context), and choosing a builder by configuration."""
from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile

import pluggy
import pytest
from xpresso_env_plugins import builder_buildah, builder_docker
from xpresso_env_plugins.builder_dryrun import DryRunBuilder

from xpresso_env import hookspecs
from xpresso_env.builds.sdk.builder import BuildCancelled, Builder, BuildFailed, select_builder
from xpresso_env.builds.slot import BuilderSlot
from xpresso_env.config import load_settings
from xpresso_env.core.errors import ConfigError, ServiceUnavailable
from xpresso_env.plugin import builders, make_plugin_manager
from xpresso_env.testing import require

from .conftest import leftovers, make_context


def test_writes_a_tar_of_the_context(tmp_path, make_request):
    ctx = make_context(tmp_path / "ctx", "FROM scratch\n", {"a_job.py": "print(1)\n", "sub/x.tem": "t\n"})
    (ctx / ".git").mkdir()
    (ctx / ".git" / "config").write_text("secret-ish\n")
    (ctx / "sub" / "nested" / ".git").mkdir(parents=True)
    (ctx / "sub" / "nested" / ".git" / "HEAD").write_text("x\n")
    (ctx / "empty").mkdir()
    (ctx / "link").symlink_to("/etc/passwd")
    request, log = make_request(ctx, "xpresso-test/dry:1")
    result = DryRunBuilder().build(request)

    data = request.output_tar.read_bytes()
    assert result.image_id == "dryrun:" + hashlib.sha256(data).hexdigest()
    assert not result.image_id.startswith("sha256:")
    assert result.size == len(data) and result.meta == {"dry_run": True}
    with tarfile.open(request.output_tar) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["Dockerfile", "a_job.py", "empty", "link", "sub", "sub/nested", "sub/x.tem"]
    assert members["link"].issym() and members["link"].linkname == "/etc/passwd"  # not followed
    assert any("NOT building an image" in line for line in log.lines)
    assert any("no image was built" in line for line in log.lines)
    assert leftovers(request.output_tar.parent) == ["1.tar"]


def test_cancel_and_missing_dockerfile(tmp_path, make_request):
    ctx = make_context(tmp_path / "ctx", "FROM scratch\n")
    request, _ = make_request(ctx, "xpresso-test/dry:2")
    request.cancel.set()
    with pytest.raises(BuildCancelled):
        DryRunBuilder().build(request)
    assert leftovers(request.output_tar.parent) == []
    (tmp_path / "bare").mkdir()
    request, _ = make_request(tmp_path / "bare", "xpresso-test/dry:3")
    with pytest.raises(BuildFailed, match="no Dockerfile"):
        DryRunBuilder().build(request)


def test_protocol():
    assert isinstance(DryRunBuilder(), Builder)
    assert DryRunBuilder().available() is None
    DryRunBuilder().remove_image("anything:1")


# --------------------------------------------------------------------------- select_builder

def settings_for(backend: str, docker_url: str | None = None):
    builder = {"backend": backend}
    if docker_url:
        builder["docker"] = {"base_url": docker_url}
    return load_settings(None, env={}, overrides={"builder": builder})


def only(*plugins) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("xpresso_env")
    pm.add_hookspecs(hookspecs)
    for plugin in plugins:
        pm.register(plugin)
    return pm


def installed(pm: pluggy.PluginManager | None = None):
    return builders(pm or make_plugin_manager(load_entry_points=False))


def test_select_by_name(tmp_path):
    assert isinstance(select_builder(installed(), settings_for("dry-run")).builder, DryRunBuilder)
    assert select_builder(installed(), settings_for("buildah")).builder.name == "buildah"
    # By name, a builder is returned even when it cannot build now: the service reports that.
    docker = select_builder(installed(), settings_for("docker", f"unix://{tmp_path}/none.sock"))
    assert docker.builder.name == "docker" and docker.builder.available() and docker.skipped == {}


def test_unknown_name_lists_the_installed_ones():
    with pytest.raises(ConfigError, match="unknown builder 'kaniko'; installed: buildah, docker, dry-run"):
        select_builder(installed(), settings_for("kaniko"))


def test_auto_prefers_docker(docker_url):
    choice = select_builder(installed(), settings_for("auto", docker_url))
    assert choice.builder.name == "docker" and choice.skipped == {}


def test_auto_falls_back_to_buildah_and_says_why(tmp_path):
    require(shutil.which("buildah") is not None, "buildah is not installed")
    choice = select_builder(installed(), settings_for("auto", f"unix://{tmp_path}/none.sock"))
    assert choice.builder.name == "buildah"
    assert choice.skipped == {"docker": f"docker daemon not reachable at unix://{tmp_path}/none.sock: "
                                        "No such file or directory"}


def test_auto_never_picks_dry_run_and_says_why(tmp_path):
    from xpresso_env_plugins import builder_dryrun

    settings = settings_for("auto", f"unix://{tmp_path}/none.sock")
    choice = select_builder(installed(only(builder_docker, builder_dryrun)), settings)
    assert choice.builder is None and list(choice.skipped) == ["docker"]
    slot = BuilderSlot(installed(only(builder_docker, builder_dryrun)), settings)
    with pytest.raises(ServiceUnavailable) as caught:
        slot.get()
    assert str(caught.value).startswith("no image builder available: docker: docker daemon not reachable")
    assert slot.skipped() == choice.skipped and slot.status() == (None, caught.value.detail)
    slot = BuilderSlot(installed(only(builder_dryrun)), settings_for("auto"))
    with pytest.raises(ServiceUnavailable, match="none installed"):
        slot.get()


def test_auto_skips_a_builder_whose_setup_fails(tmp_path, monkeypatch):
    class Broken:
        @hookspecs.hookimpl
        def xpresso_builders(self):
            from xpresso_env.builds.sdk.builder import BuilderInfo

            def factory(settings):
                raise ConfigError("the broken builder needs pip install broken")
            return [BuilderInfo("broken", "always fails", factory, auto_priority=-1)]

    choice = select_builder(installed(only(Broken(), builder_buildah)), settings_for("auto"))
    assert choice.skipped["broken"] == "the broken builder needs pip install broken"
    if shutil.which("buildah"):
        assert choice.builder.name == "buildah"
    with pytest.raises(ServiceUnavailable, match="broken: the broken builder needs pip install broken"):
        BuilderSlot(installed(only(Broken())), settings_for("auto")).get()
    # a docker SDK that cannot be imported is a reason to skip docker too
    monkeypatch.setitem(sys.modules, "docker", None)
    choice = select_builder(installed(only(builder_docker, builder_buildah)), settings_for("auto"))
    assert choice.skipped["docker"] == "the docker SDK is not installed (pip install docker)"
