"""Real daemons and base images for the builder tests.

* :func:`docker_daemon` starts a PRIVATE ``dockerd`` (its own socket, data root, exec root, no
  iptables, no bridge) and stops it afterwards, unmounting what it left mounted in its folder,
  or uses the one named by ``XPRESSO_TEST_DOCKER_HOST`` (what ``.ci/start-dockerd`` prints).
* :func:`make_busybox_base` imports a tiny base image holding Debian's static busybox into a
  Docker daemon, so test Dockerfiles can ``RUN`` without any network;
  :func:`make_buildah_busybox_base` makes the same image in a buildah store.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from .leaks import mounts_under, unmount_under
from .tempdirs import ram_temp_root

DOCKER_HOST_ENV = "XPRESSO_TEST_DOCKER_HOST"
BUSYBOX_REF = "xpresso-test/busybox:latest"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")  # Debian's busybox-static
BUSYBOX_APPLETS = ("sh", "sleep", "echo", "cat", "true", "false", "ls", "mkdir", "rm", "touch", "env")


class DaemonError(RuntimeError):
    pass


def dockerd_command(base: Path) -> list[str]:
    """The private dockerd's command line: everything lives under ``base``."""
    return ["dockerd", "--host", f"unix://{base}/docker.sock", "--data-root", str(base / "data"),
            "--exec-root", str(base / "exec"), "--pidfile", str(base / "dockerd.pid"),
            "--config-file", str(base / "daemon.json"),
            "--iptables=false", "--ip6tables=false", "--bridge=none", "--log-level=warn"]


def _ping(url: str, timeout: float = 2.0) -> bool:
    import docker

    try:
        api = docker.APIClient(base_url=url, version="auto", timeout=timeout)
    except Exception:
        return False
    try:
        return bool(api.ping())
    except Exception:
        return False
    finally:
        api.close()


def dockerd_missing_reason() -> Optional[str]:
    """Why a private dockerd cannot be started here, or None."""
    if os.environ.get(DOCKER_HOST_ENV):
        return None
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (Debian package docker.io)"
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker SDK is missing: pip install docker (a dependency of xpresso-env)"
    return None


def private_folder() -> Path:
    """A new folder for a private dockerd's files: in RAM when there is room (image layers are
    committed with fsyncs, see tempdirs), and short: a socket path is limited to 108 bytes."""
    return Path(tempfile.mkdtemp(prefix="xpd-", dir=ram_temp_root() or "/tmp"))


@contextlib.contextmanager
def docker_daemon(base: Optional[Path] = None, start_timeout_s: float = 60.0) -> Iterator[str]:
    """Yield the ``unix://`` URL of a Docker daemon for tests.

    ``XPRESSO_TEST_DOCKER_HOST`` set: that daemon is used as it is (and left running).
    Otherwise a private dockerd is started in folder ``base`` (default: a new
    :func:`private_folder`), stopped at the end and its folder removed, mounts and all.
    """
    given = os.environ.get(DOCKER_HOST_ENV)
    if given:
        if not _ping(given, timeout=10):
            raise DaemonError(f"{DOCKER_HOST_ENV}={given} does not answer")
        yield given
        return
    base = base or private_folder()
    (base / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json
    url = f"unix://{base}/docker.sock"
    logfile = open(base / "dockerd.log", "wb")
    proc = subprocess.Popen(dockerd_command(base), stdin=subprocess.DEVNULL, stdout=logfile,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _ping(url, timeout=1):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (base / "dockerd.log").read_text(errors="replace")[-2000:]
                raise DaemonError(f"private dockerd did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.1)
        yield url
    finally:
        _stop(proc)
        logfile.close()
        # A dockerd that ran a host-network container leaves exec/netns/default mounted when it
        # stops (and a killed one its containers' mounts): the folder cannot go while they stay.
        unmount_under(base)
        if not mounts_under(base):  # never remove files through a mount that stayed
            shutil.rmtree(base, ignore_errors=True)


def _stop(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # dockerd stops its containers and its containerd
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and _is_static(path):
            return path
    raise DaemonError("no static busybox found (Debian package busybox-static)")


def _is_static(path: Path) -> bool:
    # A dynamically linked ELF names its interpreter in a PT_INTERP header: look for its path.
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return head.startswith(b"\x7fELF") and b"/lib64/ld-linux" not in head and b"/lib/ld-" not in head


def busybox_rootfs_tar(busybox: Optional[Path] = None) -> bytes:
    """A root file system as a tar: /bin/busybox, applet symlinks, /tmp."""
    busybox = busybox or find_busybox()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder, mode in (("bin", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = busybox.stat().st_size, 0o755
        with open(busybox, "rb") as fh:
            tar.addfile(info, fh)
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
    return buf.getvalue()


def make_busybox_base(client_or_host: Any, ref: str = BUSYBOX_REF) -> str:
    """Import the busybox base image into a Docker daemon (``docker import``); idempotent.

    :param client_or_host: a ``docker.DockerClient``, a ``docker.APIClient`` or a daemon URL.
    :returns: ``ref``.
    """
    import docker

    if isinstance(client_or_host, str):
        api = docker.APIClient(base_url=client_or_host, version="auto")
        close = True
    else:
        api = getattr(client_or_host, "api", client_or_host)
        close = False
    try:
        try:
            api.inspect_image(ref)
            return ref
        except docker.errors.NotFound:
            pass
        repository, _, tag = ref.rpartition(":")
        api.import_image_from_data(busybox_rootfs_tar(), repository=repository, tag=tag,
                                   changes=['CMD ["/bin/sh"]'])
        return ref
    finally:
        if close:
            api.close()


def make_buildah_busybox_base(global_args: Sequence[str], ref: str = BUSYBOX_REF,
                              executable: str = "buildah") -> str:
    """Make the busybox base image in a buildah store (``buildah from scratch`` + ``copy`` +
    ``commit``); ``global_args`` select the store (``--storage-driver``, ``--root``...).

    The image is committed under ``localhost/<ref>``; a Dockerfile's ``FROM <ref>`` finds it.
    """
    def buildah(*args: str) -> str:
        res = subprocess.run([executable, *global_args, *args], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise DaemonError(f"buildah {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout.strip()

    if buildah("images", "--quiet", "--filter", f"reference={ref}"):
        return ref
    with tempfile.TemporaryDirectory(prefix="xpresso-busybox-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(busybox_rootfs_tar())) as tar:
            # Our own archive: trusted as it is (keeps /tmp's sticky bit).
            tar.extractall(tmp, **({"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}))
        container = buildah("from", "scratch")
        try:
            buildah("copy", container, f"{tmp}/", "/")
            buildah("config", "--cmd", "/bin/sh", container)
            buildah("commit", "--quiet", container, ref)
        finally:
            buildah("rm", container)
    return ref
