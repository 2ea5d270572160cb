"""A clean image store (issue 9), with the real builders (private dockerd, buildah store):

* a failed or cancelled build leaves no image, intermediate layer or build container behind;
* a build runs under a temporary tag and only a successful one takes ``name:tag``; the image it
  replaces goes, and no temporary tag is left;
* the same ``name:tag`` built for two groups at once: both succeed and each tar holds its own image;
* the network options (``builder.docker.network_mode``, ``builder.buildah.network``) reach the
  RUN steps; a build that needs no network works with ``none``;
* the retention sweep removes the builder's image with the tar, and ``--dry-run`` reports it;
* the docker builder streams the build context (no temporary tar) and still honours .dockerignore.

Every test Dockerfile carries a LABEL of its own right after FROM, so the images and containers a
test made are found by that label even when other work uses the same daemon.
"""
from __future__ import annotations

import json
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from xpresso_env_plugins.builder_buildah import BuildahBuilder, normalize_ref
from xpresso_env_plugins.builder_docker import DockerBuilder

from tests.images.conftest import FakeClock, backend, builder_config, make_image_world, polaris_repo  # noqa: F401 (fixtures)
from xpresso_env.builds.sdk.builder import TEMP_TAG_PREFIX, BuildCancelled, BuildFailed, temp_ref
from xpresso_env.testing.daemons import BUSYBOX_REF

from .conftest import SLEEP_S, cancel_when_seen, leftovers, make_context, wait_until

BUILDERS = ["docker", "buildah"]


class Store:
    """What one builder's store holds, by label."""

    def __init__(self, name: str, request):
        self.name = name
        if name == "docker":
            self.api = request.getfixturevalue("docker_api")
            self.url = request.getfixturevalue("docker_url")
            request.getfixturevalue("docker_busybox")
        else:
            self.store = request.getfixturevalue("buildah_store")

    def builder(self, **kwargs):
        if self.name == "docker":
            return DockerBuilder(base_url=self.url, **kwargs)
        kwargs.setdefault("isolation", "chroot")
        return BuildahBuilder(storage_driver="vfs", root=self.store.root, runroot=self.store.runroot, **kwargs)

    def images(self, label: str) -> set[str]:
        if self.name == "docker":
            return {i["Id"] for i in self.api.images(all=True, filters={"label": f"xpresso-test={label}"})}
        res = self.store.buildah("images", "--all", "--quiet", "--no-trunc", "--filter", f"label=xpresso-test={label}")
        return {line.strip() for line in res.stdout.splitlines() if line.strip()}

    def containers(self) -> list[str]:
        if self.name == "docker":
            return [c["Id"] for c in self.api.containers(all=True, filters={"ancestor": BUSYBOX_REF})]
        res = self.store.buildah("containers", "--quiet")
        return [line for line in res.stdout.splitlines() if line.strip()]

    def tags(self) -> list[str]:
        if self.name == "docker":
            return [t for i in self.api.images(all=True) for t in (i.get("RepoTags") or [])]
        res = self.store.buildah("images", "--all", "--json")
        return [n for i in (json.loads(res.stdout or "[]") or []) for n in (i.get("names") or [])]

    def image_id(self, ref: str):
        if self.name == "docker":
            import docker

            try:
                return self.api.inspect_image(ref)["Id"]
            except docker.errors.NotFound:
                return None
        res = self.store.buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", normalize_ref(ref))
        return f"sha256:{res.stdout.strip()}" if res.returncode == 0 else None

    def tag(self, source: str, ref: str) -> None:
        if self.name == "docker":
            repo, tag = ref.rsplit(":", 1)
            self.api.tag(source, repo, tag)
        else:
            assert self.store.buildah("tag", normalize_ref("localhost/" + source), normalize_ref(ref)).returncode == 0

    def untag(self, ref: str) -> None:
        if self.name == "docker":
            self.api.remove_image(ref)
        else:
            self.store.buildah("rmi", normalize_ref(ref))

    def has(self, image_id: str) -> bool:
        if self.name == "docker":
            import docker

            try:
                self.api.inspect_image(image_id)
                return True
            except docker.errors.NotFound:
                return False
        return self.store.buildah("inspect", "--type", "image", image_id.removeprefix("sha256:")).returncode == 0


