"""deploy/Dockerfile, built and run for real with the private dockerd.

Builds here have no network, so the test prepares what a networked build would fetch:

* the base image: a root file system holding THIS machine's Python (same version as the one
  running the tests, relocated to /usr/local as in python:3.X-slim), the shared libraries it and
  its extension modules need (found with ldd) and the whole C library, Debian's useradd/groupadd
  and dash as /bin/sh, busybox-static for the other commands; imported with ``docker import`` and
  passed as the BASE_IMAGE build argument (the Dockerfile's default, python:3.11-slim, stays);
* the context: deploy/ as it is, plus wheels/ from ``pip wheel`` of a copy of the project (all of
  setup.py's install_requires at test time; pip may use the package index here, outside docker).

The image is built with ``network_mode="none"`` and run with host networking (the private dockerd
has no bridge); a container from it must answer /api/v2/health, as its non-root user, keeping its
SQLite database in a data volume across containers; and on PostgreSQL (the image is built with the
postgres extra), and with the docker builder through a mounted daemon socket.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml

from xpresso_env.config import Settings, load_settings
from xpresso_env.testing import require

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DATA = "/var/lib/xpresso-env"
CONFIG_DIR = "/etc/xpresso-env"
START_TIMEOUT_S = 90.0
# Built with the postgres extra: the image then serves SQLite (its default) and PostgreSQL.
EXTRAS = "postgres"
# Not part of a Python runtime: tests, IDLE/Tk, the static library for embedding (LIBPL), and the
# installed packages. Keeps the standard library at ~30 MB (the base tar ~70 MB with libpython).
STDLIB_SKIP = {"site-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3",
               "__pycache__", Path(sysconfig.get_config_var("LIBPL") or "config").name}
# Debian packages every python:3.X-slim image holds (Essential: yes) whose libraries wheels use.
ESSENTIAL_PACKAGES = ("libc6", "libgcc-s1")
# Left out of the copy of the source tree that pip wheel builds from: not part of the package.
SOURCE_SKIP = shutil.ignore_patterns(".git", "var", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", "wheels", "tests", "benchmarks")


# -- the parts that need no docker ----------------------------------------------------------------

def _relative_path_defaults(obj: object, prefix: str = "") -> Iterator[str]:
    """Dotted names of every setting whose default is a relative path under var/ (where the
    service writes), whichever helper added it."""
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _relative_path_defaults(value, f"{prefix}{f.name}.")
        elif isinstance(value, str) and value.startswith("var/"):
            yield f"{prefix}{f.name}"


def _get(settings: Settings, dotted: str):
    value: object = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_deploy_config_keeps_every_written_path_in_the_data_volume():
    settings = load_settings(DEPLOY / "config.yaml", env={})
    keys = list(_relative_path_defaults(Settings())) + ["storage.path"]
    assert "auth.secret_file" in keys and "images.nfs_root" in keys
    for key in keys:
        value = _get(settings, key)
        assert value and value.startswith(DATA + "/"), f"deploy/config.yaml: {key} is {value!r}, not under {DATA}"
    assert settings.storage.backend == "sqlite"


def test_dockerfile_base_image_is_a_build_argument_defaulting_to_python_slim():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim$", text, re.M)
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${BASE_IMAGE}" for f in froms), froms
    # Installs only from the context's wheels: the build never asks a package index.
    assert "--no-index --find-links /tmp/wheels" in text


# -- the base image: this machine's Python in a root file system ---------------------------------

def _ldd(paths: list[Path]) -> set[Path]:
    """Every shared library the given ELF files load (ldd resolves the whole closure)."""
    found: set[Path] = set()
    for path in paths:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m and "libpython" not in m.group(1):
                found.add(Path(m.group(1)))
    return found


def _essential_libraries() -> set[Path]:
    """The C library in full, as every Debian image has it (libpthread, libdl... which wheels'
    own extensions load, though this Python does not), from the host's packages."""
    if shutil.which("dpkg") is None:
        return set()
    listed = subprocess.run(["dpkg", "-L", *ESSENTIAL_PACKAGES], capture_output=True, text=True).stdout
    return {Path(line) for line in listed.splitlines()
            if re.fullmatch(r"/(usr/)?lib(64|/x86_64-linux-gnu)/[^/]+\.so[.0-9]*", line) and Path(line).is_file()}


def _copy_file(src: Path, root: Path, dest: str) -> None:
    target = root / dest.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.resolve(), target)


