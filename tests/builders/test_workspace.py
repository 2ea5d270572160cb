"""The workspace: clone, checkout, 3-way merge, discovery and ref validation, on real git repos."""
from __future__ import annotations

import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from xpresso_env.builds import workspace
from xpresso_env.builds.sdk.builder import BuildCancelled, BuildFailed, BuildTimedOut
from xpresso_env.builds.workspace import WorkspaceError, discover, prepare, validate_ref
from xpresso_env.builds.workspace.git import Git
from xpresso_env.core.errors import ValidationError
from xpresso_env.core.wire import GIT_REF

from .conftest import wait_until


def run_prepare(repo, git_ref, base_ref=None, dest=None, timeout_s=60.0, cancel=None, tmp=None):
    log: list[str] = []
    dest = dest or Path(tmp) / "ws"
    result = prepare(str(repo), git_ref, base_ref, dest, log.append, cancel or threading.Event(), timeout_s)
    return result, dest, log


def head_of(dest: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=dest, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def polaris(make_repo):
    """main: a, b; feature (from main's first commit): c; tag v1 on main's first commit."""
    repo = make_repo("polaris")
    first = repo.commit({"Dockerfile": "FROM scratch\n", "a.txt": "a\n", "shared.txt": "1\n2\n3\n"}, "first")
    repo.git("tag", "v1")
    repo.git("tag", "-a", "v1-annotated", "-m", "annotated")
    second = repo.commit({"b.txt": "b\n", "shared.txt": "1\n2\n3-main\n"}, "second")
    repo.checkout("feature", create=True, start=first)
    feature = repo.commit({"c.txt": "c\n", "shared.txt": "1-feature\n2\n3\n"}, "feature")
    repo.checkout("main")
    return repo, {"first": first, "second": second, "feature": feature}


# --------------------------------------------------------------------------- checkout

def test_branch_checkout(polaris, tmp_path):
    repo, ids = polaris
    result, dest, log = run_prepare(repo.path, "feature", tmp=tmp_path)
    assert result == workspace.WorkspaceResult(ids["feature"], None, None, "none")
    assert head_of(dest) == ids["feature"]
    assert (dest / "c.txt").exists() and not (dest / "b.txt").exists()
    assert any(line.startswith("$ git clone") for line in log)
    # Detached: the workspace is not on a branch.
    assert subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=dest).returncode == 1


def test_default_branch_and_full_ref_names(polaris, tmp_path):
    repo, ids = polaris
    assert run_prepare(repo.path, "main", tmp=tmp_path / "1")[0].commit == ids["second"]
    assert run_prepare(repo.path, "refs/heads/feature", tmp=tmp_path / "2")[0].commit == ids["feature"]
    assert run_prepare(repo.path, "refs/tags/v1", tmp=tmp_path / "3")[0].commit == ids["first"]


def test_tag_checkout(polaris, tmp_path):
    repo, ids = polaris
    result, dest, _ = run_prepare(repo.path, "v1", tmp=tmp_path / "1")
    assert result.commit == ids["first"] and (dest / "a.txt").exists() and not (dest / "b.txt").exists()
    # An annotated tag resolves to the commit it points at, not to the tag object.
    assert run_prepare(repo.path, "v1-annotated", tmp=tmp_path / "2")[0].commit == ids["first"]


def test_branch_wins_over_tag_of_the_same_name(polaris, tmp_path):
    repo, ids = polaris
    repo.git("tag", "feature", ids["first"])
    assert run_prepare(repo.path, "feature", tmp=tmp_path)[0].commit == ids["feature"]


def test_commit_id_checkout_full_and_abbreviated(polaris, tmp_path):
    repo, ids = polaris
    full, dest, _ = run_prepare(repo.path, ids["first"], tmp=tmp_path / "1")
    assert full.commit == ids["first"] and head_of(dest) == ids["first"]
    short, _, _ = run_prepare(repo.path, ids["feature"][:7], tmp=tmp_path / "2")
    assert short.commit == ids["feature"]


