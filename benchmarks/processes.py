#!/usr/bin/env python3
"""Benchmarks of `serve --processes` (issue 19, "Speed"), in three parts:

* ``sockets``: how N processes share one port, measured on a bare WSGI app (waitress created as
  `serve` creates it, the drain of ``http/server.py``) in two processes, three ways: one socket
  bound once and inherited by both (shared); SO_REUSEPORT, each process binding its own
  (reuseport); one SO_REUSEPORT socket per process slot, bound and held by the parent and inherited
  by the slot's process and its successors (slots: what `serve` does). For each, in rounds:
  requests/s under wrk, and two simulated reloads under wrk (two new processes start, then the two
  old ones drain and exit), counting every socket error and non-2xx answer.
* ``list``: ``GET /api/v2/harnesses`` (the registry benchmark's list, 10,000 harnesses in 200
  groups, probes off) against the real `serve` with 1 process and with 2, a fresh server each,
  in pairs; CPU per request summed over every process of the server; wrk's own CPU.
* ``mixed``: the mixed load of benchmarks/mixed.py (64 connections, 90 % reads, 10 % PATCH, 60 s
  after a warm-up) against `serve` with 1 process, with 2, then against the single-process bare
  waitress ceiling, in rounds; CPU per request over every process; every process's VmRSS sampled
  every 5 s.

    python benchmarks/processes.py                      # all three (about 12 minutes)
    python benchmarks/processes.py --parts sockets list --rounds 3
    python benchmarks/processes.py --parts mixed -d 60 --rounds 2

Talks only to 127.0.0.1, cleans up its temporary folder and stops every process it started.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mixed  # noqa: E402
import registry  # noqa: E402
from _common import backend_settings, free_port, proc_status, run_in_tempdir, seed_bench_store, table  # noqa: E402
from _common import write_config  # noqa: E402

from xpresso_env.config import ENV_PREFIX, ServerSettings  # noqa: E402

HELLO = b'{"hello": "world"}'


# -- part 1: one inherited socket or SO_REUSEPORT -------------------------------------------------

def socket_child(mode: str, port: int, fd: int) -> None:
    """A serving process of the sockets part: the hello app until SIGTERM, then the drain."""
    from xpresso_env.http.server import create_server, quiet_queue_warnings, serve_until_stopped

    quiet_queue_warnings()
    sock = socket.socket(fileno=fd) if fd >= 0 else _reuseport_socket(port)

    answered = [0]

    def app(environ, start_response):
        answered[0] += 1  # one thread at a time adds under the GIL often enough for a share
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(HELLO)))])
        return [HELLO]

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = create_server(app, ServerSettings(host="127.0.0.1", port=port), sock)
    print("ready", flush=True)
    serve_until_stopped(server, stop.is_set, 10.0)
    server.close()
    print(f"answered {answered[0]}", flush=True)


def _reuseport_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class SocketGroup:
    """The serving processes of one mode:

    * shared: one socket bound here once, inherited by every process;
    * reuseport: each process binds its own socket with SO_REUSEPORT;
    * slots: one SO_REUSEPORT socket per process slot, bound and held here; the process of slot k,
      and on a reload its successor, inherits socket k.
    """

    def __init__(self, mode: str, slots: int = 2):
        self.mode = mode
        self.port = free_port()
        self.socks: list[socket.socket] = []
        if mode == "shared":
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(1024)
            sock.set_inheritable(True)
            self.socks = [sock] * slots
        elif mode == "slots":
            self.socks = [_reuseport_socket(self.port) for _ in range(slots)]
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int) -> list[subprocess.Popen]:
        new = []
        for k in range(n):
            fd = self.socks[k].fileno() if self.socks else -1
            new.append(subprocess.Popen([sys.executable, __file__, "--socket-child", self.mode, str(self.port),
                                         str(fd)], stdout=subprocess.PIPE, text=True,
                                        pass_fds=(fd,) if fd >= 0 else ()))
        for p in new:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a socket child did not start")
        self.procs += new
        return new

    def retire(self, procs: list[subprocess.Popen]) -> list[int]:
        """Stop ``procs``; the requests each answered."""
        for p in procs:
            p.send_signal(signal.SIGTERM)
        answered = []
        for p in procs:
            out = p.stdout.read()
            p.wait(30)
            answered.append(int((re.search(r"answered (\d+)", out) or [0, 0])[1]))
            self.procs.remove(p)
        return answered

    def stop(self) -> None:
        self.retire(list(self.procs))
        for sock in set(self.socks):
            sock.close()


def plain_wrk(port: int, duration: int, connections: int, threads: int) -> dict:
    """wrk without a script: requests/s, socket errors, non-2xx; and wrk's own CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "5s",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=duration + 60).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    wrk_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"rps": rps, "errors": errors, "non2xx": non2xx, "wrk_core": wrk_cpu / duration, "out": out}