def _python_rootfs(root: Path) -> None:
    """A python:3.X-slim look-alike: Python under /usr/local, its libraries, useradd, dash."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefix = Path(sys.base_prefix)
    python = prefix / "bin" / f"python{version}"
    libpython = Path(sysconfig.get_config_var("LIBDIR") or prefix / "lib") / sysconfig.get_config_var("INSTSONAME")
    stdlib = Path(sysconfig.get_paths()["stdlib"])

    _copy_file(python, root, f"/usr/local/bin/python{version}")
    for alias in ("python3", "python"):
        os.symlink(f"python{version}", root / f"usr/local/bin/{alias}")
    if libpython.is_file():  # a shared-library build (pyenv's is); a static one has none
        _copy_file(libpython, root, f"/usr/local/lib/{libpython.name}")
    shutil.copytree(stdlib, root / f"usr/local/lib/python{version}", symlinks=True,
                    ignore=lambda folder, names: [n for n in names if n in STDLIB_SKIP or n.startswith("_tkinter")])
    (root / f"usr/local/lib/python{version}/site-packages").mkdir()
    # A distribution's Python may keep ensurepip's wheels outside its standard library (Debian:
    # WHEEL_PKG_DIR=/usr/share/python-wheels, from python3-pip-whl); the Dockerfile's `python3 -m
    # venv` looks for them at that path.
    wheel_dir = sysconfig.get_config_var("WHEEL_PKG_DIR")
    if wheel_dir and Path(wheel_dir).is_dir():
        shutil.copytree(wheel_dir, root / wheel_dir.lstrip("/"))

    tools = [Path(shutil.which(t) or f"/usr/sbin/{t}") for t in ("useradd", "groupadd")]
    for tool in tools:
        _copy_file(tool, root, f"/usr/sbin/{tool.name}")
    # /bin/sh is dash, as in Debian's images: the Dockerfile's RUN steps and the entry point run
    # under the shell they will meet in python:3.X-slim. Busybox supplies the other commands.
    dash = Path("/bin/dash")
    if dash.is_file():
        tools.append(dash)
        _copy_file(dash, root, "/bin/dash")
        os.symlink("dash", root / "bin/sh")
    elves = [python, *tools, *(root / f"usr/local/lib/python{version}/lib-dynload").glob("*.so")]
    if libpython.is_file():
        elves.append(libpython)
    for lib in _ldd(elves) | _essential_libraries():
        _copy_file(lib, root, str(lib))

    from xpresso_env.testing.daemons import find_busybox

    busybox = find_busybox()
    _copy_file(busybox, root, "/bin/busybox")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            os.symlink("busybox", link)

    etc = root / "etc"
    (etc / "default").mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nnogroup:*::\n")
    os.chmod(etc / "shadow", 0o640)
    os.chmod(etc / "gshadow", 0o640)
    shutil.copy2("/etc/login.defs", etc / "login.defs")
    (etc / "ld.so.conf").write_text("/usr/local/lib\n/lib/x86_64-linux-gnu\n")
    for folder, mode in (("tmp", 0o1777), ("root", 0o700), ("var/tmp", 0o1777)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        os.chmod(root / folder, mode)
    # The loader cache, as python:3.X-slim has one: libpython lives in /usr/local/lib.
    subprocess.run([shutil.which("ldconfig") or "/sbin/ldconfig", "-r", str(root)], check=True, capture_output=True)


def _python_base_tar(cache: Path) -> Path:
    tar_path = cache / "python-base.tar"
    if tar_path.exists():
        return tar_path
    root = cache / "rootfs"
    _python_rootfs(root)
    with tarfile.open(tar_path, "w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)
    shutil.rmtree(root)
    return tar_path


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def docker_client(docker_url: str):
    import docker

    require(os.geteuid() == 0, "the base image's loader cache is made with ldconfig -r (root)")
    client = docker.DockerClient(base_url=docker_url, version="auto", timeout=300)
    yield client
    client.close()


@pytest.fixture(scope="module")
def python_base(docker_client, tmp_path_factory) -> Iterator[str]:
    # The tar is cached under the run's base temp folder: made once per run, whatever uses it.
    cache = tmp_path_factory.getbasetemp() / "deploy-python-base"
    cache.mkdir(exist_ok=True)
    tar_path = _python_base_tar(cache)
    ref = f"xpresso-test/python-base:{uuid.uuid4().hex[:12]}"
    repository, tag = ref.split(":")
    with open(tar_path, "rb") as fh:
        docker_client.api.import_image_from_data(fh.read(), repository=repository, tag=tag,
                                                 changes=['CMD ["python3"]'])
    yield ref
    docker_client.images.remove(ref, force=True)


@pytest.fixture(scope="module")
def build_context(tmp_path_factory) -> Path:
    """deploy/ as it is, plus wheels/ of the project, of every install_requires entry and of
    the EXTRAS the image is built with."""
    base = tmp_path_factory.mktemp("deploy-context")
    context = base / "context"
    shutil.copytree(DEPLOY, context, ignore=shutil.ignore_patterns("wheels"))
    # pip builds in the source folder: build from a copy so the shared tree gets no build/.
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=SOURCE_SKIP)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--use-pep517",
                          "--quiet", f"{source}[{EXTRAS}]", "-w", str(context / "wheels")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"pip wheel failed:\n{res.stdout}\n{res.stderr}"
    names = [p.name for p in (context / "wheels").iterdir()]
    assert any(n.startswith("xpresso_env-") for n in names), names
    return context


@pytest.fixture(scope="module")
def image(docker_client, python_base: str, build_context: Path) -> Iterator[str]:
    tag = f"xpresso-test/xpresso-env:{uuid.uuid4().hex[:12]}"
    # network_mode none: the build itself must need no network at all.
    stream = docker_client.api.build(path=str(build_context), tag=tag,
                                     buildargs={"BASE_IMAGE": python_base, "XPRESSO_EXTRAS": EXTRAS},
                                     network_mode="none", rm=True, forcerm=True, pull=False, decode=True)
    log = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in stream)
    # Every image this build made, the install stage's included (the classic builder leaves that
    # stage untagged): removed at the end, one by one; never a prune, the daemon is shared.
    base_id = docker_client.api.inspect_image(python_base)["Id"].split(":")[-1]
    made = [i for i in re.findall(r"^ ---> ([0-9a-f]{12})$", log, re.M) if not base_id.startswith(i)]
    try:
        if "Successfully tagged" not in log:
            pytest.fail(f"docker build failed:\n{log[-6000:]}", pytrace=False)
        yield tag
    finally:
        _remove_images(docker_client, [tag, *reversed(made)])


def _remove_images(docker_client, refs: list[str]) -> None:
    import docker

    for ref in refs:
        try:
            docker_client.images.remove(ref, force=False)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            pass  # still a parent of another of ours (removed with it) or in use by someone else


@pytest.fixture
def volume(docker_client) -> Iterator[str]:
    vol = docker_client.volumes.create(name=f"xpresso-test-data-{uuid.uuid4().hex[:12]}")
    yield vol.name
    vol.remove(force=True)


@pytest.fixture
def containers(docker_client) -> Iterator[list]:
    started: list = []
    yield started
    for container in started:
        container.remove(force=True, v=True)  # v: its anonymous /etc/xpresso-env volume too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(container, port: int) -> dict:
    """Poll /api/v2/health until it answers 200 (or the container stops: fail with its log)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://127.0.0.1:{port}/api/v2/health"
    while True:
        container.reload()
        if container.status not in ("created", "running"):
            pytest.fail(f"container stopped ({container.status}):\n{container.logs().decode()}", pytrace=False)
        try:
            resp = requests.get(url, timeout=5)
            if resp.status_code == 200:
                return resp.json()
        except (requests.ConnectionError, requests.Timeout):
            pass  # still starting (a busy machine may take longer than one request's timeout)
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer 200 in {START_TIMEOUT_S} s:\n{container.logs().decode()}",
                        pytrace=False)
        time.sleep(0.2)


