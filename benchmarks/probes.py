"""Probes at scale: 2,000 engines probed every 30 s against a loopback Jenkins stand-in (issue 8).

    python benchmarks/probes.py                       # sqlite, 2,000 records, 30 s interval
    python benchmarks/probes.py -b yaml -b postgres   # other backends too
    python benchmarks/probes.py -n 500 --steady 10    # a quick look

What it does, per backend: seeds N jenkins engines (straight through the storage API) whose
base_url points at a Jenkins stand-in (tests/probes/jenkins_standin.py, run in a process of its
own so it does not share the service's GIL), builds the real application context and starts its
probe service (probes.concurrency 16, interval 30 s), exactly what `serve` runs in the background.

* **burst**: every record is new, so all N are due at once: records probed per second until every
  one has a written result (claims, probes, results and their transactions included).
* **steady**: then ``--steady`` seconds (default 1.5 intervals), the records' documents read once a
  second: each new ``last_probe`` is one probe. For each probe: **lateness** = when it started
  minus when it was due (the scheduler's tick and any queueing: the probe OVERHEAD a record sees), and the probe's own
  latency; p50/p99/max of both. Plus the service process's CPU use (what keeping up costs; it
  includes this script's once-a-second reads) and CPU milliseconds per probe, and how many records
  were overdue by more than 2 s at the end (0: it keeps up).

``--cpu N``: the service's own CPU cost instead, at scale: N pyATS harnesses (50 per group) at
paths that do not exist, so each probe is a failed stat and what is measured is the service's
bookkeeping (claims, results, schedule, re-reads). Prints the first round (every record goes
UNKNOWN -> OFFLINE: a record write and a history row each) as wall and CPU seconds, then, after one
interval to settle, the process's CPU % over ``--steady`` seconds with nothing else running (no
reads by this script).

Prints the figures; asserts nothing (benchmarks/README.md has the figures of a run).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

from _common import BASE_TIME, ROOT, SECRET, backend_settings, postgres_database, run_in_tempdir, table  # noqa: F401

from xpresso_env.config import load_settings  # noqa: E402
from xpresso_env.core.codec import to_doc  # noqa: E402
from xpresso_env.core.models import Engine, EngineType, Group  # noqa: E402
from xpresso_env.core.timeutil import parse_time  # noqa: E402
from xpresso_env.probes.state import STATE_KIND  # noqa: E402

STANDIN = """
import sys
sys.path.insert(0, {root!r})
from tests.probes.jenkins_standin import JenkinsStandIn
with JenkinsStandIn() as j:
    print(j.url, flush=True)
    sys.stdin.read()
