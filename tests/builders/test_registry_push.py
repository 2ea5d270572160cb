"""Registry push (issue 9): real builders (private dockerd, buildah store) pushing to a real
registry (Debian's docker-registry on loopback, once anonymous, once with htpasswd basic auth).
The pushed image is pulled back by docker and by buildah and its digest compared with push_url.

Stand-ins, named as such: two tiny HTTP servers on loopback play a BROKEN registry (one answers
500 to everything, one accepts connections and never answers, one answers ``GET /v2/`` but hangs
on the upload), because a real registry cannot be made to misbehave on demand.
"""
from __future__ import annotations

import dataclasses
import http.server
import json
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from xpresso_env_plugins.builder_buildah import BuildahBuilder
from xpresso_env_plugins.builder_docker import DockerBuilder
from xpresso_env_plugins.builder_dryrun import DryRunBuilder

from tests.images.conftest import backend, builder_config, make_image_world, polaris_repo  # noqa: F401 (fixtures)
from xpresso_env.builds.push import PushError, target_for
from xpresso_env.builds.sdk.builder import BuildCancelled, BuildFailed, BuildTimedOut
from xpresso_env.builds.sdk.push import PushTarget
from xpresso_env.config import RegistrySettings, load_settings
from xpresso_env.core.errors import ConfigError
from xpresso_env.testing import require
from xpresso_env.testing.daemons import BUSYBOX_REF
from xpresso_env.testing.registry import Registry, docker_registry, registry_missing_reason

from .conftest import make_context, wait_until

