#!/usr/bin/env python3
"""Benchmark of Polaris image builds (issue 4, "Speed"; issue 9, "Overhead").

1. The same Dockerfile and 50 MB context built by raw ``docker build`` + ``docker save`` (the
   docker CLI, classic builder like the service's docker plugin) and through the service (the
   real ``xpresso-env serve``: POST polaris_build, then poll until ``successful``). Every
   iteration commits a new stamp file that the Dockerfile copies first, so neither side ever
   hits Docker's layer cache. Raw and service runs alternate; the medians are compared.
   Target: service / raw <= 1.05 (issue 9; issue 4 asked 1.15). Where the time goes is printed
   too: the service's phases (workspace, builder, the rest), the raw build and save, and the
   docker builder's own phases (``meta.builder_timings``: build incl. context upload, save,
   rename in the tar, publish with fsync, tidy of the image store), and a timeline of each
   service build read back from its log's stamps (TIMELINE: POST committed ... client sees it).
2. ``POST /api/v2/images/polaris_build`` latency while two builds run (builds.max_concurrent=2,
   both busy; the posted builds wait in the queue and are cancelled afterwards).
   Target: p95 < 50 ms.

    python benchmarks/builds.py                 # 3 iterations of each, 200 POSTs
    python benchmarks/builds.py -n 5 --posts 500 --context-mb 50

Needs root (a private dockerd, started and stopped here) or XPRESSO_TEST_DOCKER_HOST naming a
daemon; the docker CLI; git. Talks only to 127.0.0.1 and cleans up its temporary folder.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402  (also puts the repository on sys.path)

import requests  # noqa: E402

from xpresso_env.testing.daemons import docker_daemon  # noqa: E402
from xpresso_env.testing.server import cli, serve, write_config  # noqa: E402

RAW_PHASES: list[dict[str, float]] = []  # docker build / docker save of each raw run
# Where a service build's time goes: the build log's first line starting with each marker, in
# seconds after the client's POST (the log's stamps are the server's wall clock, on this machine).
TIMELINE = [("POST committed (queued)", "queued:"), ("claimed by a worker", "attempt "),
            ("workspace ready", "commit "), ("context upload starts", "$ git archive"),
            ("first build step", "Step 1/"), ("image built", "Successfully built"),
            ("tar saved and published", "saved "), ("final log line", "successful:")]
DOCKERFILE = "FROM scratch\nCOPY stamp.txt /stamp.txt\nCOPY data /data\n"


def git(repo: Path, *args: str) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def make_repo(base: Path, context_mb: int) -> Path:
    repo = base / "polaris"
    (repo / "data").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "Dockerfile").write_text(DOCKERFILE)
    for i in range(max(1, context_mb // 10)):  # incompressible, in 10 MB files
        (repo / "data" / f"blob{i}.bin").write_bytes(os.urandom(min(10, context_mb) << 20))
    (repo / "data" / "basic_job.py").write_text("# job\n")
    (repo / "stamp.txt").write_text("0\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def new_stamp(repo: Path) -> None:
    (repo / "stamp.txt").write_text(uuid.uuid4().hex + "\n")
    git(repo, "commit", "-q", "-am", "stamp")


def raw_build(repo: Path, docker_url: str, out: Path) -> float:
    """docker build + docker save of the working tree (without .git, like the service's context)."""
    ctx = out.parent / "raw-context"
    shutil.rmtree(ctx, ignore_errors=True)
    shutil.copytree(repo, ctx, ignore=shutil.ignore_patterns(".git"))
    env = {**os.environ, "DOCKER_HOST": docker_url, "DOCKER_BUILDKIT": "0"}
    t0 = time.perf_counter()
    subprocess.run(["docker", "build", "-q", "-t", "bench:raw", str(ctx)], env=env, check=True,
                   capture_output=True)
    t1 = time.perf_counter()
    subprocess.run(["docker", "save", "-o", str(out), "bench:raw"], env=env, check=True, capture_output=True)
    elapsed = time.perf_counter() - t0
    RAW_PHASES.append({"build_s": t1 - t0, "save_s": elapsed - (t1 - t0)})
    shutil.rmtree(ctx, ignore_errors=True)
    return elapsed


def remove_bench_images(docker_url: str) -> None:
    env = {**os.environ, "DOCKER_HOST": docker_url}
    listed = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], env=env,
                            capture_output=True, text=True).stdout.split()
    ours = [ref for ref in listed if ref.startswith("bench:")]
    if ours:
        subprocess.run(["docker", "rmi", *ours], env=env, capture_output=True)