def sockets_part(args) -> None:
    print("== sockets: a bare app in 2 processes, one inherited socket against SO_REUSEPORT", flush=True)
    modes = ("shared", "reuseport", "slots")
    rows, found = [], {m: [] for m in modes}
    for rnd in range(1, args.rounds + 1):
        for mode in modes:
            group = SocketGroup(mode)
            try:
                group.start(2)
                plain_wrk(group.port, 2, args.connections, args.wrk_threads)  # warm-up
                first = list(group.procs)
                group.start(2)
                group.retire(first)  # fresh processes: their counts are the steady run's alone
                steady = plain_wrk(group.port, args.duration, args.connections, args.wrk_threads)
                old = list(group.procs)
                group.start(2)
                counts = group.retire(old)
                steady["busiest"] = max(counts) / max(1, sum(counts))
                result: dict = {}
                reload_s = max(6, args.duration)
                runner = threading.Thread(target=lambda: result.update(
                    plain_wrk(group.port, reload_s, args.connections, args.wrk_threads)))
                runner.start()
                for _ in range(2):  # two reloads during the run: new processes first, then the old drain
                    time.sleep(reload_s / 3)
                    old = list(group.procs)
                    group.start(2)
                    group.retire(old)
                runner.join()
            finally:
                group.stop()
            found[mode].append((steady, result))
            rows.append([str(rnd), mode, f"{steady['rps']:,.0f}", f"{100 * steady['busiest']:.0f} %",
                         f"{steady['errors'] + steady['non2xx']}",
                         f"{result['rps']:,.0f}", f"{result['errors']}", f"{result['non2xx']}",
                         f"{steady['wrk_core']:.2f}"])
            print(f"  round {rnd} {mode}: {steady['rps']:,.0f} req/s, {100 * steady['busiest']:.0f} % of them "
                  f"answered by the busiest process; across 2 reloads {result['errors']} socket "
                  f"errors, {result['non2xx']} non-2xx; load average {os.getloadavg()[0]:.2f}", flush=True)
    print(table(rows, ["round", "mode", "req/s", "busiest process", "errors", "req/s (reloads)",
                       "socket errors (reloads)", "non-2xx (reloads)", "wrk cores"]))
    for mode in ("shared", "reuseport"):
        ratios = [s[0]["rps"] / r[0]["rps"] for s, r in zip(found["slots"], found[mode])]
        print(f"req/s slots / {mode}, median of paired ratios: {statistics.median(ratios):.2f} "
              f"({', '.join(f'{x:.2f}' for x in ratios)})")


# -- the real service --------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def family(pid: int) -> list[int]:
    return [pid, *children(pid)]


def cpu_of(pids: list[int]) -> float:
    return sum(registry.cpu_seconds(p) for p in pids)


def wait_serving(port: int, processes: int, limit_s: float = 120.0) -> None:
    if processes == 1:
        return
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            _, _, body = registry.get(port, "/api/v2/health", {})
            if json.loads(body)["processes"]["serving"] == processes:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{processes} processes not serving after {limit_s:.0f} s")


def start_service(tmp: Path, servers: list, store: Path, processes: int, threads: int,
                  access_log: bool) -> registry.Server:
    """A fresh `serve` on a fresh copy of the seeded store, probes off."""
    port = free_port()
    folder = tmp / f"store-{port}"
    folder.mkdir()
    for f in store.glob("xpresso.sqlite3*"):
        shutil.copy2(f, folder / f.name)
    s = backend_settings(folder, "sqlite", host="127.0.0.1", port=port, threads=threads, access_log=access_log)
    config = write_config(folder / "config.yaml", s)
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({f"{ENV_PREFIX}PROBES_ENABLED": "false", f"{ENV_PREFIX}SERVER_PROCESSES": str(processes)})
    server = registry.Server(registry.serve_command(config), port, tmp / f"serve-{port}.log", env=env)
    servers.append(server)
    wait_serving(port, processes)
    return server