def test_unknown_ref(polaris, tmp_path):
    repo, ids = polaris
    with pytest.raises(WorkspaceError, match=r"^unknown ref: nope$"):
        run_prepare(repo.path, "nope", tmp=tmp_path / "1")
    with pytest.raises(WorkspaceError, match="unknown ref: 0123456789abcdef"):
        run_prepare(repo.path, "0123456789abcdef", tmp=tmp_path / "2")
    with pytest.raises(WorkspaceError, match="unknown ref: nope-base"):
        run_prepare(repo.path, "feature", "nope-base", tmp=tmp_path / "3")
    assert issubclass(WorkspaceError, BuildFailed)


def test_clone_failure_is_a_workspace_error(tmp_path):
    with pytest.raises(WorkspaceError, match="git clone failed"):
        run_prepare(tmp_path / "no-such-repo", "main", tmp=tmp_path)


# --------------------------------------------------------------------------- merge

def test_merge_success(polaris, tmp_path, make_repo):
    repo, ids = polaris
    repo.checkout("feature")
    feature = repo.commit({"shared.txt": "1-feature\n2\n3\n", "d.txt": "d\n"}, "more feature")
    repo.checkout("main")
    # feature changed line 1 of shared.txt, main changed line 3: a clean 3-way merge.
    result, dest, log = run_prepare(repo.path, "feature", "main", tmp=tmp_path / "1")
    assert result.merge == "merged" and result.commit == feature and result.base_commit == ids["second"]
    assert result.merged_commit == head_of(dest) and result.merged_commit not in (feature, ids["second"])
    assert (dest / "shared.txt").read_text() == "1-feature\n2\n3-main\n"
    assert all((dest / f).exists() for f in ("a.txt", "b.txt", "c.txt", "d.txt"))
    parents = subprocess.run(["git", "show", "-s", "--format=%P %cn <%ce>", "HEAD"], cwd=dest,
                             capture_output=True, text=True).stdout.split()
    assert parents[:2] == [feature, ids["second"]]
    assert " ".join(parents[2:]) == f"{workspace.COMMITTER_NAME} <{workspace.COMMITTER_EMAIL}>"
    # The same two commits always make the same merge commit.
    again, _, _ = run_prepare(repo.path, "feature", "main", tmp=tmp_path / "2")
    assert again.merged_commit == result.merged_commit
    assert result.as_meta() == {"commit": feature, "base_commit": ids["second"],
                                "merged_commit": result.merged_commit, "merge": "merged"}


def test_merge_nothing_to_do_and_fast_forward(polaris, tmp_path):
    repo, ids = polaris
    # main already holds v1: nothing to merge.
    none, dest, _ = run_prepare(repo.path, "main", "v1", tmp=tmp_path / "1")
    assert none == workspace.WorkspaceResult(ids["second"], ids["first"], None, "none")
    assert head_of(dest) == ids["second"]
    # v1 is behind main: merging main into it fast-forwards.
    ff, dest, _ = run_prepare(repo.path, "v1", "main", tmp=tmp_path / "2")
    assert ff == workspace.WorkspaceResult(ids["first"], ids["second"], ids["second"], "fast-forward")
    assert head_of(dest) == ids["second"] and (dest / "b.txt").exists()


def test_merge_conflict_names_the_paths(polaris, tmp_path):
    repo, ids = polaris
    repo.checkout("feature")
    repo.commit({"shared.txt": "1-feature\n2\n3-feature\n", "sub dir/x.cfg": "feature\n",
                 "clean.txt": "no conflict\n"}, "conflicting")
    repo.checkout("main")
    repo.commit({"sub dir/x.cfg": "main\n"}, "main side")
    with pytest.raises(WorkspaceError) as caught:
        run_prepare(repo.path, "feature", "main", tmp=tmp_path)
    assert str(caught.value) == "merge conflict between feature and main in: shared.txt, sub dir/x.cfg"


def test_merge_conflict_log(polaris, tmp_path):
    repo, _ = polaris
    repo.checkout("feature")
    repo.commit({"shared.txt": "1-feature\n2\n3-feature\n"}, "conflicting")
    repo.checkout("main")
    log: list[str] = []
    with pytest.raises(WorkspaceError, match="merge conflict between feature and main in: shared.txt"):
        prepare(str(repo.path), "feature", "main", tmp_path / "ws", log.append, threading.Event(), 60)
    assert "  shared.txt" in log
    assert any("CONFLICT" in line and "shared.txt" in line for line in log)