def service_build(url: str, headers: dict, tag: str, poll_s: float = 0.01) -> tuple[float, dict]:
    s = requests.Session()
    wall0 = time.time()
    t0 = time.perf_counter()
    r = s.post(f"{url}/api/v2/images/polaris_build", headers=headers, timeout=30,
               json={"name": "bench", "tag": tag, "git_ref": "main"})
    r.raise_for_status()
    image_id = r.json()["uuid"]
    while True:
        rec = s.get(f"{url}/api/v2/images/{image_id}", headers=headers, timeout=30).json()
        if rec["status"] != "building":
            elapsed = time.perf_counter() - t0
            if rec["status"] != "successful":
                raise RuntimeError(f"build {image_id} {rec['status']}: {rec['meta']}")
            rec["_posted_at"] = wall0  # for timeline(), read after the measurement
            return elapsed, rec
        time.sleep(poll_s)


def latency_under_load(url: str, headers: dict, repo: Path, posts: int) -> tuple[list[float], int]:
    s = requests.Session()
    busy = []
    for n in range(2):
        new_stamp(repo)
        r = s.post(f"{url}/api/v2/images/polaris_build", headers=headers, timeout=30,
                   json={"name": "bench", "tag": f"busy{n}", "git_ref": "main"})
        busy.append(r.json()["uuid"])
    time.sleep(0.3)  # both claimed and building
    lat, queued = [], []
    for n in range(posts):
        body = {"name": "bench", "tag": f"queued{n}", "git_ref": "main"}
        t0 = time.perf_counter()
        r = s.post(f"{url}/api/v2/images/polaris_build", headers=headers, timeout=30, json=body)
        lat.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        queued.append(r.json()["uuid"])
    still = sum(s.get(f"{url}/api/v2/images/{i}", headers=headers, timeout=30).json()["status"] == "building"
                for i in busy)
    for i in queued:
        s.post(f"{url}/api/v2/images/{i}/cancel", headers=headers, timeout=30)
    for i in busy:
        while s.get(f"{url}/api/v2/images/{i}", headers=headers, timeout=30).json()["status"] == "building":
            time.sleep(0.1)
    return lat, still


