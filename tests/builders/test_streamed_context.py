"""The build context streamed from git (issue 9): no checkout, ``git archive`` into the docker build.

Real git repositories and the private dockerd. What is checked: the workspace skips the checkout
only when it may (nothing to merge, a tree git archive copies faithfully), the streamed tree lists
and discovers what a checkout would, the .dockerignore filter keeps exactly what the docker SDK's
own walk keeps, and an image built from the stream holds the same files (names, modes, contents)
as one built from a checkout of the same commit.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import docker  # the module kept_paths is given, as the builder gives it
import docker.utils.build
import pytest
from xpresso_env_plugins.builder_docker import DockerBuilder
from xpresso_env_plugins.builder_docker.context import filter_tar, kept_paths

from xpresso_env.builds.sdk import procrun
from xpresso_env.builds.sdk.builder import BuildCancelled
from xpresso_env.builds.workspace import GitTree, WorkspaceError, discover, prepare
from xpresso_env.builds.workspace.tree import unquote

from .conftest import make_context


def _prepare(repo, dest, git_ref="main", base_ref=None, dockerfile="Dockerfile", started=None):
    log: list[str] = []
    result = prepare(str(repo.path), git_ref, base_ref, dest, log.append, threading.Event(), 60,
                     on_start=started, stream_dockerfile=dockerfile)
    return result, log


def _checkout(repo, commit: str, dest: Path) -> Path:
    """A plain checkout of ``commit`` without .git: the context a checked-out build sends."""
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo.path), str(dest)], check=True)
    subprocess.run(["git", "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit], cwd=dest,
                   check=True)
    shutil.rmtree(dest / ".git")
    return dest


@pytest.fixture
def tree_repo(make_repo):
    repo = make_repo("tree")
    repo.commit({"Dockerfile": "FROM scratch\nCOPY . /ctx/\n", "a_job.py": "a\n", "jobs/b_job.py": "b\n",
                 "jobs/deep/c_job.py": "c\n", "x.tem": "x\n", "manifests/y.tem": "y\n", "docs/readme.md": "r\n",
                 "build/out.bin": "o\n", "build/keep.txt": "k\n", "sp ace/é.txt": "e\n", "tab\tname_job.py": "t\n"},
                "files")
    os.symlink("a_job.py", repo.path / "link_job.py")
    os.symlink("jobs", repo.path / "jobs_link")
    (repo.path / "run.sh").write_text("#!/bin/sh\n")
    (repo.path / "run.sh").chmod(0o755)
    repo.commit({}, "links and an executable")
    return repo


# --------------------------------------------------------------------------- the workspace

def test_nothing_is_checked_out_and_the_tree_lists_what_a_checkout_has(tree_repo, tmp_path):
    started: list[int] = []
    result, log = _prepare(tree_repo, tmp_path / "ws", started=started.append)
    assert result.tree is not None and result.commit == tree_repo.head() and result.merge == "none"
    assert sorted(os.listdir(tmp_path / "ws")) == [".git"]  # no file of the tree on disk
    assert not any("git checkout" in line for line in log)
    assert len(started) == 1  # the clone; quick read-only queries are not recorded in the claim
    checkout = _checkout(tree_repo, result.commit, tmp_path / "co")
    on_disk = sorted(str(p.relative_to(checkout).as_posix()) for p in checkout.rglob("*"))
    assert sorted(result.tree.entries) == on_disk
    assert result.tree.entries["run.sh"] == "100755" and result.tree.entries["link_job.py"] == "120000"
    for jobs_glob, manifests_glob in (("*_job.py", "*.tem"), ("jobs/*_job.py", "manifests/*"), ("*", "nothing")):
        assert result.tree.discover(jobs_glob, manifests_glob) == discover(checkout, jobs_glob, manifests_glob)
    assert result.tree.read_text("Dockerfile") == "FROM scratch\nCOPY . /ctx/"
    assert result.tree.read_text(".dockerignore") is None


def test_the_archive_is_what_a_checkout_holds(tree_repo, tmp_path):
    started: list[int] = []
    result, _ = _prepare(tree_repo, tmp_path / "ws", started=started.append)
    archive = result.tree.archive()
    data = archive.stdout.read()
    archive.finish()
    assert len(started) == 2 and not procrun.group_members(started[-1])  # recorded, and gone
    checkout = _checkout(tree_repo, result.commit, tmp_path / "co")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == sorted(result.tree.entries)
        for name, member in members.items():
            on_disk = os.lstat(checkout / name)
            assert member.mode == on_disk.st_mode & 0o7777, name  # the umask applies as in a checkout
            if member.isfile():
                assert tar.extractfile(member).read() == (checkout / name).read_bytes()
            if member.issym():
                assert member.linkname == os.readlink(checkout / name)


def test_a_failing_archive_says_why(tree_repo, tmp_path):
    result, _ = _prepare(tree_repo, tmp_path / "ws")
    shutil.rmtree(tmp_path / "ws" / ".git" / "objects")
    archive = result.tree.archive()
    archive.stdout.read()
    with pytest.raises(WorkspaceError, match="git archive failed"):
        archive.finish()


def test_kill_stops_the_archive(make_repo, tmp_path):
    repo = make_repo("big")
    (repo.path / "Dockerfile").write_text("FROM scratch\n")
    (repo.path / "big.bin").write_bytes(os.urandom(8 << 20))
    repo.commit({}, "big")
    result, _ = _prepare(repo, tmp_path / "ws")
    archive = result.tree.archive()
    archive.stdout.read(4096)  # git is blocked writing the rest into the full pipe
    pid = archive.proc.pid
    archive.kill()
    archive.close()
    assert archive.proc.returncode != 0 and not procrun.group_members(pid)


@pytest.mark.parametrize("files, reason", [
    ({".gitattributes": "*.txt export-ignore\n"}, "gitattributes"),
    ({"sub/.gitattributes": "x export-subst\n"}, "gitattributes"),
    ({"Dockerfile": None, "other/Dockerfile": "FROM scratch\n"}, "not a regular file"),
])
def test_a_tree_that_cannot_stream_is_checked_out(make_repo, tmp_path, files, reason):
    repo = make_repo("odd")
    repo.commit({"Dockerfile": "FROM scratch\n", "a.txt": "a\n"}, "first")
    repo.commit(files, "odd")
    result, log = _prepare(repo, tmp_path / "ws")
    assert result.tree is None and (tmp_path / "ws" / "a.txt").is_file()
    assert any(line.startswith("checking out the tree:") and reason in line for line in log)


def test_a_linked_dockerfile_or_dockerignore_is_checked_out(make_repo, tmp_path):
    repo = make_repo("links")
    repo.commit({"real": "FROM scratch\n"}, "first")
    os.symlink("real", repo.path / "Dockerfile")
    repo.commit({}, "linked Dockerfile")
    assert _prepare(repo, tmp_path / "ws1")[0].tree is None
    os.unlink(repo.path / "Dockerfile")
    repo.commit({"Dockerfile": "FROM scratch\n"}, "plain Dockerfile")
    os.symlink("real", repo.path / ".dockerignore")
    repo.commit({}, "linked .dockerignore")
    assert _prepare(repo, tmp_path / "ws2")[0].tree is None


def test_a_submodule_is_checked_out(make_repo, tmp_path):
    sub = make_repo("sub")
    sub.commit({"s.txt": "s\n"}, "sub")
    repo = make_repo("super")
    repo.commit({"Dockerfile": "FROM scratch\n"}, "first")
    repo.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub.path), "mod")
    repo.git("commit", "-q", "-m", "submodule")
    result, log = _prepare(repo, tmp_path / "ws")
    assert result.tree is None and any("submodules" in line for line in log)


def test_a_merge_checks_out_and_a_contained_base_streams(make_repo, tmp_path):
    repo = make_repo("merge")
    first = repo.commit({"Dockerfile": "FROM scratch\n", "a.txt": "a\n"}, "first")
    repo.branch("feature")
    repo.commit({"f.txt": "f\n"}, "feature")
    repo.checkout("main")
    repo.commit({"m.txt": "m\n"}, "main")
    merged, _ = _prepare(repo, tmp_path / "ws1", git_ref="feature", base_ref="main")
    assert merged.tree is None and merged.merge == "merged" and (tmp_path / "ws1" / "m.txt").is_file()
    repo.git("tag", "old", first)
    contained, log = _prepare(repo, tmp_path / "ws2", git_ref="feature", base_ref="old")
    assert contained.tree is not None and contained.merge == "none" and contained.base_commit == first
    assert any("already contained" in line for line in log)
    assert sorted(os.listdir(tmp_path / "ws2")) == [".git"]


def test_without_stream_dockerfile_prepare_checks_out_as_before(tree_repo, tmp_path):
    log: list[str] = []
    result = prepare(str(tree_repo.path), "main", None, tmp_path / "ws", log.append, threading.Event(), 60)
    assert result.tree is None and (tmp_path / "ws" / "jobs" / "b_job.py").is_file()


def test_unquote_reads_what_git_quotes():
    assert unquote('plain/name.txt') == "plain/name.txt"
    assert unquote('"tab\\tname"') == "tab\tname"
    assert unquote('"sp ace/\\303\\251\\"q\\\\.txt"') == 'sp ace/é"q\\.txt'
    assert unquote('"\\377bad"') == os.fsdecode(b"\xffbad")


# --------------------------------------------------------------------------- .dockerignore

IGNORES = [
    "",
    "docs\n",
    "build\n!build/keep.txt\n",
    "*\n!Dockerfile\n!jobs\n",
    "**/*.tem\n# a comment\n\njobs/deep\n",
    "jobs\n!jobs/deep/c_job.py\n",
    "Dockerfile\n.dockerignore\n",
    "sp ace\n*_link\n",
    "../docs\n./build/out.bin\n",
]


@pytest.mark.parametrize("ignore", IGNORES)
def test_the_filter_keeps_what_the_sdk_keeps(tree_repo, tmp_path, ignore):
    tree_repo.commit({".dockerignore": ignore}, "ignore")
    result, _ = _prepare(tree_repo, tmp_path / "ws")
    checkout = _checkout(tree_repo, result.commit, tmp_path / "co")
    excludes = [ln.strip() for ln in ignore.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert kept_paths(docker, result.tree.entries, list(excludes), "Dockerfile") == \
        docker.utils.build.exclude_paths(str(checkout), list(excludes), dockerfile="Dockerfile")


def test_the_tar_filter_passes_kept_members_byte_for_byte(make_repo, tmp_path):
    """Long paths (pax headers), links, folders, empty and block-sized files, cut anywhere."""
    repo = make_repo("tarfilter")
    deep = "/".join(["a-rather-long-folder-name-%d" % i for i in range(6)])
    repo.commit({"Dockerfile": "FROM scratch\n", f"{deep}/file.txt": "deep\n", "empty": "", "block": "x" * 512,
                 "keep/big.bin": "y" * 70000, "drop/big.bin": "z" * 70000, f"{deep}/dropped.txt": "d\n"}, "files")
    os.symlink(deep + "/file.txt", repo.path / ("link-" + "l" * 120))
    repo.commit({}, "a long link")
    result, _ = _prepare(repo, tmp_path / "ws")
    archive = result.tree.archive()
    whole = archive.stdout.read()
    archive.finish()
    keep = {p for p in result.tree.entries if not p.startswith("drop") and not p.endswith("dropped.txt")}
    for piece in (1, 100, 512, 4096, 1 << 16):
        stream = io.BytesIO(whole)
        filtered = b"".join(filter_tar(lambda n: stream.read(min(n, piece)), keep, 1 << 16))
        with tarfile.open(fileobj=io.BytesIO(filtered)) as tar, tarfile.open(fileobj=io.BytesIO(whole)) as src:
            got = {m.name: (m.type, m.mode, m.linkname, tar.extractfile(m).read() if m.isfile() else None) for m in tar}
            want = {m.name: (m.type, m.mode, m.linkname, src.extractfile(m).read() if m.isfile() else None)
                    for m in src if m.name in keep}
        assert got == want and len(got) == len(keep) and any(len(name) > 100 for name in got)


# --------------------------------------------------------------------------- the docker builder

def _image_files(tar_path: Path) -> dict[str, tuple]:
    """Every file of the image's layers: name -> (type, mode, uid, content digest or link)."""
    files: dict[str, tuple] = {}
    with tarfile.open(tar_path) as image:
        manifest = json.load(image.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(image.extractfile(layer).read())) as tar:
                for m in tar:
                    body = hashlib.sha256(tar.extractfile(m).read()).hexdigest() if m.isfile() else m.linkname
                    files[m.name] = (m.type, m.mode, m.uid, body)
    return files


