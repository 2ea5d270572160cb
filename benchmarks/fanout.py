#!/usr/bin/env python3
"""What webhooks cost a write (issue 18, "Bounded fan-out"): a harness POST to a group with 25
webhooks against one to a group with none.

Two throw-away stores, alike but for the webhooks: one group, one user; store "hooks" has W (default
25, the most a group may have) webhooks asking for every event, store "none" has none. Each round
starts the real `xpresso-env serve` on one store, sends N harness creates (POST
/api/v2/harnesses, each a new name) from C client threads on keep-alive connections, and stops it;
the rounds alternate hooks, none, hooks, none... Each run reads the server process's CPU time
(user + system, /proc/<pid>/stat) before and after: CPU per request. Printed: each run's req/s,
median latency and CPU per request, then the medians of the paired ratios (none / hooks in req/s,
hooks / none in CPU per request: 1.00 means the webhooks cost a write nothing; the target is
at most 1.5).

The servers run with `events.deliver: false`: what is measured is the write path, which stores one
event per write. Fanning it out and delivering it are the delivery loop's work, off that path (a
`worker`, or another server's loop); after the rounds the script fans out the stored events of
the "hooks" store in-process and prints that rate too, for scale.

    python benchmarks/fanout.py                          # sqlite, 4 rounds of 1,000 POSTs, 4 clients
    python benchmarks/fanout.py --backend postgres --rounds 2 --requests 500

Talks only to 127.0.0.1, cleans up its temporary folder and stops every process it started.
"""
from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from _common import (
    backend_settings,
    free_port,
    postgres_database,
    run_in_tempdir,
    write_config,
)
from registry import Server, cpu_seconds, serve_command

from xpresso_env.app import build_context
from xpresso_env.config import Settings
from xpresso_env.journal.journal import DELIVERY_KIND, EVENT_KIND

GROUP = "bench"
SECRET = "benchmark-webhook-secret-0123456789"


@dataclasses.dataclass
class Run:
    label: str
    requests: int
    seconds: float
    p50_ms: float
    cpu_us: float  # server CPU per request, microseconds

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def prepare(settings: Settings, webhooks: int) -> str:
    """Initialise the store, its group, user and webhooks; the user's token."""
    ctx = build_context(settings, check_schema=False, images=False)
    try:
        ctx.storage.init()
        ctx.auth.add_group(GROUP)
        ctx.auth.add_user("admin", superuser=True)
        token = ctx.auth.issue_token("admin").display
        with ctx.storage.read() as tx:
            caller = ctx.auth.authenticate(token, GROUP, tx)
        for n in range(webhooks):  # never called here: the servers do not deliver
            ctx.webhooks.create(caller, lambda n=n: {"url": f"http://127.0.0.1:9/hook?n={n}", "events": ["*"],
                                                     "secret": SECRET})
        return token
    finally:
        ctx.close()


def post_harnesses(port: int, token: str, prefix: str, n: int, clients: int) -> list[float]:
    """``n`` creates from ``clients`` threads, each on its own keep-alive connection; latencies (s)."""
    headers = {"Authorization": token, "Group": GROUP, "Content-Type": "application/json"}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        try:
            for i in range(k, n, clients):
                body = json.dumps({"name": f"{prefix}-{i}", "path": "/opt/pyats"})
                started = time.perf_counter()
                conn.request("POST", "/api/v2/harnesses", body=body, headers=headers)
                res = conn.getresponse()
                res.read()
                mine.append(time.perf_counter() - started)
                if res.status != 201:
                    errors.append(f"{res.status}")
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} creates failed (first: {errors[0]})")
    return latencies


def one_run(label: str, config: Path, tmp: Path, servers: list, token: str, prefix: str, args) -> Run:
    port = free_port()
    cmd = serve_command(config) + ["--port", str(port)]
    server = Server(cmd, port, tmp / f"serve-{label}.log", env={**os.environ, "XPRESSO_ENV_LOG_LEVEL": "WARNING"})
    servers.append(server)
    try:
        post_harnesses(port, token, f"{prefix}-warm", 50, args.clients)  # connections, caches, first writes
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        latencies = post_harnesses(port, token, prefix, args.requests, args.clients)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        server.stop()
        servers.remove(server)
    return Run(label, args.requests, seconds, 1000 * statistics.median(latencies), 1e6 * cpu / args.requests)


