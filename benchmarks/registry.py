#!/usr/bin/env python3
"""HTTP benchmark of the harness registry (issues 2, 7 and 15, "Speed").

Seeds 10,000 harnesses over 200 groups into a SQLite store in a temporary folder. Each round
starts the real `xpresso-env serve` on 127.0.0.1 on a fresh copy of that store, waits for its
first probe round to end (``--probes settled``; ``--probes off`` turns probing off) and drives it
with wrk:

* ``GET /api/v2/harnesses`` (50 records a group; each request names one of the 200 groups),
* ``GET /api/v2/harnesses/{id}`` (over all 10,000 ids, each with its own group: every one a cache
  miss, see ``LUA``),

then stops it and runs the same against the ceiling: a bare WSGI app on waitress with the same
thread count that answers the exact bytes the service answered. The item reads also run against a
second bare app that first reads each record through the SQLite store's own read (one statement,
as a miss does): what that one read costs a waitress thread among the others, whatever the
service does around it. Each run also reads the server
process's CPU time (user + system, ``/proc/<pid>/stat``) before and after: CPU per request.
Prints each round, then medians of requests/s, p99 and CPU per request, the medians of the
rounds' paired ratios (service / ceiling in req/s, ceiling / service in CPU per request), the
server's resident memory, and the targets of issues 2, 7 and 15.

    python benchmarks/registry.py                       # the full run (about 3 minutes)
    python benchmarks/registry.py --access-log on --rounds 2   # a quicker one
    python benchmarks/registry.py --profile             # + where the time goes (cProfile, in-process)

Talks only to 127.0.0.1, cleans up its temporary folder and stops every process it started.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Seeded,
    backend_settings,
    free_port,
    proc_status,
    run_in_tempdir,
    seed_bench_store,
    table,
    wait_for_port,
    write_config,
)

LIST_PATH = "/api/v2/harnesses"
MARK = "XPRESSO-BENCH"

# One wrk Lua script for both scenarios. List: each wrk thread starts at a different point of the
# group list. Item: each wrk thread walks its own slice of the ids, and every pass over the slice
# spells the Authorization header differently (`Jwt`, then more spaces before the token: the same
# token; each run against one server starts at its own spelling, the wrk argument), so every
# request is a cache miss however fast the server answers (a repeated (path, header) would be a
# hit). Each pass authenticates once per group afresh (the memo is per header value): one request
# in 50.
LUA = r"""
local token = %(token)s
local bare = %(bare)s
local mode = %(mode)s
local threads = %(threads)d
local groups = {%(groups)s}
local items = {%(items)s}
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  i = 0
  n = tid or 0
  per = math.floor(#items / threads)
  first = 1 + 100 * tonumber(args[1] or "0")
end
function request()
  i = i + 1
  if mode == "list" then
    local g = groups[((i + n * 7919) %% #groups) + 1]
    return wrk.format("GET", "%(list_path)s", {["Authorization"] = token, ["Group"] = g})
  end
  local k = i %% per
  local pass = math.floor(i / per)
  local it = items[n * per + k + 1]
  local auth = "Jwt" .. string.rep(" ", first + pass) .. bare
  return wrk.format("GET", "%(list_path)s/" .. it[2], {["Authorization"] = auth, ["Group"] = it[1]})
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("%(mark)s %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.bytes, e.connect, e.read, e.write, e.status, e.timeout))
end
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


@dataclass
class Result:
    label: str
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    non2xx: int
    cpu_us: float = float("nan")  # server CPU (user + system) per request answered, microseconds

    def row(self, ceiling: Optional["Result"]) -> list[str]:
        ratio = f"{100 * self.rps / ceiling.rps:.0f} %" if ceiling and ceiling.rps else "-"
        return [self.label, f"{self.rps:,.0f}", f"{self.p50_ms:.2f}", f"{self.p99_ms:.2f}", f"{self.max_ms:.1f}",
                ratio, f"{self.errors + self.non2xx}"]


def lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid Lua string for these characters


def write_lua(folder: Path, mode: str, token: str, seeded: Seeded, threads: int) -> Path:
    groups = ",".join(lua_str(g) for g in seeded.groups)
    items = ",".join("{%s,%s}" % (lua_str(g), lua_str(i)) for g, ids in seeded.ids.items() for i in ids)
    path = folder / f"{mode}.lua"
    path.write_text(LUA % {"token": lua_str(token), "bare": lua_str(token.split()[-1]), "mode": lua_str(mode),
                           "threads": threads, "groups": groups, "items": items, "list_path": LIST_PATH,
                           "mark": MARK})
    return path


def run_wrk(label: str, port: int, script: Path, duration: int, connections: int, threads: int,
            pid: Optional[int] = None, run: int = 0) -> Result:
    """One wrk run; with ``pid``, the server's CPU per request over it (read before and after).
    ``run``: the how-manieth run against this server (item reads start at a new spelling)."""
    cmd = ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
           "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}/", "--", str(run)]
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    cpu = cpu_seconds(pid) - cpu_before if pid is not None else float("nan")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    out = done.stdout
    line = next((l for l in out.splitlines() if l.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    n, dur_us, p50, p99, mx, _bytes, conn, read, write, status, timeout = map(int, line.split()[1:])
    return Result(label, n, n / (dur_us / 1e6), p50 / 1000, p99 / 1000, mx / 1000, conn + read + write + timeout, status,
                  cpu_us=1e6 * cpu / n if n else float("nan"))


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Server:
    """A child process listening on 127.0.0.1:port, stopped with SIGINT (waitress's clean exit)."""

    def __init__(self, cmd: list[str], port: int, log: Path, env: Optional[dict] = None):
        self.port = port
        self.log = log
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        try:
            wait_for_port(port, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"server did not start; its output:\n{log.read_text()[-3000:]}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._fh.close()


def wait_for_first_probe_round(port: int, total: int, limit_s: float = 180.0) -> None:
    """Wait until every harness has left UNKNOWN: the first probe round of a new server writes
    each record's state change (and history row) once, which is start-up work, not the steady
    state these figures are about. Read from the server's own /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    started = time.monotonic()
    unknown = total
    while time.monotonic() - started < limit_s:
        _, _, body = get(port, "/metrics", {})
        unknown = sum(int(s.value) for f in text_string_to_metric_families(body.decode())
                      if f.name == "xpresso_operational_state" for s in f.samples
                      if s.labels.get("kind") == "harness" and s.labels.get("state") == "UNKNOWN")
        if unknown == 0:
            print(f"  first probe round settled after {time.monotonic() - started:.0f} s", flush=True)
            return
        time.sleep(1.0)
    raise RuntimeError(f"{unknown:,} harnesses still UNKNOWN after {limit_s:.0f} s of probing")


def serve_command(config: Path, override: Optional[str] = None) -> list[str]:
    if override:  # e.g. another WSGI server in front of xpresso_env.app:make_app()
        import shlex

        return [a.replace("{config}", str(config)) for a in shlex.split(override)]
    exe = shutil.which("xpresso-env")
    base = [exe] if exe else [sys.executable, "-m", "xpresso_env.cli"]
    return base + ["--config", str(config), "serve"]


# -- the ceiling: a bare WSGI app answering captured bytes -------------------------------------------
def serve_ceiling(port: int, threads: int, list_file: str, item_file: str, store: Optional[str] = None) -> None:
    """The bare app. With ``store`` (a SQLite file), each read by id first reads its record through
    the SQLite store's own read (one statement, its visible groups, the body decoded), as a miss
    must: what that read alone costs a waitress thread, beside the threads of the other requests."""
    import waitress

    list_body, item_body = Path(list_file).read_bytes(), Path(item_file).read_bytes()
    read_record = _store_read(Path(store)) if store else None
    list_headers = [("Content-Type", "application/json"), ("Content-Length", str(len(list_body))),
                    ("X-Total-Count", "50")]
    item_headers = [("Content-Type", "application/json"), ("Content-Length", str(len(item_body)))]

    def app(environ, start_response):
        if environ["PATH_INFO"] == LIST_PATH:
            start_response("200 OK", list_headers)
            return [list_body]
        if read_record is not None and read_record(environ["PATH_INFO"].rpartition("/")[2]) is None:
            start_response("404 Not Found", [("Content-Length", "0")])
            return []
        start_response("200 OK", item_headers)
        return [item_body]

    import dataclasses

    from xpresso_env.config import ServerSettings
    from xpresso_env.http.server import quiet_queue_warnings, waitress_options

    quiet_queue_warnings()  # as `xpresso-env serve` does
    # The same waitress options as `xpresso-env serve`.
    server = dataclasses.replace(ServerSettings(), host="127.0.0.1", port=port, threads=threads)
    waitress.serve(app, _quiet=True, **waitress_options(server))


def _store_read(path: Path):
    from xpresso_env_plugins.storage_sqlite import SQLiteStorage

    storage = SQLiteStorage(path)

    def read_record(record_id: str):
        with storage.read() as tx:
            tx.one_statement_left()  # as the service's read of a record by id (ReadScope, one_statement)
            return tx.get("harness", record_id)

    return read_record


# -- sampling profile of the running server (py-spy) ----------------------------------------------------
def spy_start(pid: int, seconds: int, out: Path, gil: bool) -> Optional[subprocess.Popen]:
    exe = shutil.which("py-spy")
    if exe is None:
        print("  (py-spy is not installed: pip install py-spy)", flush=True)
        return None
    cmd = [exe, "record", "--pid", str(pid), "-d", str(seconds), "-r", "250", "--format", "raw", "-o", str(out),
           "--nonblocking"] + (["--gil"] if gil else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def spy_report(proc: Optional[subprocess.Popen], out: Path, title: str, top: int = 18) -> None:
    """Self and inclusive shares per function from py-spy's collapsed stacks."""
    if proc is None:
        return
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    if not out.exists():
        print(f"  py-spy wrote nothing: {proc.stderr.read().decode(errors='replace')[-500:]}")
        return
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        total += int(n)
        own[frames[-1]] = own.get(frames[-1], 0) + int(n)
        for f in set(frames):
            incl[f] = incl.get(f, 0) + int(n)
    if not total:
        return
    print(f"\n=== py-spy, {title}: {total:,} samples ===")
    print("  self time:")
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * n / total:5.1f} %  {f}")
    print("  inclusive (xpresso_env, plugins and the storage driver only):")
    ours = [(f, n) for f, n in incl.items() if re.search(r"xpresso_env/|plugins/|sqlite|psycopg", f)]
    for f, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * n / total:5.1f} %  {f}")


# -- in-process profile ---------------------------------------------------------------------------------
def profile_app(settings, token: str, seeded: Seeded, n: int = 2000) -> None:
    """cProfile of the app `serve` runs (``create_wsgi_app``: the edge, the cache's frontend, falcon)
    called directly (no socket, no waitress): where a request's time goes. Item reads are misses,
    each with a new spelling of the Authorization header (as in ``LUA``)."""
    import cProfile
    import io
    import pstats

    from falcon.testing import create_environ

    from xpresso_env.app import build_context, create_wsgi_app

    ctx = build_context(settings, images=False)
    app = create_wsgi_app(ctx)
    groups = seeded.groups
    items = [(g, i) for g in groups for i in seeded.ids[g]]
    bare = token.split()[-1]

    def call(path: str, authorization: str, group: str) -> None:
        env = create_environ(path=path, headers={"Authorization": authorization, "Group": group})
        out = []
        body = app(env, lambda status, headers, exc_info=None: out.append(status))
        b"".join(body)
        assert out[0].startswith("200"), out

    def item(i: int) -> tuple[str, str, str]:
        group, record_id = items[i % len(items)]
        return f"{LIST_PATH}/{record_id}", "Jwt" + " " * (1 + i // len(items)) + bare, group

    for label, make in (("list (hits)", lambda i: (LIST_PATH, token, groups[i % len(groups)])),
                        ("item (misses)", item)):
        for i in range(200):
            call(*make(i))
        t0 = time.perf_counter()
        for i in range(200, 200 + n):
            call(*make(i))
        per = (time.perf_counter() - t0) / n
        prof = cProfile.Profile()
        prof.enable()
        for i in range(200 + n, 200 + 2 * n):
            call(*make(i))
        prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(22)
        print(f"\n=== in-process {label}: {per * 1e6:.0f} us per request, one thread, no waitress "
              f"(=> at most {1 / per:,.0f} req/s under the GIL) ===")
        lines = buf.getvalue().splitlines()
        start = next((i for i, l in enumerate(lines) if l.strip().startswith("ncalls")), 0)
        print("\n".join(l for l in lines[start:] if l.strip()))
    ctx.close()


# -- the run --------------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-d", "--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of service and ceiling runs, a fresh server each (default 3)")
    p.add_argument("-c", "--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--threads", type=int, default=8, help="waitress threads, service and ceiling (default 8)")
    p.add_argument("--groups", type=int, default=200)
    p.add_argument("--per-group", type=int, default=50)
    p.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first (default 2)")
    p.add_argument("--probes", choices=("settled", "off"), default="settled",
                   help="settled (default): probes on, as configured by default, measured once the first "
                        "probe round has set every record's state; off: probes.enabled false")
    p.add_argument("--access-log", choices=("off", "on", "both"), default="both",
                   help="measure with the access log off (the figure), on, or both (default)")
    p.add_argument("--profile", action="store_true", help="also profile the app in-process with cProfile")
    p.add_argument("--py-spy", action="store_true",
                   help="sample the server with py-spy during extra list and item runs (all threads, then "
                        "--gil holders)")
    p.add_argument("--serve-command", metavar="CMD",
                   help="run this instead of `xpresso-env --config {config} serve` ({config} is replaced; "
                        "it must listen on the configured 127.0.0.1 port)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (prints where)")
    p.add_argument("--ceiling-server", nargs="+", help=argparse.SUPPRESS)  # PORT THREADS LIST ITEM [STORE]
    args = p.parse_args(argv)
    if args.ceiling_server:
        port, threads, list_file, item_file, *store = args.ceiling_server
        serve_ceiling(int(port), int(threads), list_file, item_file, *store)
        return 0
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    return run_in_tempdir("xpresso-bench-registry-", args.keep, lambda tmp, servers: _run(args, tmp, servers))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _start_ceiling(args, tmp: Path, servers: list, name: str, store: Optional[Path] = None) -> Server:
    """The bare app (``serve_ceiling``) on the captured bodies; with ``store``, reading each item
    through it first."""
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--ceiling-server", str(port), str(args.threads),
            str(tmp / "list.body"), str(tmp / "item.body")] + ([str(store)] if store else [])
    server = Server(argv, port, tmp / f"{name}.log")
    servers.append(server)
    return server


def _start_service(args, tmp: Path, servers: list, access_log: bool, total: int) -> Server:
    """A fresh server on a fresh copy of the seeded store: its response cache is empty (every item
    request misses), and its first probe round is over before the runs, as on a server that has
    been up for a while (on a store another server probed, every record that fell due since would
    be probed at once, during the runs)."""
    port = free_port()
    folder = tmp / f"store-{port}"
    folder.mkdir()
    for f in tmp.glob("xpresso.sqlite3*"):
        shutil.copy2(f, folder / f.name)
    s = backend_settings(folder, "sqlite", host="127.0.0.1", port=port, threads=args.threads, access_log=access_log)
    config = write_config(folder / "config.yaml", s)
    env = {**os.environ, "XPRESSO_ENV_LOG_LEVEL": "INFO"}
    env.pop("XPRESSO_ENV_CONFIG", None)
    env["XPRESSO_ENV_PROBES_ENABLED"] = "false" if args.probes == "off" else "true"
    server = Server(serve_command(config, args.serve_command), port, tmp / f"serve-{port}.log", env=env)
    servers.append(server)
    if args.probes == "settled":
        wait_for_first_probe_round(port, total)
    return server


def cache_answers(port: int) -> dict[str, float]:
    """The response cache's answers so far by result (hit, miss, bypass), from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    _, _, body = get(port, "/metrics", {})
    return {s.labels["result"]: s.value for f in text_string_to_metric_families(body.decode())
            if f.name == "xpresso_response_cache_requests" for s in f.samples if s.name.endswith("_total")}


def _check_answers(port: int, token: str, seeded: Seeded, per_group: int) -> tuple[bytes, bytes]:
    first = seeded.groups[0]
    status, headers, body = get(port, LIST_PATH, {"Authorization": token, "Group": first})
    if status != 200 or len(json.loads(body)) != per_group:
        raise RuntimeError(f"list answered {status}: {body[:300]!r}")
    item_id = seeded.ids[first][0]
    status, _, item = get(port, f"{LIST_PATH}/{item_id}", {"Authorization": token, "Group": first})
    if status != 200 or json.loads(item)["id"] != item_id:
        raise RuntimeError(f"retrieve answered {status}: {item[:300]!r}")
    return body, item


def _run(args, tmp: Path, servers: list) -> int:
    total = args.groups * args.per_group
    print(f"seeding {total:,} harnesses over {args.groups} groups into SQLite at {tmp} ...", flush=True)
    settings = backend_settings(tmp, "sqlite", host="127.0.0.1", port=free_port(), threads=args.threads,
                                access_log=False)
    seeded, token = seed_bench_store(settings, args.groups, args.per_group, "member")

    scripts = {m: write_lua(tmp, m, token, seeded, args.wrk_threads) for m in ("list", "item")}
    labels = {"list": f"GET {LIST_PATH}", "item": f"GET {LIST_PATH}/{{id}}"}
    pairs: dict[tuple[str, str], list[tuple[Result, Result]]] = {}
    rss: dict[str, dict[str, int]] = {}
    ceiling: Optional[Server] = None
    read_ceiling: Optional[Server] = None  # the ceiling that reads each item's record from the store first
    reads: list[tuple[Result, Result, Result]] = []  # each round's item runs: service, ceiling, read_ceiling

    modes = {"off": [False], "on": [True], "both": [False, True]}[args.access_log]
    for access_log in modes:
        tag = "access log on" if access_log else "access log off"
        for rnd in range(1, args.rounds + 1):
            server = _start_service(args, tmp, servers, access_log, total)
            if rnd == 1:
                rss[f"start ({tag})"] = proc_status(server.pid)
            list_body, item_body = _check_answers(server.port, token, seeded, args.per_group)
            if ceiling is None:  # the same bytes from a bare app, started once, measured while no service runs
                (tmp / "list.body").write_bytes(list_body)
                (tmp / "item.body").write_bytes(item_body)
                ceiling = _start_ceiling(args, tmp, servers, "ceiling")
                read_ceiling = _start_ceiling(args, tmp, servers, "read-ceiling", tmp / "xpresso.sqlite3")
                if args.warmup:
                    run_wrk("warm-up", ceiling.port, scripts["list"], args.warmup, args.connections,
                            args.wrk_threads)
            if args.warmup:
                run_wrk("warm-up", server.port, scripts["list"], args.warmup, args.connections, args.wrk_threads)
            served = {}
            for mode in ("list", "item"):
                before = cache_answers(server.port)
                served[mode] = run_wrk(f"{labels[mode]}  [serve, {tag}]", server.port, scripts[mode], args.duration,
                                       args.connections, args.wrk_threads, pid=server.pid)
                after = cache_answers(server.port)
                counted = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                print(f"  round {rnd}, {tag}, {mode}: the response cache answered "
                      + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(counted.items()) if v), flush=True)
            if args.py_spy and rnd == 1:
                for n, (mode, gil) in enumerate((("list", False), ("list", True), ("item", False), ("item", True))):
                    raw = tmp / f"py-spy-{mode}-{'gil' if gil else 'all'}.txt"
                    spy = spy_start(server.pid, args.duration, raw, gil)
                    run_wrk("profiled", server.port, scripts[mode], args.duration, args.connections,
                            args.wrk_threads, run=n + 1)
                    spy_report(spy, raw, f"{mode}, {tag}, {'threads holding the GIL' if gil else 'all busy threads'}")
            if rnd == args.rounds:
                rss[f"after the runs ({tag})"] = proc_status(server.pid)
            if access_log:
                lines = sum(1 for l in server.log.read_text(errors="replace").splitlines()
                            if re.search(r"GET /api/v2/harnesses\S* 200 ", l))
                print(f"  the access log holds {lines:,} request lines", flush=True)
            # Stopped before the ceiling's runs: the ceiling is a bare app on an otherwise idle machine,
            # as it always was (beside a server that probes it ran 1.4x faster: benchmarks/README.md).
            server.stop()
            servers.remove(server)
            for mode in ("list", "item"):
                svc = served[mode]
                top = run_wrk(f"{labels[mode]}  [ceiling]", ceiling.port, scripts[mode], args.duration,
                              args.connections, args.wrk_threads, pid=ceiling.pid)
                pairs.setdefault((tag, mode), []).append((svc, top))
                if mode == "item" and read_ceiling is not None:
                    floor = run_wrk(f"{labels[mode]}  [ceiling + the store's read]", read_ceiling.port, scripts[mode],
                                    args.duration, args.connections, args.wrk_threads, pid=read_ceiling.pid)
                    reads.append((svc, top, floor))
                    print(f"  round {rnd}, {tag}, item: the ceiling reading each record from the store first "
                          f"{floor.rps:,.0f} req/s ({floor.cpu_us:.0f} us CPU a request): "
                          f"{floor.rps / top.rps:.2f} of the ceiling", flush=True)
                print(f"  round {rnd}, {tag}, {mode}: serve {svc.rps:,.0f} req/s (p99 {svc.p99_ms:.1f} ms, "
                      f"{svc.cpu_us:.0f} us CPU a request), ceiling {top.rps:,.0f} req/s (p99 {top.p99_ms:.1f} ms, "
                      f"{top.cpu_us:.0f} us): {svc.rps / top.rps:.2f} in req/s, {top.cpu_us / svc.cpu_us:.2f} in CPU "
                      f"per request; load average {os.getloadavg()[0]:.2f}", flush=True)
    for bare in (ceiling, read_ceiling):
        if bare is not None:
            bare.stop()
            servers.remove(bare)

    print()
    print(f"wrk: {args.connections} connections, {args.wrk_threads} threads, {args.duration:g} s per run, "
          f"{args.rounds} rounds (a fresh server each, then the ceiling's runs with it stopped); {total:,} "
          f"harnesses over {args.groups} groups; list body {len(list_body):,} bytes, item body {len(item_body):,} "
          f"bytes; {os.cpu_count()} CPUs shared by wrk and the server. Medians over the rounds; the ratio is the "
          f"median of each round's service / ceiling (req/s), ceiling / service (CPU per request: the server "
          f"process's user + system time over the run, /proc/<pid>/stat, divided by the requests answered)")
    rows = []
    summary: dict[tuple[str, str], dict[str, float]] = {}
    for (tag, mode), runs in pairs.items():
        ratios = [svc.rps / top.rps for svc, top in runs]
        cpu_ratios = [top.cpu_us / svc.cpu_us for svc, top in runs]
        row = {"rps": _median([svc.rps for svc, _ in runs]), "p99": _median([svc.p99_ms for svc, _ in runs]),
               "ceiling_rps": _median([top.rps for _, top in runs]),
               "ceiling_p99": _median([top.p99_ms for _, top in runs]), "ratio": _median(ratios),
               "cpu_us": _median([svc.cpu_us for svc, _ in runs]),
               "ceiling_cpu_us": _median([top.cpu_us for _, top in runs]), "cpu_ratio": _median(cpu_ratios),
               "errors": sum(svc.errors + svc.non2xx + top.errors + top.non2xx for svc, top in runs)}
        summary[(tag, mode)] = row
        rows.append([f"{labels[mode]}  [{tag}]", f"{row['rps']:,.0f}", f"{row['p99']:.1f}",
                     f"{row['ceiling_rps']:,.0f}", f"{row['ceiling_p99']:.1f}", f"{row['ratio']:.2f}",
                     " ".join(f"{r:.2f}" for r in ratios), f"{row['cpu_us']:.0f}", f"{row['ceiling_cpu_us']:.0f}",
                     f"{row['cpu_ratio']:.2f}", " ".join(f"{r:.2f}" for r in cpu_ratios), f"{int(row['errors'])}"])
    print(table(rows, ["endpoint", "req/s", "p99 ms", "ceiling req/s", "ceiling p99", "ratio", "each round",
                       "CPU us/req", "ceiling's", "CPU ratio", "each round", "errors"]))
    if reads:
        bare = [floor.rps / top.rps for _, top, floor in reads]
        bare_cpu = [top.cpu_us / floor.cpu_us for _, top, floor in reads]
        svc_rps = [svc.rps / floor.rps for svc, _, floor in reads]
        svc_cpu = [floor.cpu_us / svc.cpu_us for svc, _, floor in reads]
        print(f"\nthe ceiling reading each item's record through the SQLite store first (one statement, as a miss "
              f"does): {_median([f.rps for *_, f in reads]):,.0f} req/s, "
              f"{_median([f.cpu_us for *_, f in reads]):.0f} us CPU a request: {_median(bare):.2f} of the bare "
              f"ceiling in req/s ({' '.join(f'{r:.2f}' for r in bare)}), {_median(bare_cpu):.2f} in CPU per request "
              f"({' '.join(f'{r:.2f}' for r in bare_cpu)}); the service's item misses are {_median(svc_rps):.2f} of "
              f"it in req/s, {_median(svc_cpu):.2f} in CPU per request")
    print()
    for when, st in rss.items():
        print(f"server memory {when}: VmRSS {st['VmRSS'] / 1024:.1f} MB, peak (VmHWM) {st['VmHWM'] / 1024:.1f} MB")

    after = [v for k, v in rss.items() if k.startswith("after")]
    worst_rss = max(st["VmRSS"] for st in after) / 1024
    checks = []
    on = [t for t in ("access log on", "access log off") if (t, "list") in summary][0]
    lst, item = summary[(on, "list")], summary[(on, "item")]
    checks += [
        (f"issue 7: list ({on}) >= 0.90 of the ceiling", lst["ratio"] >= 0.90, f"{lst['ratio']:.2f}"),
        (f"issue 7: list p99 <= 1.5 x the ceiling's", lst["p99"] <= 1.5 * lst["ceiling_p99"],
         f"{lst['p99']:.1f} ms against {lst['ceiling_p99']:.1f} ms"),
        (f"issue 7: item ({on}) >= 0.50 of the ceiling", item["ratio"] >= 0.50, f"{item['ratio']:.2f}"),
        (f"issue 7: item p99 <= 2 x the ceiling's", item["p99"] <= 2 * item["ceiling_p99"],
         f"{item['p99']:.1f} ms against {item['ceiling_p99']:.1f} ms"),
        (f"issue 15: list ({on}) >= 0.90 of the ceiling in CPU per request", lst["cpu_ratio"] >= 0.90,
         f"{lst['cpu_ratio']:.2f} ({lst['cpu_us']:.0f} us against {lst['ceiling_cpu_us']:.0f} us)"),
        (f"issue 15: item, every one a miss ({on}) >= 0.70 of the ceiling in req/s", item["ratio"] >= 0.70,
         f"{item['ratio']:.2f}"),
        (f"issue 15: item, every one a miss ({on}) >= 0.70 of the ceiling in CPU per request",
         item["cpu_ratio"] >= 0.70,
         f"{item['cpu_ratio']:.2f} ({item['cpu_us']:.0f} us against {item['ceiling_cpu_us']:.0f} us)"),
        ("issue 2: list p99 < 25 ms", lst["p99"] < 25, f"{lst['p99']:.2f} ms"),
        ("issue 2: server RSS < 80 MB with the records", worst_rss < 80, f"{worst_rss:.1f} MB"),
        ("no errors, no non-2xx", all(r["errors"] == 0 for r in summary.values()), ""),
    ]
    print()
    for name, ok, value in checks:
        print(f"  [{'met ' if ok else 'MISS'}] {name}: {value}")

    if args.profile:
        profile_app(backend_settings(tmp, "sqlite"), token, seeded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