"""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def seed(storage, n: int, url: str) -> None:
    groups = [f"group-{i:02d}" for i in range(max(1, n // 50))]
    with storage.write() as tx:
        for g in groups:
            tx.insert(to_doc(Group(name=g, date_created=BASE_TIME)))
        for i in range(n):
            g = groups[i % len(groups)]
            tx.insert(to_doc(Engine(id=uuid.uuid4(), group=g, name=f"engine-{i:05d}", type=EngineType.JENKINS,
                                    base_url=f"{url}/jenkins/{i}", created_by="bench", date_created=BASE_TIME,
                                    date_modified=BASE_TIME)))


def states(storage) -> dict[str, dict]:
    with storage.read() as tx:
        return {d.id: d.body for d in tx.query(STATE_KIND)}


def run_backend(tmp: Path, backend: str, args, dsn=None) -> list[str]:
    from xpresso_env.app import build_context

    base = backend_settings(tmp / backend, backend, dsn)
    settings = load_settings(None, env={}, overrides={
        "storage": {"backend": backend, "path": base.storage.path, "dsn": base.storage.dsn},
        "auth": {"secret": SECRET}, "server": {"access_log": False},
        "probes": {"enabled": True, "interval_s": args.interval, "concurrency": args.concurrency,
                   "timeout_s": 5.0}})
    (tmp / backend).mkdir(parents=True, exist_ok=True)
    standin = subprocess.Popen([sys.executable, "-c", STANDIN.format(root=str(ROOT))], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        url = standin.stdout.readline().strip()
        ctx = build_context(settings, check_schema=False, images=False)
        try:
            ctx.storage.init()
            seed(ctx.storage, args.records, url)
            cpu0, t0 = time.process_time(), time.monotonic()
            ctx.start()
            while True:
                done = states(ctx.storage)
                if sum(1 for s in done.values() if s.get("last_probe")) >= args.records:
                    break
                time.sleep(0.2)
            burst_s = time.monotonic() - t0
            burst_cpu = time.process_time() - cpu0
            # steady: watch every record's document once a second; each new last_probe is one probe
            watch = {rid: (st["next_at"], st["last_probe"]["at"]) for rid, st in done.items()}
            lateness, latency, probes_seen = [], [], 0
            cpu1, t1 = time.process_time(), time.monotonic()
            while time.monotonic() - t1 < args.steady:
                time.sleep(1.0)
                for rid, st in states(ctx.storage).items():
                    next_at, last_at = watch[rid]
                    lp = st.get("last_probe") or {}
                    if lp.get("at") and lp["at"] != last_at:
                        probes_seen += 1
                        lateness.append((parse_time(lp["at"]) - parse_time(next_at)).total_seconds() * 1000)
                        latency.append(lp["latency_ms"])
                        watch[rid] = (st["next_at"], lp["at"])
            steady_cpu = time.process_time() - cpu1
            steady_wall = time.monotonic() - t1
            end = time.time()
            status = ctx.probes.status()
        finally:
            ctx.close()
    finally:
        standin.stdin.close()
        standin.wait(10)
    missed = sum(1 for next_at, _ in watch.values() if parse_time(next_at).timestamp() < end - 2)
    rows = [
        [backend, "burst", f"{args.records}", f"{burst_s:.1f} s", f"{args.records / burst_s:.0f}/s",
         f"{100 * burst_cpu / burst_s:.0f} %", "", "", f"{1000 * burst_cpu / args.records:.2f}"],
        [backend, "steady", f"{probes_seen}", f"{steady_wall:.1f} s", f"{len(lateness) / steady_wall:.0f}/s",
         f"{100 * steady_cpu / steady_wall:.0f} %",
         f"{pct(lateness, .5):.0f} / {pct(lateness, .99):.0f} / {max(lateness or [0]):.0f}",
         f"{pct(latency, .5):.1f} / {pct(latency, .99):.1f}", f"{1000 * steady_cpu / max(1, probes_seen):.2f}"],
    ]
    print(f"  {backend}: {missed} record(s) overdue by more than 2 s at the end; "
          f"scheduler status {status}", flush=True)
    return rows


def cpu_cost(tmp: Path, backend: str, args, dsn=None) -> None:
    """``--cpu N``: see the module docstring."""
    from _common import seed_bench_store

    from xpresso_env.app import build_context

    base = backend_settings(tmp / backend, backend, dsn)
    settings = load_settings(None, env={}, overrides={
        "storage": {"backend": backend, "path": base.storage.path, "dsn": base.storage.dsn},
        "auth": {"secret": SECRET}, "server": {"access_log": False},
        "probes": {"enabled": True, "interval_s": args.interval, "concurrency": args.concurrency}})
    (tmp / backend).mkdir(parents=True, exist_ok=True)
    seed_bench_store(settings, max(1, args.cpu // 50), 50, "member")
    ctx = build_context(settings, check_schema=False, images=False)
    try:
        cpu0, t0 = time.process_time(), time.monotonic()
        ctx.start()
        while sum(1 for s in states(ctx.storage).values() if s.get("last_probe")) < args.cpu:
            time.sleep(1.0)
        first_wall, first_cpu = time.monotonic() - t0, time.process_time() - cpu0
        time.sleep(args.interval)  # after a fast first round the probes bunch up: one interval to spread
        cpu1, t1 = time.process_time(), time.monotonic()
        time.sleep(args.steady)
        steady = 100 * (time.process_time() - cpu1) / (time.monotonic() - t1)
    finally:
        ctx.close()
    print(f"  {backend}: {args.cpu} harnesses, interval {args.interval:g} s: first round {first_wall:.1f} s wall, "
          f"{first_cpu:.1f} s CPU; steady state {steady:.1f} % of a core over {args.steady:g} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-b", "--backend", action="append", choices=("sqlite", "yaml", "postgres"))
    parser.add_argument("-n", "--records", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--steady", type=float, default=None, help="seconds of steady state (default: interval)")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--cpu", type=int, metavar="N", help="measure the CPU cost at N harnesses (see above)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    args.steady = args.steady or 1.5 * args.interval + 2
    backends = args.backend or ["sqlite"]

    def run(tmp: Path, servers: list) -> int:
        if args.cpu:
            for backend in backends:
                if backend == "postgres":
                    with postgres_database() as dsn:
                        cpu_cost(tmp, backend, args, dsn)
                else:
                    cpu_cost(tmp, backend, args)
            return 0
        rows: list[list[str]] = []
        for backend in backends:
            print(f"{backend}: {args.records} jenkins engines, interval {args.interval:g} s, "
                  f"concurrency {args.concurrency}", flush=True)
            if backend == "postgres":
                with postgres_database() as dsn:
                    rows += run_backend(tmp, backend, args, dsn)
            else:
                rows += run_backend(tmp, backend, args)
        print()
        print(table(rows, ["backend", "phase", "probes", "wall", "probed/s", "CPU", "lateness ms p50/p99/max",
                           "probe ms p50/p99", "CPU ms/probe"]))
        need = args.records / args.interval
        print(f"\nkeeping up needs {need:.0f} probes/s ({args.records} records / {args.interval:g} s)")
        return 0

    return run_in_tempdir("xpresso-probes-bench-", args.keep, run)


if __name__ == "__main__":
    sys.exit(main())