def _stop(container) -> int:
    container.stop(timeout=20)
    return container.wait(timeout=30)["StatusCode"]


def _process_uid(docker_client, container) -> int:
    pid = docker_client.api.inspect_container(container.id)["State"]["Pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


# -- the image ----------------------------------------------------------------------------------

def test_image_runs_as_non_root_with_config_and_data_volumes(docker_client, image):
    config = docker_client.api.inspect_image(image)["Config"]
    user = config["User"]
    assert user and user.split(":")[0] not in ("", "0", "root"), user
    assert set(config["Volumes"]) == {CONFIG_DIR, DATA}
    assert config["Entrypoint"] == ["/usr/local/bin/xpresso-env-entrypoint"]
    assert config["Cmd"] == ["serve"]
    assert f"XPRESSO_ENV_CONFIG={CONFIG_DIR}/config.yaml" in config["Env"]


def test_container_answers_health_as_its_user_keeping_sqlite_in_the_volume(
        docker_client, image, volume, containers, tmp_path):
    uid, gid = (int(x) for x in docker_client.api.inspect_image(image)["Config"]["User"].split(":"))
    port = _free_port()
    first = docker_client.containers.run(
        image, detach=True, network_mode="host", volumes={volume: {"bind": DATA, "mode": "rw"}},
        environment={"XPRESSO_ENV_SERVER_PORT": str(port), "XPRESSO_INIT_ADMIN": "admin",
                     "XPRESSO_INIT_GROUP": "ops"})
    containers.append(first)
    health = _wait_healthy(first, port)
    assert health["status"] == "ok" and health["storage"] == "sqlite"
    assert _process_uid(docker_client, first) == uid

    # The first start initialised the storage in the volume and made the first administrator.
    log = first.logs().decode()
    assert "(created)" in log, log
    tokens = re.findall(r"^(Jwt \S+)$", log, re.M)
    assert len(tokens) == 1, log
    resp = requests.get(f"http://127.0.0.1:{port}/api/v2/harnesses",
                        headers={"Authorization": tokens[0], "Group": "ops"}, timeout=10)
    assert resp.status_code == 200, resp.text
    # The web page and its files come from the wheel's install (package_data), the client too.
    for path in ("/", "/ui/app.js", "/ui/swagger-ui-bundle.js"):
        resp = requests.get(f"http://127.0.0.1:{port}{path}", timeout=10)
        assert resp.status_code == 200 and len(resp.content) > 100, path
    client = first.exec_run(["xpresso", "--version"])
    assert client.exit_code == 0 and client.output.decode().startswith("xpresso "), client.output

    # The container's own HEALTHCHECK command agrees.
    check = first.exec_run(docker_client.api.inspect_image(image)["Config"]["Healthcheck"]["Test"][1:])
    assert check.exit_code == 0, check.output.decode()

    # docker stop's SIGTERM reaches the server itself (exec'd, not behind a shell): a clean exit.
    assert _stop(first) == 0, first.logs().decode()
    data = Path(docker_client.api.inspect_volume(volume)["Mountpoint"])
    for name in ("xpresso.sqlite3", "jwt-secret"):
        st = (data / name).stat()
        assert (st.st_uid, st.st_gid) == (uid, gid), name
    assert oct((data / "jwt-secret").stat().st_mode & 0o777) == "0o600"

    # A second container on the same volume, with its config mounted from the host: same data, same
    # secret (the first token still works), and no second token although XPRESSO_INIT_ADMIN is set.
    port2 = _free_port()
    config = yaml.safe_load((DEPLOY / "config.yaml").read_text())
    config["server"]["port"] = port2
    host_config = tmp_path / "config.yaml"
    host_config.write_text(yaml.safe_dump(config))
    host_config.chmod(0o644)
    second = docker_client.containers.run(
        image, detach=True, network_mode="host",
        volumes={volume: {"bind": DATA, "mode": "rw"},
                 str(host_config): {"bind": f"{CONFIG_DIR}/config.yaml", "mode": "ro"}},
        environment={"XPRESSO_INIT_ADMIN": "admin", "XPRESSO_INIT_GROUP": "ops"})
    containers.append(second)
    _wait_healthy(second, port2)
    log2 = second.logs().decode()
    assert "already up to date" in log2 and "Jwt " not in log2, log2
    resp = requests.get(f"http://127.0.0.1:{port2}/api/v2/harnesses",
                        headers={"Authorization": tokens[0], "Group": "ops"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert _stop(second) == 0, second.logs().decode()


def _run(docker_client, image: str, command: list[str], **kwargs) -> tuple[int, str]:
    """Run a command in a container to its end (within a time limit); its exit code and output."""
    container = docker_client.containers.run(image, command, detach=True, network_mode="none", **kwargs)
    try:
        code = container.wait(timeout=60)["StatusCode"]
        return code, container.logs().decode()
    finally:
        container.remove(force=True, v=True)


def test_container_runs_cli_subcommands_and_plain_commands(docker_client, image, volume):
    """`docker run IMAGE <subcommand>` is xpresso-env's, even `init` (also an executable in many
    images, busybox's here); an executable runs as it is."""
    mounts = {volume: {"bind": DATA, "mode": "rw"}}
    code, out = _run(docker_client, image, ["init"], volumes=mounts)
    assert code == 0 and "schema version" in out, out
    code, out = _run(docker_client, image, ["user", "add", "carol"], volumes=mounts)
    assert code == 0 and "user carol created" in out, out
    code, out = _run(docker_client, image, ["id", "-u"])
    uid = docker_client.api.inspect_image(image)["Config"]["User"].split(":")[0]
    assert code == 0 and out.strip() == uid, out
    code, out = _run(docker_client, image, ["no-such-command"])
    assert code != 0 and "invalid choice" in out, out
    # Flags alone are serve's; XPRESSO_SKIP_INIT=1 starts without `init`.
    code, out = _run(docker_client, image, ["--help"], environment={"XPRESSO_SKIP_INIT": "1"})
    assert code == 0 and "usage: xpresso-env serve" in out and "schema version" not in out, out


def test_container_serves_postgresql_storage_with_the_postgres_extra(docker_client, image, containers):
    """XPRESSO_EXTRAS=postgres put psycopg in the image: storage on the machine's PostgreSQL."""
    from xpresso_env.testing.postgres import _connect, admin_dsn, postgres_available, temp_database

    require(postgres_available(), "PostgreSQL is not reachable at 127.0.0.1:5432")
    from psycopg.conninfo import make_conninfo

    with _connect(admin_dsn()) as conn:  # trust auth: connect as the role the tests use
        role = conn.execute("SELECT current_user").fetchone()[0]
    with temp_database("xpresso_deploy") as dsn:
        port = _free_port()
        container = docker_client.containers.run(
            image, detach=True, network_mode="host",
            environment={"XPRESSO_ENV_SERVER_PORT": str(port), "XPRESSO_ENV_STORAGE_BACKEND": "postgres",
                         "XPRESSO_ENV_STORAGE_DSN": make_conninfo(dsn, user=role)})
        containers.append(container)
        health = _wait_healthy(container, port)
        assert health["status"] == "ok" and health["storage"] == "postgres", health
        assert "(created)" in container.logs().decode()
        assert _stop(container) == 0, container.logs().decode()


def test_container_builds_with_the_hosts_docker_through_its_socket(docker_client, docker_url, image, volume,
                                                                     containers):
    """The documented way to let the service build images with Docker: the daemon's socket mounted
    at /var/run/docker.sock and its group added; the health answer then names the docker builder."""
    require(docker_url.startswith("unix://"), "the daemon is not reached through a unix socket")
    sock = docker_url[len("unix://"):]
    before = _wait_for_builder(docker_client, image, volume, containers, mounts={})
    assert before["builder"] != "docker" and "docker" in before["builder_skipped"], before
    after = _wait_for_builder(docker_client, image, volume, containers,
                              mounts={sock: {"bind": "/var/run/docker.sock", "mode": "rw"}},
                              group_add=[str(os.stat(sock).st_gid)])
    assert after["builder"] == "docker" and not after["builder_skipped"], after


def _wait_for_builder(docker_client, image, volume, containers, mounts, **kwargs) -> dict:
    port = _free_port()
    container = docker_client.containers.run(
        image, detach=True, network_mode="host", volumes={volume: {"bind": DATA, "mode": "rw"}, **mounts},
        environment={"XPRESSO_ENV_SERVER_PORT": str(port)}, **kwargs)
    containers.append(container)
    health = _wait_healthy(container, port)
    assert _stop(container) == 0, container.logs().decode()
    return health


def test_worker_container_inits_then_runs_the_worker(docker_client, image, volume, containers):
    """`docker run IMAGE worker`: the same entry point runs init, then the build worker (no HTTP)."""
    container = docker_client.containers.run(image, ["worker"], detach=True, network_mode="none",
                                             volumes={volume: {"bind": DATA, "mode": "rw"}})
    containers.append(container)
    deadline = time.monotonic() + START_TIMEOUT_S
    while "xpresso-env worker:" not in container.logs().decode():
        container.reload()
        if container.status not in ("created", "running") or time.monotonic() > deadline:
            pytest.fail(f"no worker ({container.status}):\n{container.logs().decode()}", pytrace=False)
        time.sleep(0.2)
    log = container.logs().decode()
    assert log.index("schema version") < log.index("xpresso-env worker:"), log
    assert _stop(container) == 0, container.logs().decode()