@pytest.fixture(params=BUILDERS)
def store(request) -> Store:
    return Store(request.param, request)


def _dockerfile(label: str, *steps: str) -> str:
    return "\n".join([f"FROM {BUSYBOX_REF}", f"LABEL xpresso-test={label}", *steps]) + "\n"


def _archive(path: Path) -> dict:
    with tarfile.open(path) as tar:
        return json.load(tar.extractfile("manifest.json"))[0]


def test_a_failed_build_leaves_nothing(store, tmp_path, make_request):
    label = uuid.uuid4().hex
    ctx = make_context(tmp_path / "ctx", _dockerfile(label, f"RUN echo {label} > /a.txt", "RUN echo failing && false"))
    request, log = make_request(ctx, f"xpresso-test/clean-{store.name}:failed")
    containers = store.containers()
    with pytest.raises(BuildFailed) as caught:
        store.builder().build(request)
    assert type(caught.value) is BuildFailed and "failing" in log.lines, caught.value
    assert f"RUN echo {label} > /a.txt" in log.text  # a layer was made before the failing step
    assert wait_until(lambda: store.images(label) == set(), 10), store.images(label)
    assert wait_until(lambda: store.containers() == containers, 10)
    assert not any(TEMP_TAG_PREFIX in t for t in store.tags())
    assert leftovers(request.output_tar.parent) == []


def test_a_cancelled_build_leaves_nothing(store, tmp_path, make_request):
    label = uuid.uuid4().hex
    ctx = make_context(tmp_path / "ctx", _dockerfile(label, f"RUN echo {label} > /a.txt",
                                                     f"RUN echo sleeping-now && sleep {SLEEP_S}"))
    request, log = make_request(ctx, f"xpresso-test/clean-{store.name}:cancelled", wanted="sleeping-now")
    containers = store.containers()
    cancel_when_seen(request, log)
    with pytest.raises(BuildCancelled):
        store.builder().build(request)
    assert log.seen.is_set()  # cancelled in the sleeping step, after a layer was made
    assert wait_until(lambda: store.images(label) == set(), 15), store.images(label)
    assert wait_until(lambda: store.containers() == containers, 15)
    assert not any(TEMP_TAG_PREFIX in t for t in store.tags())
    assert leftovers(request.output_tar.parent) == []


def test_a_rebuild_takes_the_tag_and_removes_the_image_it_replaces(store, tmp_path, make_request):
    ref = f"xpresso-test/clean-{store.name}:rebuilt"
    ids = []
    for n in range(2):
        label = uuid.uuid4().hex
        ctx = make_context(tmp_path / f"ctx{n}", _dockerfile(label, f"RUN echo {label} > /a.txt"))
        request, _ = make_request(ctx, ref, output=tmp_path / f"out{n}" / "rebuilt.tar")
        result = store.builder().build(request)
        assert store.image_id(ref) == result.image_id
        assert _archive(request.output_tar)["RepoTags"] in ([ref], [normalize_ref(ref)])  # docker load: ref
        ids.append(result.image_id)
    assert ids[0] != ids[1]
    assert wait_until(lambda: not store.has(ids[0]), 10)  # the replaced image is gone, not dangling
    assert not any(TEMP_TAG_PREFIX in t for t in store.tags())