PASSWORD = "s3cret-Pa55word"
BUILDERS = ["docker", "buildah"]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("registry, message", [
    ({"url": "https://reg.example.com/some/path"}, "no path"),
    ({"url": "https://bob:pw@reg.example.com"}, "must not hold a user name"),
    ({"url": "ftp://reg.example.com"}, "http:// or https://"),
    ({"url": "reg.example.com"}, "http:// or https://"),
    ({"url": "http://reg.example.com:5000"}, "needs registry.insecure: true"),
    ({"url": "https://reg.example.com", "namespace": "{team}"}, "unknown placeholder {team}"),
    ({"url": "https://reg.example.com", "namespace": "Bad Name!"}, "not a valid repository path"),
    ({"url": "https://reg.example.com", "namespace": "a//{group}"}, "not a valid repository path"),
    ({"url": "https://reg.example.com", "username": "bob"}, "go together"),
])
def test_bad_registry_settings_stop_start_up(registry, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(None, env={}, overrides={"registry": registry})


def test_good_registry_settings_and_network_options():
    s = load_settings(None, env={"XPRESSO_ENV_REGISTRY_URL": "http://127.0.0.1:5000",
                                 "XPRESSO_ENV_REGISTRY_INSECURE": "true"},
                      overrides={"registry": {"namespace": "Team/{group}"},
                                 "builder": {"docker": {"network_mode": "none"},
                                             "buildah": {"network": "none", "isolation": "oci"}}})
    assert s.registry.url == "http://127.0.0.1:5000" and s.registry.namespace == "Team/{group}"
    assert s.builder.docker.network_mode == "none" and s.builder.buildah.network == "none"
    assert load_settings(None, env={}).registry == RegistrySettings()  # off by default
    with pytest.raises(ConfigError, match="needs builder.buildah.isolation: oci"):
        load_settings(None, env={}, overrides={"builder": {"buildah": {"network": "none"}}})


def test_push_target(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    reg = RegistrySettings(url="https://Reg.Example.com:5443/", username="bob", password_file=str(pw),
                           namespace="CI/{group}")
    t = target_for(reg, pw, "MyGroup", "polaris", "v1")
    assert t.ref == "reg.example.com:5443/ci/mygroup/polaris:v1" and t.password == PASSWORD
    assert PASSWORD not in repr(t) and t.auth == {"username": "bob", "password": PASSWORD}
    with pytest.raises(PushError, match="not a valid repository path"):
        target_for(reg, pw, "bad group", "polaris", "v1")
    with pytest.raises(PushError, match="cannot read registry.password_file"):
        target_for(reg, tmp_path / "missing", "g1", "polaris", "v1")
    assert target_for(RegistrySettings(), None, "g1", "p", "1") is None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reason = registry_missing_reason()
    require(reason is None, reason or "")
    with docker_registry() as reg:
        yield reg


@pytest.fixture(scope="module")
def auth_registry() -> Iterator[Registry]:
    reason = registry_missing_reason()
    require(reason is None, reason or "")
    with docker_registry(username="alice", password=PASSWORD) as reg:
        yield reg


@pytest.fixture(params=BUILDERS)
def real_builder(request):
    """(name, builder) for each real builder, on the session's dockerd / buildah store."""
    if request.param == "docker":
        request.getfixturevalue("docker_busybox")
        return "docker", DockerBuilder(base_url=request.getfixturevalue("docker_url"))
    store = request.getfixturevalue("buildah_store")
    return "buildah", BuildahBuilder(storage_driver="vfs", isolation="chroot", root=store.root,
                                     runroot=store.runroot)


def _target(reg: Registry, name: str, tag: str, password: str | None = None, namespace: str = "g1") -> PushTarget:
    return PushTarget(registry=reg.host, repository=f"{reg.host}/{namespace}/{name}", tag=tag, insecure=True,
                      secure_scheme=False, username=reg.username,
                      password=password if password is not None else reg.password)


def _request(make_request, tmp_path: Path, ref: str, target, marker: str, timeout_s: float = 120):
    ctx = make_context(tmp_path / f"ctx-{marker}", f"FROM {BUSYBOX_REF}\nLABEL marker={marker}\n"
                                                   f"RUN echo {marker} > /marker.txt\n")
    request, log = make_request(ctx, ref, timeout_s=timeout_s)
    return dataclasses.replace(request, push=target), log


def _auth_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("xpresso-auth-*")}


def _pull_back(name: str, request, url: str, reg: Registry) -> None:
    """Pull ``url`` (ref@digest) with docker and with buildah; both must get that digest."""
    reg_ref, digest = url.split("@")
    docker_api = request.getfixturevalue("docker_api")
    repo, tag = reg_ref.rsplit(":", 1)
    creds = {"username": reg.username, "password": reg.password} if reg.username else None
    docker_api.pull(repo, tag, auth_config=creds)
    assert f"{repo}@{digest}" in docker_api.inspect_image(reg_ref)["RepoDigests"]
    docker_api.remove_image(reg_ref, force=True)
    store = request.getfixturevalue("buildah_store")
    by_digest = f"{repo}@{digest}"  # this buildah takes no name:tag@digest
    login = ["--creds", f"{reg.username}:{reg.password}"] if reg.username else []  # the test's own pull
    pulled = store.buildah("pull", "--tls-verify=false", "--quiet", *login, f"docker://{by_digest}")
    assert pulled.returncode == 0, pulled.stderr
    inspected = store.buildah("inspect", "--type", "image", "--format", "{{.FromImageDigest}}", pulled.stdout.strip())
    assert inspected.stdout.strip() == digest, inspected.stdout
    store.buildah("rmi", "--force", pulled.stdout.strip())


# --------------------------------------------------------------------------- pushes


def test_push_anonymous_and_pull_back(real_builder, registry, make_request, tmp_path, request):
    name, builder = real_builder
    ref = f"xpresso-test/push-{name}:v1"
    req, log = _request(make_request, tmp_path, ref, _target(registry, f"push-{name}", "v1"), f"anon-{name}")
    result = builder.build(req)
    assert re.fullmatch(rf"{re.escape(registry.host)}/g1/push-{name}:v1@sha256:[0-9a-f]{{64}}", result.push_url)
    assert req.output_tar.exists() and result.image_id.startswith("sha256:")
    assert f"pushed {result.push_url}" in log.lines
    _pull_back(name, request, result.push_url, registry)


def test_push_with_basic_auth_and_a_wrong_password(real_builder, auth_registry, make_request, tmp_path, request):
    name, builder = real_builder
    before = _auth_folders()
    ref = f"xpresso-test/auth-{name}:v1"
    req, log = _request(make_request, tmp_path, ref, _target(auth_registry, f"auth-{name}", "v1"), f"auth-{name}")
    result = builder.build(req)
    assert result.push_url.startswith(f"{auth_registry.host}/g1/auth-{name}:v1@sha256:")
    good_tar = req.output_tar.read_bytes()
    _pull_back(name, request, result.push_url, auth_registry)

    # The same name:tag again with a wrong password: the build fails saying why, the tar of the
    # good build stays as it was (nothing is published half-way), no password in the log.
    req2, log2 = _request(make_request, tmp_path, ref, _target(auth_registry, f"auth-{name}", "v1", password="wrong"),
                          f"auth2-{name}")
    with pytest.raises(BuildFailed) as caught:
        builder.build(req2)
    message = str(caught.value)
    assert message.startswith("push refused: 401") and "\n" not in message, message
    assert req2.output_tar.read_bytes() == good_tar
    assert not list(req2.output_tar.parent.glob(".*.part"))
    for text in (log.text, log2.text, message):
        assert PASSWORD not in text
    assert "wrong" not in log2.text
    assert _auth_folders() == before  # buildah's authfile existed for the push only


def test_anonymous_push_to_a_registry_that_needs_credentials(real_builder, auth_registry, make_request, tmp_path):
    name, builder = real_builder
    target = PushTarget(registry=auth_registry.host, repository=f"{auth_registry.host}/g1/anon-{name}", tag="v1",
                        insecure=True, secure_scheme=False)
    req, _ = _request(make_request, tmp_path, f"xpresso-test/anon-{name}:v1", target, f"needs-{name}")
    with pytest.raises(BuildFailed, match="push refused: 401 .*needs credentials"):
        builder.build(req)
    assert not req.output_tar.exists()


def test_dry_run_pushes_nothing(registry, make_request, tmp_path):
    req, log = _request(make_request, tmp_path, "xpresso-test/dry:v1", _target(registry, "dry", "v1"), "dry")
    result = DryRunBuilder().build(req)
    assert result.push_url is None and result.meta["push"].startswith("skipped (dry-run)")
    assert any("NOT pushing" in line for line in log.lines)


# --------------------------------------------------------------------------- broken registries (stand-ins)


class _Broken(http.server.BaseHTTPRequestHandler):
    mode = "500"
    release = threading.Event()

    def log_message(self, *args) -> None:
        pass

    def _any(self) -> None:
        if self.mode == "500" or (self.mode == "v2-only" and self.path != "/v2/"):
            if self.mode == "v2-only":
                self.release.wait(60)  # the upload hangs
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _any


@pytest.fixture
def broken_registry():
    servers = []

    def start(mode: str) -> str:
        handler = type("Handler", (_Broken,), {"mode": mode, "release": threading.Event()})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, handler))
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server, handler in servers:
        handler.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_registry():
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def _plain_target(host: str, name: str) -> PushTarget:
    return PushTarget(registry=host, repository=f"{host}/g1/{name}", tag="v1", insecure=True, secure_scheme=False)


