#!/usr/bin/env python3
"""Mixed-load benchmark of the harness registry (issue 7, "Speed", mixed load).

Seeds 10,000 harnesses as 50 groups of 200 into a fresh SQLite store in a temporary folder, makes a
user who is privilege_member in every group and a token, starts the real `xpresso-env serve` on
127.0.0.1 (the default configuration: access log on, 8 threads) and drives it with wrk, 64
connections for 60 s, through one generated Lua script:

* 90 % reads, half ``GET /api/v2/harnesses`` (a group's 200 records; each request names the next
  group) and half ``GET /api/v2/harnesses/{id}`` (cycling over all ids, each with its own group),
* 10 % writes, ``PATCH /api/v2/harnesses/{id}`` with ``{"site": ...}`` on ids spread over every
  group: PATCH, never POST, so each group keeps its 200 records for the whole run.

wrk's ``response()`` counts every answer outside 2xx by status. The server's VmRSS is sampled
every 5 s during the measured run (after an unmeasured warm-up of the same mix). Then the ceiling:
a bare WSGI app on waitress, created with the same options and threads as `xpresso-env serve`,
answering the bytes the service answered (a list, an item, and the PATCH answer with 200), under
the same script and connections. Prints requests/s, p50/p99/max latency, socket errors, non-2xx
answers by status, the RSS series, and whether the targets are met: 0 errors, p99 < 150 ms, RSS
flat after warm-up (growth from the first sample after warm-up to the last third's peak under
RSS_FLAT_MB).

    python benchmarks/mixed.py                        # the full run (about 2.5 minutes)
    python benchmarks/mixed.py -d 5 --warmup 1        # a quick look
    python benchmarks/mixed.py --access-log off --write-share 0.2

Talks only to 127.0.0.1, cleans up its temporary folder and stops every process it started.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Seeded,
    backend_settings,
    free_port,
    percentile,
    proc_status,
    run_in_tempdir,
    seed_bench_store,
    table,
    write_config,
)
from registry import Result as WrkResult  # noqa: E402
from registry import Server, lua_str, serve_command, wait_for_first_probe_round

from xpresso_env.config import ENV_PREFIX, ServerSettings, load_settings  # noqa: E402
from xpresso_env.http.server import quiet_queue_warnings, waitress_options  # noqa: E402

LIST_PATH = "/api/v2/harnesses"
MARK = "XPRESSO-MIXED"
SITES = ("OTT", "SJC", "RTP", "BGL")
SAMPLE_EVERY_S = 5.0
# Growth of VmRSS, from the first sample after warm-up to the peak of the run's last third, still
# called flat: allocator noise plus the bounded response cache settling.
RSS_FLAT_MB = 5.0
P99_TARGET_MS = 150.0

# Each wrk thread has its own Lua state: its own counters, random stream and status tally; done()
# runs in the main state and sums the threads' tallies through thread:get().
LUA = r"""
local token = %(token)s
local write_share = %(write_share)s
local list_below = write_share + (1 - write_share) * %(list_share)s
local groups = {%(groups)s}
local items = {%(items)s}
local sites = {%(sites)s}
local threads = {}
function setup(thread)
  thread:set("offset", #threads * 7919)
  thread:set("seed", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  i = offset or 0
  w = offset or 0
  math.randomseed(seed or 1)
  sent = {list = 0, item = 0, patch = 0}
  statuses = {}
end
function request()
  local r = math.random()
  if r < write_share then
    w = w + 1
    -- a stride longer than a group: consecutive writes land in different groups
    local it = items[((w * 211) %% #items) + 1]
    sent.patch = sent.patch + 1
    return wrk.format("PATCH", "%(list_path)s/" .. it[2],
      {["Authorization"] = token, ["Group"] = it[1], ["Content-Type"] = "application/json"},
      '{"site": "' .. sites[(w %% #sites) + 1] .. '"}')
  end
  i = i + 1
  if r < list_below then
    sent.list = sent.list + 1
    return wrk.format("GET", "%(list_path)s", {["Authorization"] = token, ["Group"] = groups[(i %% #groups) + 1]})
  end
  local it = items[(i %% #items) + 1]
  sent.item = sent.item + 1
  return wrk.format("GET", "%(list_path)s/" .. it[2], {["Authorization"] = token, ["Group"] = it[1]})
end
function response(status, headers, body)
  if status < 200 or status > 299 then
    statuses[status] = (statuses[status] or 0) + 1
  end
end
function done(summary, latency, requests)
  local non2xx, by_status = 0, {}
  local sent_all = {list = 0, item = 0, patch = 0}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses") or {}) do
      by_status[code] = (by_status[code] or 0) + n
      non2xx = non2xx + n
    end
    for kind, n in pairs(t:get("sent") or {}) do
      sent_all[kind] = sent_all[kind] + n
    end
  end
  local e = summary.errors
  io.write(string.format("%(mark)s %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.bytes, e.connect, e.read, e.write, e.status, e.timeout, non2xx,
    sent_all.list, sent_all.item, sent_all.patch))
  local parts = {}
  for code, n in pairs(by_status) do
    table.insert(parts, string.format("%%d=%%d", code, n))
  end
  io.write("%(mark)s-STATUS " .. table.concat(parts, " ") .. "\n")
end
"""


@dataclass
class Result(WrkResult):
    by_status: dict[int, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    rss_kb: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the run, VmRSS kB)


def write_lua(path: Path, token: str, seeded: Seeded, write_share: float, list_share: float) -> Path:
    groups = ",".join(lua_str(g) for g in seeded.groups)
    items = ",".join("{%s,%s}" % (lua_str(g), lua_str(i)) for g, ids in seeded.ids.items() for i in ids)
    path.write_text(LUA % {"token": lua_str(token), "write_share": repr(write_share),
                           "list_share": repr(list_share), "groups": groups, "items": items,
                           "sites": ",".join(lua_str(s) for s in SITES), "list_path": LIST_PATH,
                           "mark": MARK})
    return path


def run_wrk(label: str, port: int, script: Path, duration: int, connections: int, threads: int,
            watch_pid: Optional[int] = None) -> Result:
    """One wrk run; with ``watch_pid``, that process's VmRSS every SAMPLE_EVERY_S seconds meanwhile."""
    cmd = ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
           "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}/"]
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        next_at = 0.0
        while proc.poll() is None:
            now = time.monotonic() - started
            if watch_pid is not None and now >= next_at:
                samples.append((now, proc_status(watch_pid)["VmRSS"]))
                next_at += SAMPLE_EVERY_S
            if now > duration + 60:
                raise RuntimeError(f"{' '.join(cmd)} did not end")
            try:
                proc.wait(max(0.05, min(next_at - now, 1.0)) if watch_pid is not None else 1.0)
            except subprocess.TimeoutExpired:
                pass
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if watch_pid is not None:
        samples.append((time.monotonic() - started, proc_status(watch_pid)["VmRSS"]))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-1000:]}")
    line = next((l for l in out.splitlines() if l.startswith(MARK + " ")), None)
    status_line = next((l for l in out.splitlines() if l.startswith(MARK + "-STATUS")), MARK + "-STATUS")
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}\n{err}")
    (n, dur_us, p50, p99, mx, _bytes, conn, read, write, _status, timeout, non2xx,
     n_list, n_item, n_patch) = map(int, line.split()[1:])
    by_status = {int(c): int(k) for c, k in (p.split("=") for p in status_line.split()[1:])}
    return Result(label, n, n / (dur_us / 1e6), p50 / 1000, p99 / 1000, mx / 1000, conn + read + write + timeout,
                  non2xx, by_status=by_status, sent={"list": n_list, "item": n_item, "patch": n_patch}, rss_kb=samples)


def call(port: int, method: str, path: str, headers: dict[str, str],
         body: Optional[bytes] = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -- the ceiling: a bare WSGI app answering captured bytes -------------------------------------------
def serve_ceiling(config: str, folder: str) -> None:
    """Answers the captured list, item and PATCH bytes; waitress created exactly as `serve` does."""
    import waitress

    bodies = {name: (Path(folder) / f"{name}.body").read_bytes() for name in ("list", "item", "patch")}
    headers = {name: [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
               for name, body in bodies.items()}
    headers["list"].append(("X-Total-Count", str(len(json.loads(bodies["list"])))))

    def app(environ, start_response):
        name = ("patch" if environ["REQUEST_METHOD"] == "PATCH"
                else "list" if environ["PATH_INFO"] == LIST_PATH else "item")
        start_response("200 OK", headers[name])
        return [bodies[name]]

    quiet_queue_warnings()  # as `xpresso-env serve` does
    server = waitress.create_server(app, **waitress_options(load_settings(config, env={}).server))
    server.run()


# -- the run --------------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-d", "--duration", type=int, default=60, help="seconds of the measured run (default 60)")
    p.add_argument("-c", "--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--threads", type=int, default=ServerSettings.threads,
                   help=f"server threads, service and ceiling (default {ServerSettings.threads}, as serve)")
    p.add_argument("--groups", type=int, default=50)
    p.add_argument("--per-group", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5, help="seconds of unmeasured mixed load first (default 5)")
    p.add_argument("--write-share", type=float, default=0.10, help="share of PATCH requests (default 0.10)")
    p.add_argument("--list-share", type=float, default=0.5,
                   help="share of the reads that are lists, the rest items (default 0.5)")
    p.add_argument("--access-log", choices=("on", "off"), default="on",
                   help="the service's access log (default on: the default configuration)")
    p.add_argument("--probes", choices=("settled", "off"), default="settled",
                   help="settled (default): probing on, as by default, and the first probe round of the "
                        "10,000 new harnesses over before the load starts; off: probes.enabled false")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (prints where)")
    p.add_argument("--ceiling-server", nargs=2, metavar=("CONFIG", "FOLDER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ceiling_server:
        serve_ceiling(*args.ceiling_server)
        return 0
    if not 0 <= args.write_share <= 1 or not 0 <= args.list_share <= 1:
        p.error("--write-share and --list-share are fractions between 0 and 1")
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    return run_in_tempdir("xpresso-bench-mixed-", args.keep, lambda tmp, servers: _run(args, tmp, servers))


def _clean_env() -> dict[str, str]:
    """This environment without XPRESSO_ENV_* variables: the config file alone configures the server."""
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


def _check_answers(port: int, token: str, seeded: Seeded, per_group: int) -> dict[str, bytes]:
    """One list, one item and one PATCH, checked; their bodies (the ceiling answers them)."""
    group = seeded.groups[0]
    hid = seeded.ids[group][0]
    auth = {"Authorization": token, "Group": group}
    status, headers, body = call(port, "GET", LIST_PATH, auth)
    if status != 200 or len(json.loads(body)) != per_group:
        raise RuntimeError(f"list answered {status}: {body[:300]!r}")
    status, _, item = call(port, "GET", f"{LIST_PATH}/{hid}", auth)
    if status != 200 or json.loads(item)["id"] != hid:
        raise RuntimeError(f"retrieve answered {status}: {item[:300]!r}")
    status, _, patched = call(port, "PATCH", f"{LIST_PATH}/{hid}", {**auth, "Content-Type": "application/json"},
                              json.dumps({"site": SITES[2]}).encode())
    if status != 200 or json.loads(patched)["site"] != SITES[2]:
        raise RuntimeError(f"PATCH answered {status}: {patched[:300]!r}")
    return {"list": body, "item": item, "patch": patched}


def _group_sizes(port: int, token: str, seeded: Seeded) -> collections.Counter:
    """How many groups hold how many records (X-Total-Count of each group's list)."""
    sizes: collections.Counter = collections.Counter()
    for group in seeded.groups:
        status, headers, body = call(port, "GET", f"{LIST_PATH}?limit=1", {"Authorization": token, "Group": group})
        sizes[int(headers.get("x-total-count", -1)) if status == 200 else f"status {status}"] += 1
    return sizes


def _log_findings(log: Path, access_log: bool, top: int = 8) -> list[str]:
    """Where answers outside 2xx come from: their methods and statuses (from the access log, the
    warm-up included), waitress's queue warnings summed up, and the first other warning and error
    lines of the server's output."""
    tally: collections.Counter = collections.Counter()
    queue_warnings, deepest = 0, 0
    problems: list[str] = []
    for line in log.read_text(errors="replace").splitlines():
        access = re.search(r"xpresso_env\.access: (\S+) \S+ (\d{3}) ", line)
        queue = re.search(r"waitress\.queue: Task queue depth is (\d+)", line)
        if access:
            if not access.group(2).startswith("2"):
                tally[f"{access.group(1)} {access.group(2)}"] += 1
        elif queue:  # requests waiting for a free thread: load, not a failure
            queue_warnings += 1
            deepest = max(deepest, int(queue.group(1)))
        elif re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", line) and len(problems) < top:
            problems.append(line[:300])
    out = []
    if access_log:
        out.append("access log (warm-up included), answers outside 2xx: "
                   + (", ".join(f"{k}: {n:,}" for k, n in tally.most_common()) or "none"))
    if queue_warnings:
        out.append(f"waitress task-queue warnings: {queue_warnings:,}, deepest queue {deepest}")
    out.append(f"other warnings/errors in the server's output ({log.name}): " + ("" if problems else "none"))
    out += ["    " + p for p in problems]
    return out


def in_server_times(log: Path, offset: int = 0) -> str:
    """Each kind of request's time inside the server (from entering the app to its answer, the
    access log's figure; waitress's queue not included), from ``offset`` of the log on: where the
    tail comes from."""
    times: dict[str, list[float]] = collections.defaultdict(list)
    with open(log, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    for m in re.finditer(r"xpresso_env\.access: (\w+) /api/v2/harnesses(/\S+)? \d{3} ([\d.]+)ms", text):
        times[f"{m.group(1)} {'item' if m.group(2) else 'list'}"].append(float(m.group(3)))
    parts = []
    for kind, values in sorted(times.items()):
        parts.append(f"{kind} p50 {percentile(values, 50):.1f} ms, p90 {percentile(values, 90):.1f}, "
                     f"p99 {percentile(values, 99):.1f} ({len(values):,})")
    return "time inside the server (access log): " + ("; ".join(parts) or "no access lines")


def _rss_verdict(samples: list[tuple[float, int]], duration: int) -> tuple[bool, float, str]:
    """Flat after warm-up: the last third's peak minus the first sample (taken as the measured run
    starts, after the warm-up) stays under RSS_FLAT_MB."""
    first = samples[0][1]
    last_third = [kb for t, kb in samples if t >= duration * 2 / 3] or [samples[-1][1]]
    growth_mb = (max(last_third) - first) / 1024
    return growth_mb < RSS_FLAT_MB, growth_mb, f"{first / 1024:.1f} MB -> peak {max(last_third) / 1024:.1f} MB"


def _run(args, tmp: Path, servers: list) -> int:
    total = args.groups * args.per_group
    print(f"seeding {total:,} harnesses as {args.groups} groups of {args.per_group} into SQLite at {tmp} ...",
          flush=True)
    settings = backend_settings(tmp, "sqlite", host="127.0.0.1", port=free_port(), threads=args.threads,
                                access_log=args.access_log == "on")
    seeded, token = seed_bench_store(settings, args.groups, args.per_group, "privilege_member")

    script = write_lua(tmp / "mixed.lua", token, seeded, args.write_share, args.list_share)
    config = write_config(tmp / "config.yaml", settings)
    port = settings.server.port
    env = _clean_env()
    if args.probes == "off":
        env[f"{ENV_PREFIX}PROBES_ENABLED"] = "false"
    server = Server(serve_command(config), port, tmp / "serve.log", env=env)
    servers.append(server)
    if args.probes == "settled":  # start-up work (10,000 first probes), not the steady state measured here
        wait_for_first_probe_round(port, total)
    rss_start = proc_status(server.pid)
    captured = _check_answers(port, token, seeded, args.per_group)
    tag = f"access log {args.access_log}, probes {args.probes}"
    mix = (f"{100 * args.write_share:g} % PATCH, {100 * (1 - args.write_share) * args.list_share:g} % list, "
           f"{100 * (1 - args.write_share) * (1 - args.list_share):g} % item")
    if args.warmup:
        print(f"warm-up: {args.warmup} s of the same mix ...", flush=True)
        run_wrk("warm-up", port, script, args.warmup, args.connections, args.wrk_threads)
    print(f"xpresso-env serve ({tag}, {args.threads} threads, pid {server.pid}): wrk -c {args.connections} "
          f"-d {args.duration}s, {mix} ...", flush=True)
    offset = server.log.stat().st_size
    service = run_wrk(f"serve ({tag})", port, script, args.duration, args.connections, args.wrk_threads,
                      watch_pid=server.pid)
    rss_end = proc_status(server.pid)
    sizes = _group_sizes(port, token, seeded)
    server.stop()
    servers.remove(server)
    findings = _log_findings(server.log, args.access_log == "on")
    if args.access_log == "on":
        findings.insert(0, in_server_times(server.log, offset))

    for name, body in captured.items():
        (tmp / f"{name}.body").write_bytes(body)
    ceiling_port = free_port()
    ceiling_settings = backend_settings(tmp, "sqlite", host="127.0.0.1", port=ceiling_port, threads=args.threads)
    ceiling_config = write_config(tmp / "ceiling.yaml", ceiling_settings)
    ceiling = Server([sys.executable, str(Path(__file__).resolve()), "--ceiling-server", str(ceiling_config),
                      str(tmp)], ceiling_port, tmp / "ceiling.log", env=_clean_env())
    servers.append(ceiling)
    ceiling_rss_start = proc_status(ceiling.pid)
    if args.warmup:
        run_wrk("warm-up", ceiling_port, script, args.warmup, args.connections, args.wrk_threads)
    print(f"ceiling (bare WSGI app, waitress created as serve does, {args.threads} threads) ...", flush=True)
    top = run_wrk("ceiling", ceiling_port, script, args.duration, args.connections, args.wrk_threads,
                  watch_pid=ceiling.pid)
    ceiling.stop()
    servers.remove(ceiling)

    print()
    print(f"wrk: {args.connections} connections, {args.wrk_threads} threads, {args.duration} s after "
          f"{args.warmup} s of warm-up; {mix}; {total:,} harnesses, {args.groups} groups of {args.per_group}; "
          f"bodies: list {len(captured['list']):,} B, item {len(captured['item']):,} B; "
          f"{os.cpu_count()} CPUs shared by wrk and the server")
    rows = []
    for r, started in ((service, rss_start), (top, ceiling_rss_start)):
        rows.append([r.label, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.max_ms:.1f}",
                     f"{r.errors}", f"{r.non2xx}", f"{started['VmRSS'] / 1024:.1f}", f"{r.rss_kb[-1][1] / 1024:.1f}"])
    print(table(rows, ["server", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "non-2xx",
                       "RSS start MB", "RSS end MB"]))
    print()
    print(f"requests sent to serve: {service.sent['list']:,} list, {service.sent['item']:,} item, "
          f"{service.sent['patch']:,} PATCH (wrk counts started requests)")
    if service.by_status:
        print("serve answers outside 2xx by status: "
              + ", ".join(f"{c}: {n:,}" for c, n in sorted(service.by_status.items())))
    print("\n".join(findings))
    print("group sizes after the run (records: groups): "
          + ", ".join(f"{k}: {n}" for k, n in sorted(sizes.items(), key=str)))
    print(f"server memory: VmRSS {rss_start['VmRSS'] / 1024:.1f} MB at start, {rss_end['VmRSS'] / 1024:.1f} MB "
          f"after the run, peak (VmHWM) {rss_end['VmHWM'] / 1024:.1f} MB")
    print(f"VmRSS every {SAMPLE_EVERY_S:g} s of the measured run (MB): "
          + ", ".join(f"{t:.0f}s {kb / 1024:.1f}" for t, kb in service.rss_kb[:-1])
          + f", end {service.rss_kb[-1][1] / 1024:.1f}")
    flat, growth, span = _rss_verdict(service.rss_kb, args.duration)
    print(f"RSS after warm-up flat? {'yes' if flat else 'no'}: {growth:+.1f} MB ({span}; "
          f"flat means under {RSS_FLAT_MB:g} MB)")
    last_third = [kb for t, kb in service.rss_kb if t >= args.duration * 2 / 3]
    if len(last_third) > 1:  # still climbing at the end, or levelled off?
        print(f"  within the last third alone: {(last_third[-1] - last_third[0]) / 1024:+.1f} MB")

    checks = [
        ("0 errors (socket errors and non-2xx)", service.errors + service.non2xx == 0,
         f"{service.errors} errors, {service.non2xx} non-2xx"),
        (f"p99 < {P99_TARGET_MS:g} ms", service.p99_ms < P99_TARGET_MS,
         f"{service.p99_ms:.1f} ms (ceiling p99 at {args.connections} connections: {top.p99_ms:.1f} ms)"),
        ("RSS flat after warm-up", flat, f"{growth:+.1f} MB"),
    ]
    print()
    for name, ok, value in checks:
        print(f"  [{'met ' if ok else 'MISS'}] {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