def run(args, tmp: Path, servers: list, dsns: dict[str, Optional[str]]) -> int:
    stores: dict[str, tuple[Path, str, Settings]] = {}
    for label, hooks in (("hooks", args.webhooks), ("none", 0)):
        folder = tmp / label
        folder.mkdir()
        settings = backend_settings(folder, args.backend, dsns[label])
        settings = dataclasses.replace(
            settings, events=dataclasses.replace(settings.events, deliver=False),
            probes=dataclasses.replace(settings.probes, enabled=False),
            builds=dataclasses.replace(settings.builds, enabled=False))
        token = prepare(settings, hooks)
        stores[label] = (write_config(folder / "config.yaml", settings), token, settings)
    print(f"backend {args.backend}: {args.rounds} rounds x {args.requests} harness creates from {args.clients} "
          f"clients; {args.webhooks} webhooks (events '*') vs none; {os.cpu_count()} CPUs shared by the clients "
          f"and the server", flush=True)
    pairs: list[tuple[Run, Run]] = []
    for r in range(args.rounds):
        done = {}
        for label in ("hooks", "none") if r % 2 == 0 else ("none", "hooks"):
            config, token, _ = stores[label]
            done[label] = one_run(label, config, tmp, servers, token, f"r{r}", args)
            d = done[label]
            print(f"  round {r + 1} {label:5}: {d.rps:7.1f} req/s, p50 {d.p50_ms:6.2f} ms, "
                  f"{d.cpu_us:7.0f} us CPU a request", flush=True)
        pairs.append((done["hooks"], done["none"]))
    rps_ratio = statistics.median(none.rps / hooks.rps for hooks, none in pairs)
    cpu_ratio = statistics.median(hooks.cpu_us / none.cpu_us for hooks, none in pairs)
    p50_ratio = statistics.median(hooks.p50_ms / none.p50_ms for hooks, none in pairs)
    print(f"median of paired ratios (cost with {args.webhooks} webhooks / without): req/s {rps_ratio:.2f}, "
          f"CPU per request {cpu_ratio:.2f}, p50 latency {p50_ratio:.2f} (target: <= 1.5)")

    # The events the "hooks" writes stored, fanned out as the delivery loop does (in-process).
    _, _, settings = stores["hooks"]
    ctx = build_context(settings, check_schema=False, images=False)
    try:
        with ctx.storage.read() as tx:
            events = len(tx.query(EVENT_KIND))
        started = time.perf_counter()
        made = 0
        while True:
            step = ctx.deliveries.fan_out()
            if not step:
                break
            made += step
        seconds = time.perf_counter() - started
        with ctx.storage.read() as tx:
            deliveries = len(tx.query(DELIVERY_KIND))
        print(f"fan-out off the write path: {events} stored events -> {made} deliveries in {seconds:.2f} s "
              f"({made / seconds:,.0f} deliveries/s, {events / seconds:,.0f} events/s); {deliveries} stored")
    finally:
        ctx.close()
    return 0 if max(rps_ratio, cpu_ratio) <= 1.5 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="sqlite", choices=("sqlite", "yaml", "postgres"))
    p.add_argument("--rounds", type=int, default=4, help="paired rounds (hooks and none each round)")
    p.add_argument("--requests", type=int, default=1000, help="harness creates a run")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--webhooks", type=int, default=25)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    if args.backend == "postgres":
        with postgres_database() as hooks_dsn, postgres_database() as none_dsn:
            return run_in_tempdir("xpresso-bench-fanout-", args.keep,
                                  lambda tmp, servers: run(args, tmp, servers, {"hooks": hooks_dsn, "none": none_dsn}))
    return run_in_tempdir("xpresso-bench-fanout-", args.keep,
                          lambda tmp, servers: run(args, tmp, servers, {"hooks": None, "none": None}))


if __name__ == "__main__":
    sys.exit(main())