def list_part(args, tmp: Path, servers: list) -> None:
    print("== list: GET /api/v2/harnesses, serve with 1 process and with 2", flush=True)
    store = tmp / "list-store"
    store.mkdir()
    settings = backend_settings(store, "sqlite", host="127.0.0.1", port=free_port(), threads=args.threads,
                                access_log=False)
    seeded, token = seed_bench_store(settings, 200, 50, "member")
    script = registry.write_lua(tmp, "list", token, seeded, args.wrk_threads)
    rows, ratios, cpu_ratios = [], [], []
    for rnd in range(1, args.rounds + 1):
        got = {}
        for n in (1, 2):
            server = start_service(tmp, servers, store, n, args.threads, access_log=args.access_log == "on")
            pids = family(server.pid)
            registry.run_wrk("warm-up", server.port, script, 2, args.connections, args.wrk_threads)
            cpu0, wrk0 = cpu_of(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
            r = registry.run_wrk(f"{n} process(es)", server.port, script, args.duration, args.connections,
                                 args.wrk_threads)
            cpu, wrk1 = cpu_of(pids) - cpu0, resource.getrusage(resource.RUSAGE_CHILDREN)
            wrk_core = ((wrk1.ru_utime + wrk1.ru_stime) - (wrk0.ru_utime + wrk0.ru_stime)) / args.duration
            server.stop()
            servers.remove(server)
            got[n] = (r, 1e6 * cpu / r.requests, wrk_core)
            rows.append([str(rnd), str(n), f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
                         f"{r.errors + r.non2xx}", f"{1e6 * cpu / r.requests:.0f}", f"{wrk_core:.2f}"])
            print(f"  round {rnd}, {n} process(es): {r.rps:,.0f} req/s, p99 {r.p99_ms:.1f} ms, "
                  f"{1e6 * cpu / r.requests:.0f} us CPU a request, wrk {wrk_core:.2f} of a core; "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
        ratios.append(got[2][0].rps / got[1][0].rps)
        cpu_ratios.append(got[2][1] / got[1][1])
    print(table(rows, ["round", "processes", "req/s", "p50 ms", "p99 ms", "errors", "CPU us/req", "wrk cores"]))
    print(f"req/s 2 processes / 1, median of paired ratios: {statistics.median(ratios):.2f} "
          f"({', '.join(f'{x:.2f}' for x in ratios)}); target >= 1.4")
    print(f"CPU per request 2 processes / 1, median of paired ratios: {statistics.median(cpu_ratios):.2f} "
          f"({', '.join(f'{x:.2f}' for x in cpu_ratios)})")


class RssSampler(threading.Thread):
    """VmRSS of every process of a server every 5 s."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: dict[int, list[tuple[float, int]]] = {p: [] for p in pids}
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while True:
            for p in self.pids:
                try:
                    self.samples[p].append((time.monotonic() - t0, proc_status(p)["VmRSS"]))
                except OSError:
                    pass
            if self.stop.wait(mixed.SAMPLE_EVERY_S):
                return


def _mixed_serve(args, tmp: Path, servers: list, store: Path, processes: int, script: Path,
                 captured: dict, token: str, seeded) -> tuple:
    """One measured mixed run against `serve` with ``processes``: (result, CPU us a request, RSS lines)."""
    server = start_service(tmp, servers, store, processes, args.threads, access_log=True)
    if not captured:  # the ceiling answers the bytes the service answered
        captured.update(mixed._check_answers(server.port, token, seeded, 200))
        for name, body in captured.items():
            (tmp / f"{name}.body").write_bytes(body)
    pids = family(server.pid)
    mixed.run_wrk("warm-up", server.port, script, args.warmup, 64, args.wrk_threads)
    sampler = RssSampler(pids)
    sampler.start()
    cpu0 = cpu_of(pids)
    offset = server.log.stat().st_size
    result = mixed.run_wrk(f"serve, {processes} process(es)", server.port, script, args.mixed_duration, 64,
                           args.wrk_threads)
    cpu = cpu_of(pids) - cpu0
    print(f"    {processes} process(es), {mixed.in_server_times(server.log, offset)}", flush=True)
    sampler.stop.set()
    sampler.join()
    server.stop()
    servers.remove(server)
    growth = []
    for pid, series in sampler.samples.items():
        if len(series) > 1:
            later = [kb for t, kb in series if t >= args.mixed_duration * 2 / 3] or [series[-1][1]]
            growth.append(f"{pid}: {series[0][1] / 1024:.1f} -> {max(later) / 1024:.1f} MB "
                          f"({(max(later) - series[0][1]) / 1024:+.1f})")
    return result, 1e6 * cpu / result.requests, growth


def mixed_part(args, tmp: Path, servers: list) -> None:
    print("== mixed: 64 connections, 90 % reads, 10 % PATCH; serve with 1 process, with 2, and the "
          "single-process bare waitress ceiling", flush=True)
    store = tmp / "mixed-store"
    store.mkdir()
    settings = backend_settings(store, "sqlite", host="127.0.0.1", port=free_port(), threads=args.threads,
                                access_log=True)
    seeded, token = seed_bench_store(settings, 50, 200, "privilege_member")
    script = mixed.write_lua(tmp / "mixed.lua", token, seeded, 0.10, 0.5)
    captured: dict = {}
    rows, p99s = [], []
    for rnd in range(1, args.rounds + 1):
        got = {n: _mixed_serve(args, tmp, servers, store, n, script, captured, token, seeded)
               for n in args.mixed_processes}
        port = free_port()
        ceiling_settings = backend_settings(tmp, "sqlite", host="127.0.0.1", port=port, threads=args.threads)
        ceiling_config = write_config(tmp / f"ceiling-{port}.yaml", ceiling_settings)
        ceiling = registry.Server([sys.executable, str(Path(mixed.__file__).resolve()), "--ceiling-server",
                                   str(ceiling_config), str(tmp)], port, tmp / "ceiling.log",
                                  env={k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)})
        servers.append(ceiling)
        mixed.run_wrk("warm-up", port, script, args.warmup, 64, args.wrk_threads)
        top = mixed.run_wrk("ceiling", port, script, args.mixed_duration, 64, args.wrk_threads)
        ceiling.stop()
        servers.remove(ceiling)
        p99s.append({n: got[n][0].p99_ms / top.p99_ms for n in got})
        row = [str(rnd)]
        for n in args.mixed_processes:
            r, cpu_us, growth = got[n]
            row += [f"{r.rps:,.0f}", f"{r.p99_ms:.1f}", f"{r.errors + r.non2xx}", f"{cpu_us:.0f}"]
            print(f"  round {rnd}, {n} process(es): {r.rps:,.0f} req/s p99 {r.p99_ms:.1f} ms, {r.errors} errors, "
                  f"{r.non2xx} non-2xx, {cpu_us:.0f} us CPU a request", flush=True)
            print("    VmRSS (supervisor first with 2), first sample after warm-up -> peak of the last third: "
                  + "; ".join(growth), flush=True)
        row += [f"{top.rps:,.0f}", f"{top.p99_ms:.1f}", f"{top.errors + top.non2xx}"]
        rows.append(row)
        print(f"  round {rnd}, ceiling: {top.rps:,.0f} req/s p99 {top.p99_ms:.1f} ms; load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
    header = ["round"]
    for n in args.mixed_processes:
        header += [f"{n} proc req/s", "p99 ms", "errors", "CPU us/req"]
    print(table(rows, header + ["ceiling req/s", "p99 ms", "errors"]))
    for n in args.mixed_processes:
        print(f"p99 {n} process(es) / ceiling per round: " + ", ".join(f"{r[n]:.2f}" for r in p99s))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=("sockets", "list", "mixed"), default=["sockets", "list", "mixed"])
    p.add_argument("-d", "--duration", type=int, default=8, help="seconds per wrk run of sockets and list (8)")
    p.add_argument("--mixed-duration", type=int, default=60, help="seconds of each mixed run (60)")
    p.add_argument("--warmup", type=int, default=5, help="seconds of mixed warm-up (5)")
    p.add_argument("--mixed-processes", type=int, nargs="+", default=[1, 2],
                   help="the serve variants of the mixed part, by processes (1 2)")
    p.add_argument("--rounds", type=int, default=2, help="pairs of runs in each part (2)")
    p.add_argument("-c", "--connections", type=int, default=16, help="wrk connections of sockets and list (16)")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--threads", type=int, default=ServerSettings.threads,
                   help="server.threads: shared among the serving processes; the ceiling runs them all")
    p.add_argument("--access-log", choices=("on", "off"), default="off", help="in the list part (off)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--socket-child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.socket_child:
        mode, port, fd = args.socket_child
        socket_child(mode, int(port), int(fd))
        return 0
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    print(f"{os.cpu_count()} CPUs shared by wrk and the servers (and whatever else runs: load average "
          f"{os.getloadavg()[0]:.2f})", flush=True)

    def run(tmp: Path, servers: list) -> int:
        if "sockets" in args.parts:
            sockets_part(args)
        if "list" in args.parts:
            list_part(args, tmp, servers)
        if "mixed" in args.parts:
            mixed_part(args, tmp, servers)
        return 0

    return run_in_tempdir("xpresso-bench-processes-", args.keep, run)


if __name__ == "__main__":
    sys.exit(main())
