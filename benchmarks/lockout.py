"""A bounded brute-force run on loopback (issue 16): two `xpresso-env serve` processes on one
PostgreSQL database, password guesses for one user alternating between them from a few client
threads. Shows the lockout holding across both: only ``auth.login_max_failures`` guesses are
ever checked, every later attempt (the right password included, on either server) is a 429 with
Retry-After, and another user still signs in.

    python benchmarks/lockout.py                      # 400 attempts, 4 client threads
    python benchmarks/lockout.py --attempts 1000 --threads 8
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from _common import postgres_database, run_in_tempdir  # noqa: F401  (puts the checkout on the path)

from xpresso_env.testing.server import cli, serve, write_config

PASSWORD = "the right password"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attempts", type=int, default=400, help="wrong guesses sent in all (bounded)")
    p.add_argument("--threads", type=int, default=4, help="client threads sending them at once")
    p.add_argument("--max-failures", type=int, default=5, help="auth.login_max_failures")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args()
    with postgres_database() as dsn:
        return run_in_tempdir("xpresso-lockout-", args.keep, lambda tmp, servers: run(tmp, servers, dsn, args))


def run(tmp: Path, servers: list, dsn: str, args: argparse.Namespace) -> int:
    config = write_config(tmp, {"storage": {"backend": "postgres", "dsn": dsn},
                                "auth": {"secret_file": str(tmp / "secret"), "login_max_failures": args.max_failures,
                                         "login_window_s": 900.0},
                                "probes": {"enabled": False}, "server": {"access_log": False}})
    cli(config, "init")
    for name in ("victim", "bystander"):
        cli(config, "user", "add", name)
        p = __import__("subprocess").run([sys.executable, "-m", "xpresso_env.cli", "--config", str(config), "user",
                                          "set-password", name, "--stdin"], input=PASSWORD + "\n", text=True,
                                         capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr
    with serve(config, log_file=tmp / "a.log") as a, serve(config, log_file=tmp / "b.log") as b:
        urls = [a.url, b.url]
        statuses: Counter = Counter()
        by_server: dict[str, Counter] = {u: Counter() for u in urls}
        latencies: dict[int, list[float]] = {401: [], 429: []}
        lock = threading.Lock()
        counter = iter(range(args.attempts))

        def client() -> None:
            session = requests.Session()
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                url = urls[n % 2]  # alternating between the two servers
                started = time.perf_counter()
                r = session.post(f"{url}/api/v2/auth/login", json={"username": "victim", "password": f"guess-{n}"},
                                 timeout=60)
                took = time.perf_counter() - started
                with lock:
                    statuses[r.status_code] += 1
                    by_server[url][r.status_code] += 1
                    latencies.setdefault(r.status_code, []).append(took)

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        right = [requests.post(f"{u}/api/v2/auth/login", json={"username": "victim", "password": PASSWORD},
                               timeout=60) for u in urls]
        other = requests.post(f"{b.url}/api/v2/auth/login", json={"username": "bystander", "password": PASSWORD},
                              timeout=60)
        locks = sum(s.log().count("sign-in locked for user 'victim'") for s in (a, b))
    print(f"lockout: 2 serve processes on one PostgreSQL database, {args.attempts} wrong guesses for one user "
          f"from {args.threads} threads, alternating servers, auth.login_max_failures={args.max_failures}")
    print(f"  answers: {dict(sorted(statuses.items()))} in {elapsed:.2f} s ({args.attempts / elapsed:.0f} attempts/s)")
    for url, counts in by_server.items():
        print(f"  server {url}: {dict(sorted(counts.items()))}")
    for code, values in sorted(latencies.items()):
        if values:
            print(f"  {code}: median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms")
    print(f"  guesses checked (401): {statuses[401]} (limit {args.max_failures})")
    print(f"  the right password afterwards: {[r.status_code for r in right]} "
          f"(Retry-After {[r.headers.get('Retry-After') for r in right]})")
    print(f"  another user meanwhile: {other.status_code}; lockout log lines: {locks}")
    held = statuses[401] <= args.max_failures and all(r.status_code == 429 for r in right) and other.status_code == 200
    print("  the lockout held across both processes" if held else "  THE LOCKOUT DID NOT HOLD")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