def test_unrelated_histories_fail_clearly(polaris, tmp_path):
    repo, _ = polaris
    repo.git("checkout", "-q", "--orphan", "island")
    repo.git("rm", "-rqf", ".")
    repo.commit({"island.txt": "alone\n"}, "island")
    with pytest.raises(WorkspaceError, match="merge of main into island failed: .*unrelated histories"):
        run_prepare(repo.path, "island", "main", tmp=tmp_path)


# --------------------------------------------------------------------------- hostile input

INJECTIONS = ["--upload-pack=touch /tmp/x", "--upload-pack=touch", "-c", "--output=/tmp/x",
              "main..feature", "main~1", "main^", "HEAD@{1}", "main:Dockerfile", "a b", "a\tb",
              "a\nb", "ref\\x", "@", "", ".hidden", "x.lock", "x/", "/x", "x//y", "x.", "a*b",
              "a?b", "a[b", "\x00", "\x7f", "x" * 256, "refs/heads/../../etc"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_validate_ref_refuses(value):
    with pytest.raises(ValidationError) as caught:
        validate_ref("git_ref", value)
    assert list(caught.value.fields) == ["git_ref"]


@pytest.mark.parametrize("value", [None, 12, ["main"], {"a": 1}, b"main"])
def test_validate_ref_refuses_non_strings(value):
    with pytest.raises(ValidationError):
        validate_ref("base_ref", value)


@pytest.mark.parametrize("value", ["main", "feature/x-1", "v1.2.3", "refs/heads/main", "deadbee",
                                   "0123456789abcdef0123456789abcdef01234567", "x" * 255, "été", "a@b",
                                   "HEAD", "foo./bar"])
def test_validate_ref_accepts(value):
    assert validate_ref("git_ref", value) == value


def test_option_injection_reaching_prepare_is_harmless(polaris, tmp_path):
    repo, _ = polaris
    marker = tmp_path / "pwned"
    for hostile in (f"--upload-pack=touch {marker}", f"--upload-pack=touch{marker}", "-ufoo"):
        with pytest.raises(WorkspaceError, match="invalid git_ref"):
            run_prepare(repo.path, hostile, tmp=tmp_path / "a")
        with pytest.raises(WorkspaceError, match="invalid base_ref"):
            run_prepare(repo.path, "main", hostile, tmp=tmp_path / "b")
    # Below the validation, git reads a ref only after --end-of-options: never as an option.
    repo_clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo.path), str(repo_clone)], check=True)
    git = Git(repo_clone, lambda line: None, threading.Event(), time.monotonic() + 30,
              workspace.git_env(), None)
    assert git.resolve(f"--upload-pack=touch {marker}") is None
    assert git.resolve(f"--output={marker}") is None
    assert not marker.exists()


def test_git_environment_is_scrubbed(monkeypatch):
    env = workspace.git_env({"GIT_DIR": "/elsewhere", "GIT_WORK_TREE": "/x", "GIT_CONFIG_PARAMETERS": "'a.b=c'",
                             "GIT_SSH_COMMAND": "ssh -i key", "PATH": "/usr/bin"})
    assert "GIT_DIR" not in env and "GIT_WORK_TREE" not in env and "GIT_CONFIG_PARAMETERS" not in env
    assert env["GIT_SSH_COMMAND"] == "ssh -i key" and env["GIT_TERMINAL_PROMPT"] == "0"


def test_credentials_in_the_repository_url_never_reach_the_log_or_the_error(tmp_path):
    log: list[str] = []
    with pytest.raises(WorkspaceError) as failed:  # nothing listens on port 9: the clone fails
        prepare("http://user:tok3n@127.0.0.1:9/polaris.git", "main", None, tmp_path / "ws", log.append,
                threading.Event(), 30)
    text = "\n".join(log) + str(failed.value)
    assert "tok3n" not in text and "http://***@127.0.0.1:9/polaris.git" in text, text


def _git_accepts(name: str) -> bool:
    return subprocess.run(["git", "check-ref-format", "--allow-onelevel", name],
                          capture_output=True).returncode == 0