def test_the_same_name_and_tag_in_two_groups_at_once(store, tmp_path, make_request):
    ref = f"xpresso-test/clean-{store.name}:shared"
    requests, results, errors = [], {}, {}
    for group in ("ga", "gb"):
        ctx = make_context(tmp_path / f"ctx-{group}", _dockerfile(uuid.uuid4().hex, f"RUN echo {group} > /group.txt"))
        request, _ = make_request(ctx, ref, output=tmp_path / "nfs" / group / "shared.tar")
        requests.append((group, request))

    def run(group, request) -> None:
        try:
            results[group] = store.builder().build(request)
        except Exception as exc:  # noqa: BLE001 — reported below
            errors[group] = exc

    threads = [threading.Thread(target=run, args=item) for item in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == {}
    assert results["ga"].image_id != results["gb"].image_id
    for group, request in requests:
        manifest = _archive(request.output_tar)
        assert manifest["RepoTags"] in ([ref], [normalize_ref(ref)])
        assert manifest["Config"].rsplit("/", 1)[-1].removesuffix(".json").removeprefix("sha256:") == \
            results[group].image_id.removeprefix("sha256:")
    assert store.image_id(ref) in {results["ga"].image_id, results["gb"].image_id}
    assert not any(TEMP_TAG_PREFIX in t for t in store.tags())


def test_the_streamed_context_honours_dockerignore(request, tmp_path, make_request):
    request.getfixturevalue("docker_busybox")
    builder = DockerBuilder(base_url=request.getfixturevalue("docker_url"))
    ctx = make_context(tmp_path / "ctx", _dockerfile(uuid.uuid4().hex, "COPY . /ctx/", "RUN echo listing: $(ls -a /ctx)"),
                       {"kept.txt": "k\n", "secret.key": "s\n", "sub/also.txt": "a\n", ".dockerignore": "*.key\n"})
    req, log = make_request(ctx, "xpresso-test/ctx:ignore")
    builder.build(req)
    listing = next(line for line in log.lines if line.startswith("listing: "))
    assert set(listing.split()[1:]) == {".", "..", ".dockerignore", "Dockerfile", "kept.txt", "sub"}


# --------------------------------------------------------------------------- network options


@pytest.mark.parametrize("network", ["none", "host"])
def test_network_options_reach_the_run_steps(store, network, tmp_path, make_request):
    ctx = make_context(tmp_path / "ctx", _dockerfile(uuid.uuid4().hex, "RUN echo nets: $(ls /sys/class/net)"))
    request, log = make_request(ctx, f"xpresso-test/net-{store.name}:{network}")
    if store.name == "docker":
        builder = store.builder(network_mode=network)
    else:  # chroot isolation always shares the host's network: none needs oci (runc)
        builder = store.builder(network=network, isolation="oci" if network == "none" else "chroot")
    result = builder.build(request)
    nets = next(line for line in log.lines if line.startswith("nets: ")).split()[1:]
    if network == "none":
        assert nets == ["lo"]
    else:
        assert "lo" in nets and len(nets) > 1  # the host's interfaces
    assert network in result.meta.values()


# --------------------------------------------------------------------------- retention


@pytest.mark.parametrize("name", BUILDERS)
def test_retention_removes_the_builders_image_and_dry_run_says_so(name, request, make_image_world):  # noqa: F811
    clock = FakeClock()
    w = make_image_world(builder=name, config=builder_config(name, request), clock=clock)
    tag = f"ret-{name}"
    rec = w.wait(w.submit({"name": "polaris", "tag": tag, "git_ref": "main"}).json["uuid"], timeout_s=120)
    assert rec["status"] == "successful", w.log(rec["uuid"])
    store = Store(name, request)
    assert store.image_id(f"polaris:{tag}") == rec["image_id"]
    clock.advance(days=7)
    items = [i for i in w.ctx.images.sweep(dry_run=True) if str(i.image.id) == rec["uuid"]]
    assert items and items[0].removed and items[0].builder_image == f"polaris:{tag}"
    assert store.image_id(f"polaris:{tag}") == rec["image_id"]  # a dry run removes nothing
    # Temporary tags as builds killed with their server leave them: the sweep removes the stale
    # one (older than builds.timeout_s + 2 lease_s), never one a build may still be using.
    stale, fresh = temp_ref("xpresso-test/killed:x", now=time.time() - 7200), temp_ref("xpresso-test/killed:x")
    for ref in (stale, fresh):
        store.tag(BUSYBOX_REF, ref)
    items = [i for i in w.ctx.images.sweep() if str(i.image.id) == rec["uuid"]]
    assert items and items[0].builder_image == f"polaris:{tag}"
    assert store.image_id(f"polaris:{tag}") is None and not Path(rec["nfs_path"]).exists()
    assert store.image_id(stale) is None and store.image_id(fresh) is not None
    store.untag(fresh)