def timeline(url: str, headers: dict, rec: dict, elapsed: float) -> dict[str, float]:
    """Seconds after the POST at which the build's log shows each TIMELINE marker."""
    text = requests.get(f"{url}/api/v2/images/{rec['uuid']}/logs", headers=headers, timeout=30).text
    seen: dict[str, float] = {}
    for line in text.splitlines():
        stamp, _, message = line.partition(" ")
        for label, marker in TIMELINE:
            if label not in seen and message.startswith(marker):
                when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
                seen[label] = when.timestamp() - rec["_posted_at"]
    seen["client sees successful"] = elapsed
    return seen


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=3, help="iterations of each build (default 3)")
    ap.add_argument("--context-mb", type=int, default=50)
    ap.add_argument("--posts", type=int, default=200, help="POSTs for the latency figure (default 200)")
    ap.add_argument("--poll-ms", type=float, default=10, help="the client's poll interval (default 10 ms)")
    args = ap.parse_args()
    if shutil.which("docker") is None:
        print("builds.py: the docker CLI is needed for the raw baseline", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="xpresso-bench-builds-"))
    load_before = os.getloadavg()
    try:
        with docker_daemon() as docker_url:
            repo = make_repo(base, args.context_mb)
            config = write_config(base / "srv", {
                "storage": {"backend": "sqlite", "path": "db.sqlite3"}, "auth": {"secret_file": "secret"},
                "images": {"nfs_root": "nfs", "logs_root": "logs", "workspace_root": "ws"},
                "polaris": {"repo": str(repo)},
                "builder": {"backend": "docker", "docker": {"base_url": docker_url}},
                "builds": {"max_concurrent": 2, "max_queued_per_group": args.posts + 10},
                "server": {"access_log": False}})
            cli(config, "init")
            cli(config, "group", "add", "bench")
            cli(config, "user", "add", "bench", "--group", "bench:member")
            token = cli(config, "token", "create", "bench").stdout.strip().splitlines()[-1]
            headers = {"Authorization": token, "Group": "bench"}
            raw, svc, phases, builder_meta, marks = [], [], [], [], []
            with serve(config) as server:
                # one warm-up of each (page cache, daemon start-up costs), not counted
                new_stamp(repo)
                raw_build(repo, docker_url, base / "raw.tar")
                new_stamp(repo)
                service_build(server.url, headers, "warmup")
                for i in range(args.n):
                    new_stamp(repo)
                    raw.append(raw_build(repo, docker_url, base / "raw.tar"))
                    new_stamp(repo)
                    elapsed, rec = service_build(server.url, headers, f"run{i}", args.poll_ms / 1000)
                    svc.append(elapsed)
                    phases.append(rec["meta"]["timings"])
                    builder_meta.append(rec["meta"])
                    marks.append((rec, elapsed))
                marks = [timeline(server.url, headers, rec, elapsed) for rec, elapsed in marks]
                tar_mb = rec["size"] / 1e6
                lat, still = latency_under_load(server.url, headers, repo, args.posts)
            remove_bench_images(docker_url)  # a shared daemon (XPRESSO_TEST_DOCKER_HOST) keeps nothing of ours
    finally:
        shutil.rmtree(base, ignore_errors=True)

    load_after = os.getloadavg()
    ratio = statistics.median(svc) / statistics.median(raw)
    # Each service build next to the raw build just before it: the spread shows how much the
    # machine's other work moved the figure during the run.
    paired = [s / r for s, r in zip(svc, raw)]
    rows = [[f"raw docker build + save", f"{statistics.median(raw):.2f}", f"{min(raw):.2f}", f"{max(raw):.2f}"],
            [f"through the service", f"{statistics.median(svc):.2f}", f"{min(svc):.2f}", f"{max(svc):.2f}"]]
    print(f"context {args.context_mb} MB (incompressible), tar {tar_mb:.1f} MB, {args.n} iterations each")
    print(table(rows, ["build", "median s", "min s", "max s"]))
    ws = statistics.median(p["workspace_s"] for p in phases)
    bs = statistics.median(p["build_s"] for p in phases)
    other = statistics.median(e - p["workspace_s"] - p["build_s"] for e, p in zip(svc, phases))
    print(f"service phases (median): workspace (clone, ref lookup, tree listing) {ws:.3f} s, builder (build + save + fsync) "
          f"{bs:.3f} s, the rest (POST, claim, discovery, commits, {args.poll_ms:g} ms polling) {other:.3f} s")
    labels = [label for label, _ in TIMELINE] + ["client sees successful"]
    print("service timeline, s after the POST (median; from the build log's stamps): " + ", ".join(
        f"{label} {statistics.median(m[label] for m in marks):.3f}" for label in labels
        if all(label in m for m in marks)))
    raw_phases = RAW_PHASES[-len(raw):]
    print("raw phases (median): " + ", ".join(f"{k} {statistics.median(p[k] for p in raw_phases):.2f} s"
                                              for k in ("build_s", "save_s")))
    inner = [p.get("builder_timings") for p in builder_meta if p.get("builder_timings")]
    if inner:
        print("docker builder phases (median): " + ", ".join(
            f"{k} {statistics.median(p.get(k, 0.0) for p in inner):.3f} s" for k in inner[0]))
    print(f"builder phase alone / raw: {bs / statistics.median(raw):.3f}")
    print(f"ratio service / raw: {ratio:.3f}   (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'}); "
          f"paired ratios min {min(paired):.3f}, median {statistics.median(paired):.3f}, max {max(paired):.3f}")
    print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, on {os.cpu_count()} CPUs "
          f"(other work on the machine widens the spread)")
    p95 = pct(lat, 95)
    print(f"POST polaris_build while two builds run ({len(lat)} requests, {still}/2 builds still running at the end): "
          f"p50 {pct(lat, 50):.1f} ms, p95 {p95:.1f} ms, max {max(lat):.1f} ms   "
          f"(target p95 < 50 ms: {'met' if p95 < 50 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