def _generated_refs(count: int) -> list[str]:
    rnd = random.Random(4)
    pieces = ["a", "b", "main", "x", ".", "..", "/", "//", "@", "@{", "{", "}", ".lock", "lock", "-",
              "~", "^", ":", "?", "*", "[", "]", "\\", " ", "\t", "\x7f", "\x01", "é", "\u2028", "0",
              "deadbeef", "refs/heads/", "HEAD", "_", "+", "#", "%", "!", "'", '"', "$", ";"]
    out = []
    for _ in range(count):
        out.append("".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 6))))
    return out


HOSTILE = INJECTIONS[:-1] + ["a/.b", "a/b.lock/c", "a.lock/b", "a/b.", "a./b", ".a", "a/..", "@/x", "x/@",
                             "a@{b", "a@", "@b", "{@", "a..b", "a/.", "./a", "-", "--", "a-", "a/-b",
                             "foo.lock", "foo.locked", "lock", ".lock", "a/b/c/d/e", "refs/tags/v1.0",
                             "+x", "x+", "#x", "ü/ß", "a\x1fb", "a\x20b", "a/b/"]


def _grammar_allows(name: str) -> bool:
    """wire.GIT_REF's pattern, without its length bound (git has none)."""
    return GIT_REF.regex.fullmatch(name) is not None


@pytest.mark.slow
def test_the_git_ref_grammar_agrees_with_git():
    names = [n for n in _generated_refs(400) + HOSTILE if "\0" not in n and not n.startswith("-")]
    assert len(names) > 300
    mismatches = [(n, _grammar_allows(n)) for n in names if _grammar_allows(n) != _git_accepts(n)]
    assert mismatches == []
    # validate_ref is git's rule minus leading '-' and names over 255 characters.
    for name in names:
        try:
            validate_ref("git_ref", name)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == (_git_accepts(name) and len(name) <= 255), name
    # Some of each kind were tried.
    assert sum(map(_git_accepts, names)) > 50 and sum(not _git_accepts(n) for n in names) > 50


# --------------------------------------------------------------------------- cancel and timeout

@pytest.fixture
def silent_git_server():
    """A TCP server that accepts git:// connections and never answers: a clone hangs on it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"git://127.0.0.1:{server.getsockname()[1]}/polaris.git"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def _git_processes_for(dest: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if str(dest).encode() in cmd and state != "Z":
                pids.append(int(entry.name))
    return pids


def test_cancel_kills_git_promptly(silent_git_server, tmp_path):
    cancel = threading.Event()
    dest = tmp_path / "ws-cancel"
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(BuildCancelled):
        prepare(silent_git_server, "main", None, dest, lambda line: None, cancel, 60)
    assert time.monotonic() - started < 3
    assert wait_until(lambda: not _git_processes_for(dest), 2)


def test_timeout_kills_git(silent_git_server, tmp_path):
    dest = tmp_path / "ws-timeout"
    started = time.monotonic()
    with pytest.raises(BuildTimedOut, match="timed out"):
        prepare(silent_git_server, "main", None, dest, lambda line: None, threading.Event(), 1.0)
    assert 0.9 < time.monotonic() - started < 4
    assert wait_until(lambda: not _git_processes_for(dest), 2)


def test_cancel_before_start(polaris, tmp_path):
    repo, _ = polaris
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BuildCancelled):
        prepare(str(repo.path), "main", None, tmp_path / "ws", lambda line: None, cancel, 60)


# --------------------------------------------------------------------------- discovery

def test_discover(make_repo, tmp_path):
    repo = make_repo("disc")
    repo.commit({"Dockerfile": "FROM scratch\n", "a_job.py": "", "jobs/b_job.py": "", "jobs/deep/c_job.py": "",
                 "not_a_job.py.txt": "", "x.tem": "", "manifests/y.tem": "", "job.py": "", "z.TEM": ""})
    (repo.path / ".git" / "hidden_job.py").write_text("")
    (repo.path / "link_job.py").symlink_to("a_job.py")
    jobs, manifests = discover(repo.path, "*_job.py", "*.tem")
    assert jobs == ["a_job.py", "jobs/b_job.py", "jobs/deep/c_job.py", "link_job.py"]
    assert manifests == ["manifests/y.tem", "x.tem"]
    # A glob with a folder in it matches the relative path.
    assert discover(repo.path, "jobs/*_job.py", "nothing")[0] == ["jobs/b_job.py", "jobs/deep/c_job.py"]
    assert discover(repo.path, "*_job.py", "nothing")[1] == []
