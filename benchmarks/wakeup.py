#!/usr/bin/env python3
"""Submit → claim across processes on PostgreSQL (issue 19, "Wake-ups across processes").

A real `xpresso-env serve` (``builds.enabled: false``: it never builds) and a real
`xpresso-env worker` (the dry-run builder) share one throw-away PostgreSQL database and nothing
else. Builds are POSTed to the server one at a time; each is waited for until it has finished, so
the worker is idle when the next one arrives, and a random pause (0-1 s) between them puts the
submission anywhere in the worker's poll cycle. The latency of a build is its record's
``worker_meta.claimed_at`` minus its ``date_created`` (both stamped on this machine's clock: the
server's when it inserts the build, the worker's when its claim is written).

Without wake-ups an idle worker finds a build submitted elsewhere at its next poll
(``builds.poll_s``, 1 s): about half a poll on average. With LISTEN/NOTIFY the commit of the
submission wakes it. Target: p95 <= 100 ms.

    python benchmarks/wakeup.py               # 40 builds
    python benchmarks/wakeup.py -n 100 --poll 1.0

Needs PostgreSQL at 127.0.0.1:5432 with trust auth (XPRESSO_TEST_PG_ADMIN_DSN names another)
and git; talks only to 127.0.0.1; drops its database and removes its folder at the end.
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile  # noqa: E402  (importing _common puts the repository on sys.path)

import requests  # noqa: E402

from tests.git_repo import hello_polaris  # noqa: E402
from xpresso_env.core.timeutil import parse_time  # noqa: E402
from xpresso_env.testing.postgres import temp_database  # noqa: E402
from xpresso_env.testing.server import cli, serve, worker, write_config  # noqa: E402


def measure(n: int, poll_s: float, tmp: Path) -> list[float]:
    polaris = hello_polaris(tmp / "polaris")
    with temp_database("xpresso_bench") as dsn:
        storage = {"backend": "postgres", "dsn": dsn}
        paths = {"nfs_root": str(tmp / "nfs"), "logs_root": "logs", "workspace_root": "ws"}
        server_cfg = write_config(tmp / "server", {"storage": storage, "auth": {"secret": "bench-server-" * 4},
                                                   "images": paths, "builds": {"enabled": False}})
        worker_cfg = write_config(tmp / "worker", {"storage": storage, "auth": {"secret": "bench-worker-" * 4},
                                                   "images": paths, "builder": {"backend": "dry-run"},
                                                   "polaris": {"repo": str(polaris.path)},
                                                   "builds": {"poll_s": poll_s}})
        token = cli(server_cfg, "init", "--group", "bench", "--admin", "root").stdout.strip().splitlines()[-1]
        headers = {"Authorization": token, "Group": "bench"}
        latencies: list[float] = []
        with serve(server_cfg, cwd=tmp / "server") as srv, worker(worker_cfg, tmp / "worker-cwd") as w:
            session = requests.Session()
            session.headers.update(headers)
            # The worker is up once it has said so; its first round has then passed.
            deadline = time.monotonic() + 60
            while "build thread(s)" not in w.log():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start: {w.log()}")
                time.sleep(0.1)
            for i in range(n + 1):  # the first build warms both processes up: not counted
                time.sleep(random.uniform(0.0, 1.0))
                r = session.post(f"{srv.url}/api/v2/images/polaris_build", timeout=30,
                                 json={"name": "bench", "tag": f"t{i}", "git_ref": "main"})
                r.raise_for_status()
                image_id = r.json()["uuid"]
                deadline = time.monotonic() + 60
                while True:
                    rec = session.get(f"{srv.url}/api/v2/images/{image_id}", timeout=30).json()
                    if rec["status"] != "building":
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"build {image_id} did not finish: {w.log()}")
                    time.sleep(0.05)
                if rec["status"] != "successful":
                    raise RuntimeError(f"build {image_id}: {rec['status']} {rec['meta']}")
                if i:
                    claimed = parse_time(rec["worker_meta"]["claimed_at"])
                    latencies.append((claimed - parse_time(rec["date_created"])).total_seconds() * 1000)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=40, help="builds measured (default 40)")
    parser.add_argument("--poll", type=float, default=1.0, help="the worker's builds.poll_s (default 1.0)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="xpresso-wakeup-"))
    try:
        ms = measure(args.n, args.poll, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"submit -> claim, serve and worker processes on PostgreSQL, worker builds.poll_s {args.poll:g} s, "
          f"{len(ms)} builds")
    print(f"  median {statistics.median(ms):7.1f} ms   p95 {percentile(ms, 95):7.1f} ms   "
          f"max {max(ms):7.1f} ms   min {min(ms):7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