@pytest.mark.parametrize("ignore", [None, "build\n!build/keep.txt\ndocs\n*.tem\n"])
def test_a_streamed_build_holds_what_a_checked_out_build_holds(tree_repo, tmp_path, docker_url, make_request, ignore):
    if ignore is not None:
        tree_repo.commit({".dockerignore": ignore}, "ignore")
    builder = DockerBuilder(base_url=docker_url)
    started: list[int] = []
    result, ws_log = _prepare(tree_repo, tmp_path / "ws", started=started.append)
    streamed, _ = make_request(tmp_path / "ws", "xpresso-test/streamed:1")
    streamed = streamed.__class__(**{**streamed.__dict__, "git_tree": result.tree, "started": started.append})
    builder.build(streamed)
    # git archive ran in a process group of its own, recorded like the clone (the workspace's log
    # and callback: the build queue gives the build the same ones)
    assert any(line.startswith("$ git archive") for line in ws_log) and len(started) == 2
    checked_out, _ = make_request(_checkout(tree_repo, result.commit, tmp_path / "co"), "xpresso-test/checkedout:1")
    builder.build(checked_out)
    assert _image_files(streamed.output_tar) == _image_files(checked_out.output_tar)
    names = set(_image_files(streamed.output_tar))
    assert "ctx/jobs/deep/c_job.py" in names and ("ctx/docs/readme.md" in names) == (ignore is None)
    for ref in ("xpresso-test/streamed:1", "xpresso-test/checkedout:1"):
        builder.remove_image(ref)


def test_a_streamed_build_cancelled_before_start(tree_repo, tmp_path, docker_url, make_request):
    result, _ = _prepare(tree_repo, tmp_path / "ws")
    request, _ = make_request(make_context(tmp_path / "unused", "FROM scratch\n"), "xpresso-test/streamed:2")
    request = request.__class__(**{**request.__dict__, "context_dir": tmp_path / "ws", "git_tree": result.tree})
    request.cancel.set()
    with pytest.raises(BuildCancelled):
        DockerBuilder(base_url=docker_url).build(request)

