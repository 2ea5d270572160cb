#!/usr/bin/env python3
"""Storage backends through the service layer (issue 3, "Speed").

For each backend (sqlite, yaml, postgres) seeded with 10,000 harnesses over 200 groups, calls the
RegistryService directly with a Caller (no HTTP, no token check) and prints operations per second:

* list      -- one group's 50 harnesses (``RegistryService.list`` in a read transaction)
* get       -- one harness by id (``RegistryService.get`` in a read transaction)
* auth      -- for scale: what every HTTP request adds (``AuthService.authenticate``: JWT, revocation, user)
* patch     -- ``RegistryService.update`` of one field
* create    -- ``RegistryService.create``, one thread, then from 4 threads at once

and the time to open each store and answer its first read (for YAML: loading the 10,000-record file).

Targets: sqlite and postgres list of a group < 1 ms; yaml start-up < 1 s; postgres create >= 500/s
from 4 threads.

    python benchmarks/storage.py                        # all backends, 2 s per operation
    python benchmarks/storage.py -b sqlite -s 0.5       # a quick one

PostgreSQL: a throw-away database on 127.0.0.1:5432 (``XPRESSO_TEST_PG_ADMIN_DSN`` to change),
dropped at the end.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BACKENDS, backend_settings, postgres_database, seed_harnesses, table  # noqa: E402

from xpresso_env.access.auth import Caller  # noqa: E402
from xpresso_env.registry.service import HARNESS, find, select  # noqa: E402


@dataclass
class Timing:
    ops: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))]

    def cell(self) -> str:
        if not self.ops:
            return "-"
        return f"{self.per_s:,.0f}/s  p50 {self.pct(0.5) * 1000:.2f}ms"


def measure(op: Callable[[int], None], seconds: float, max_ops: int, warmup: int = 20) -> Timing:
    for i in range(warmup):
        op(-1 - i)
    t = Timing()
    start = time.perf_counter()
    deadline = start + seconds
    i = 0
    while i < max_ops:
        t0 = time.perf_counter()
        op(i)
        t1 = time.perf_counter()
        t.latencies.append(t1 - t0)
        i += 1
        if t1 >= deadline:
            break
    t.ops, t.seconds = i, time.perf_counter() - start
    return t


def measure_threads(op: Callable[[int, int], None], threads: int, seconds: float, max_ops: int) -> Timing:
    """``op(thread, i)`` from ``threads`` threads at once until the time or the count runs out."""
    counts = [0] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    stop_at: list[float] = []

    def worker(n: int) -> None:
        barrier.wait()
        try:
            while counts[n] < max_ops // threads and time.perf_counter() < stop_at[0]:
                op(n, counts[n])
                counts[n] += 1
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for th in pool:
        th.start()
    stop_at.append(time.perf_counter() + seconds)
    start = time.perf_counter()
    barrier.wait()
    for th in pool:
        th.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return Timing(ops=sum(counts), seconds=elapsed)


@dataclass
class Row:
    backend: str
    seed_s: float = 0.0
    startup: list[float] = field(default_factory=list)
    startup_pyyaml: list[float] = field(default_factory=list)  # yaml: a file only PyYAML reads
    file_mb: Optional[float] = None
    ops: dict[str, Timing] = field(default_factory=dict)
    error: Optional[str] = None


def open_store(stack: ExitStack, backend: str, tmp: Path):
    dsn = stack.enter_context(postgres_database()) if backend == "postgres" else None
    return backend_settings(tmp, backend, dsn=dsn)


def yaml_fallback_startup(info, settings, tmp: Path, group: str, runs: int) -> list[float]:
    """Start-up on the same data written by PyYAML in its own style (records as one-line flow
    mappings, as a hand-made file might be): outside the plugin's fast line reader, so the
    whole file goes through PyYAML. The worst case of a hand-edited file."""
    import dataclasses

    import yaml

    src = settings.storage_path("xpresso.yaml")
    data = yaml.load(src.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    other = tmp / "pyyaml-style"
    other.mkdir()
    dst = other / "xpresso.yaml"
    dst.write_text(yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                             default_flow_style=None), encoding="utf-8")
    hand = dataclasses.replace(settings, storage=dataclasses.replace(settings.storage, path=str(dst)))
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fresh = info.factory(hand)
        with fresh.read() as tx:
            n = len(tx.query(HARNESS.kind, group, include_deleted=False))
        out.append(time.perf_counter() - t0)
        fresh.close()
        assert n > 0, "the PyYAML-style file lost its records"
    return out


def bench_backend(backend: str, args, tmp: Path) -> Row:
    from xpresso_env.app import build_context
    from xpresso_env.plugin import make_plugin_manager, pick_storage

    row = Row(backend)
    with ExitStack() as stack:
        settings = open_store(stack, backend, tmp)
        ctx = build_context(settings, images=False, check_schema=False)
        stack.callback(ctx.close)
        ctx.storage.init()
        seeded = seed_harnesses(ctx.storage, args.groups, args.per_group)
        row.seed_s = seeded.seconds
        user = ctx.auth.add_user("bench", roles={g: "privilege_member" for g in seeded.groups})
        token = ctx.auth.issue_token("bench").display
        if backend == "yaml":
            row.file_mb = os.path.getsize(settings.storage_path("xpresso.yaml")) / 1e6
        print(f"{backend}: seeded {seeded.count:,} harnesses in {seeded.transactions} transactions "
              f"({seeded.seconds:.2f} s)", flush=True)

        # Start-up: a new backend object on the seeded store, until its first read has answered.
        info = pick_storage(make_plugin_manager(), backend)
        for _ in range(args.startup_runs):
            t0 = time.perf_counter()
            fresh = info.factory(settings)
            with fresh.read() as tx:
                tx.query(HARNESS.kind, seeded.groups[0], include_deleted=False)
            row.startup.append(time.perf_counter() - t0)
            fresh.close()

        if backend == "yaml":
            row.startup_pyyaml = yaml_fallback_startup(info, settings, tmp, seeded.groups[0], args.startup_runs)

        groups = seeded.groups
        callers = {g: Caller(user=user, group=g) for g in groups}
        ids = [(g, i) for g in groups for i in seeded.ids[g]]
        reg, storage = ctx.registry, ctx.storage
        query = reg.parse_query(HARNESS, {})
        step = 7919  # a prime: spread the ops over groups and records

        def op_list(i: int) -> None:
            g = groups[(i * step) % len(groups)]
            with storage.read() as tx:
                records, total = select(tx, callers[g].group, HARNESS, query)
            assert total == args.per_group, total

        def op_get(i: int) -> None:
            g, rid = ids[(i * step) % len(ids)]
            with storage.read() as tx:
                find(tx, callers[g].group, HARNESS, rid)

        def op_auth(i: int) -> None:
            g = groups[(i * step) % len(groups)]
            with storage.read() as tx:
                ctx.auth.authenticate(token, g, tx)

        def op_patch(i: int) -> None:
            g, rid = ids[(i * step) % len(ids)]
            reg.update(callers[g], HARNESS, rid, lambda: {"site": f"S{i % 97}"})

        def op_create(i: int, thread: int = 0) -> None:
            g = groups[(i * step + thread) % len(groups)]
            reg.create(callers[g], HARNESS, lambda: {"name": f"new-{thread}-{i}", "path": "/opt/new", "site": "OTT"})

        budget = dict(seconds=args.seconds, max_ops=args.max_ops)
        for name, op in (("list", op_list), ("get", op_get), ("auth", op_auth), ("patch", op_patch),
                         ("create", op_create)):
            row.ops[name] = measure(op, **budget)
            print(f"  {name:<10} {row.ops[name].cell()}", flush=True)
        row.ops["create x4"] = measure_threads(lambda t, i: op_create(i + 1_000_000, thread=t + 1),
                                               args.create_threads, **budget)
        print(f"  create x{args.create_threads} {row.ops['create x4'].per_s:,.0f}/s", flush=True)
    return row


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-b", "--backend", action="append", choices=BACKENDS,
                   help="backend to measure (repeatable; default all three)")
    p.add_argument("-s", "--seconds", type=float, default=2.0, help="time budget per operation (default 2)")
    p.add_argument("--max-ops", type=int, default=20000, help="at most this many of each operation")
    p.add_argument("--groups", type=int, default=200)
    p.add_argument("--per-group", type=int, default=50)
    p.add_argument("--startup-runs", type=int, default=3, help="start-up is measured this many times (median)")
    p.add_argument("--create-threads", type=int, default=4)
    args = p.parse_args(argv)

    rows: list[Row] = []
    for backend in args.backend or BACKENDS:
        tmp = Path(tempfile.mkdtemp(prefix=f"xpresso-bench-{backend}-"))
        try:
            rows.append(bench_backend(backend, args, tmp))
        except Exception as exc:  # one broken backend must not hide the others' figures
            traceback.print_exc()
            rows.append(Row(backend, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200]))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    names = ["list", "get", "auth", "patch", "create", "create x4"]
    header = ["backend", "open+1st read"] + [n if n != "create x4" else f"create x{args.create_threads}"
                                             for n in names]
    out = []
    for r in rows:
        if r.error:
            out.append([r.backend, "ERROR"] + [r.error[:60]] + [""] * (len(names) - 1))
            continue
        start = f"{statistics.median(r.startup) * 1000:,.0f} ms" if r.startup else "-"
        out.append([r.backend, start] + [f"{r.ops[n].per_s:,.0f}/s" for n in names])
    print()
    print(f"{args.groups * args.per_group:,} harnesses over {args.groups} groups; ops/s through RegistryService "
          f"(a Caller given; `auth` is AuthService.authenticate for scale); {os.cpu_count()} CPUs")
    print(table(out, header))
    lat = []
    for r in rows:
        if not r.error:
            lat.append([r.backend] + [f"{r.ops[n].pct(0.5) * 1000:.3f} / {r.ops[n].pct(0.99) * 1000:.3f}"
                                      for n in names[:-1]])
    print()
    print("latency p50 / p99 in ms (one thread)")
    print(table(lat, ["backend"] + names[:-1]))
    for r in rows:
        if r.file_mb is not None:
            print(f"\nyaml file with the seed: {r.file_mb:.1f} MB; start-up runs: "
                  + ", ".join(f"{s * 1000:.0f} ms" for s in r.startup)
                  + "; the same data in PyYAML's own style (read by PyYAML, not the line reader): "
                  + ", ".join(f"{s * 1000:.0f} ms" for s in r.startup_pyyaml))

    print()
    by = {r.backend: r for r in rows if not r.error}
    checks = []
    for b in ("sqlite", "postgres"):
        if b in by:
            checks.append((f"{b} list of a group < 1 ms (p50)", by[b].ops["list"].pct(0.5) < 0.001,
                           f"{by[b].ops['list'].pct(0.5) * 1000:.3f} ms"))
    if "yaml" in by:
        s = statistics.median(by["yaml"].startup)
        checks.append(("yaml start-up < 1 s", s < 1.0, f"{s * 1000:.0f} ms"))
    if "postgres" in by:
        c = by["postgres"].ops["create x4"].per_s
        checks.append((f"postgres create >= 500/s from {args.create_threads} threads", c >= 500, f"{c:,.0f}/s"))
    for name, ok, value in checks:
        print(f"  [{'met ' if ok else 'MISS'}] {name}: {value}")
    for r in rows:
        if r.error:
            print(f"  [FAIL] {r.backend}: {r.error}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