def test_a_registry_answering_500_fails_the_build(real_builder, broken_registry, make_request, tmp_path):
    name, builder = real_builder
    host = broken_registry("500")
    req, _ = _request(make_request, tmp_path, f"xpresso-test/r500-{name}:v1", _plain_target(host, "r500"), f"500{name}")
    with pytest.raises(BuildFailed, match="push failed: the registry .* answered 500"):
        builder.build(req)
    assert not req.output_tar.exists() and not list(req.output_tar.parent.glob(".*.part"))


def test_a_registry_that_hangs_is_bounded_by_the_timeout(real_builder, silent_registry, make_request, tmp_path):
    name, builder = real_builder
    req, _ = _request(make_request, tmp_path, f"xpresso-test/hang-{name}:v1", _plain_target(silent_registry, "hang"),
                      f"hang{name}", timeout_s=12)
    with pytest.raises(BuildTimedOut):
        builder.build(req)
    assert not req.output_tar.exists()


def test_cancel_during_the_push_stops_it(real_builder, broken_registry, make_request, tmp_path):
    """The registry lets the pre-flight check in and then hangs on the upload: a cancel stops
    the push (docker: the daemon's push request is closed; buildah: its process is killed)."""
    name, builder = real_builder
    host = broken_registry("v2-only")
    req, log = _request(make_request, tmp_path, f"xpresso-test/cpush-{name}:v1", _plain_target(host, "cpush"),
                        f"cpush{name}")
    log.wanted = "pushing xpresso-test/cpush"

    def cancel_soon() -> None:
        if log.seen.wait(60):
            time.sleep(1.0)  # into the upload
            req.cancel.set()

    threading.Thread(target=cancel_soon, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(BuildCancelled):
        builder.build(req)
    assert time.monotonic() - started < 55  # not the upload's 60 s hang
    assert not req.output_tar.exists()
    if name == "buildah":
        assert wait_until(lambda: not _buildah_pushing(host), 10)


def _buildah_pushing(host: str) -> bool:
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"buildah" in cmd and f"docker://{host}".encode() in cmd:
            return True
    return False


# --------------------------------------------------------------------------- through the service


@pytest.mark.parametrize("name", BUILDERS)
def test_through_the_service(name, auth_registry, request, make_image_world, tmp_path):  # noqa: F811
    """registry.* set: the record's push_url is the pinned reference; a wrong password fails the
    next build with `push refused: 401 …` and no secret reaches the record or the log."""
    pw = tmp_path / "registry-password"
    pw.write_text(PASSWORD + "\n")
    config = builder_config(name, request)
    config["registry"] = {"url": auth_registry.url, "insecure": True, "username": "alice",
                          "password_file": str(pw), "namespace": "CI/{group}"}
    w = make_image_world(builder=name, config=config)
    rec = w.wait(w.submit({"name": f"svc-{name}", "tag": "v1", "git_ref": "main"}).json["uuid"], timeout_s=120)
    assert rec["status"] == "successful", w.log(rec["uuid"])
    assert re.fullmatch(rf"{re.escape(auth_registry.host)}/ci/g1/svc-{name}:v1@sha256:[0-9a-f]{{64}}", rec["push_url"])
    assert f"pushed {rec['push_url']}" in w.log(rec["uuid"])
    _pull_back(name, request, rec["push_url"], auth_registry)
    tar = Path(rec["nfs_path"]).read_bytes()

    pw.write_text("not-the-password\n")  # read at each push
    bad = w.wait(w.submit({"name": f"svc-{name}", "tag": "v1", "git_ref": "feature"}).json["uuid"], timeout_s=120)
    assert bad["status"] == "failed" and bad["push_url"] is None
    assert bad["meta"]["error"].startswith("push refused: 401"), bad["meta"]["error"]
    assert Path(rec["nfs_path"]).read_bytes() == tar  # the good build's tar stays
    for text in (w.log(bad["uuid"]), json.dumps(bad), w.log(rec["uuid"]), json.dumps(rec)):
        assert PASSWORD not in text and "not-the-password" not in text
