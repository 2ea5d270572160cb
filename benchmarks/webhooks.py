"""Webhook delivery throughput: deliveries per second to a receiver on loopback.

    python benchmarks/webhooks.py                       # sqlite, 2,000 deliveries, concurrency 4
    python benchmarks/webhooks.py --backend postgres --events 500 --webhooks 4 --concurrency 8

What it does: a throw-away store; one group with W webhooks (events "*") pointing at one
ThreadingHTTPServer on 127.0.0.1 that answers 204 at once and checks nothing (the receiver is not
what is measured). N harness creates go through RegistryService (so each writes its history row
and one event for the W webhooks in its own transaction, as a request does): N x W deliveries.
Then the delivery loop (DeliveryService, events.concurrency slots) is started and timed, fan-out
included, until every delivery is `delivered`. Prints deliveries/s, and the time the N writes took with the journal.

Each webhook's deliveries go one at a time (per-webhook order), so the figure grows with the
number of webhooks up to the concurrency; one webhook is bounded by one round trip plus two
write transactions per delivery.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _common import backend_settings, postgres_database, run_in_tempdir  # noqa: F401

from xpresso_env.app import build_context
from xpresso_env.journal.journal import DELIVERY_KIND, EVENT_KIND, QUEUE_KIND


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with _Handler.lock:
            _Handler.count += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def run(args: argparse.Namespace, tmp: Path, dsn=None) -> int:
    settings = backend_settings(tmp, args.backend, dsn)
    import dataclasses
    settings = dataclasses.replace(settings, events=dataclasses.replace(
        settings.events, concurrency=args.concurrency, poll_s=0.05))
    ctx = build_context(settings, check_schema=False, images=False)
    ctx.storage.init()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    receiver.daemon_threads = True
    threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    try:
        ctx.auth.add_group("bench")
        ctx.auth.add_user("admin", superuser=True)
        token = ctx.auth.issue_token("admin").display
        with ctx.storage.read() as tx:
            caller = ctx.auth.authenticate(token, "bench", tx)
        for n in range(args.webhooks):
            ctx.webhooks.create(caller, lambda n=n: {"url": f"{url}?n={n}", "events": ["*"],
                                                     "secret": "benchmark-secret-0123456789"})
        from xpresso_env.registry.service import HARNESS
        started = time.perf_counter()
        for n in range(args.events):
            ctx.registry.create(caller, HARNESS, lambda n=n: {"name": f"h{n}", "path": "/opt/pyats"})
        writes_s = time.perf_counter() - started
        total = args.events * args.webhooks
        started = time.perf_counter()
        ctx.deliveries.dispatcher.start()
        while True:
            with ctx.storage.read() as tx:
                if not tx.query(EVENT_KIND) and all(q.body["head"] == q.body["tail"] for q in tx.query(QUEUE_KIND)):
                    break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        ctx.deliveries.dispatcher.stop()
        with ctx.storage.read() as tx:
            delivered = sum(1 for d in tx.query(DELIVERY_KIND) if d.body["status"] == "delivered")
        print(f"backend {args.backend}: {args.events} changes x {args.webhooks} webhooks = {total} deliveries, "
              f"concurrency {args.concurrency}")
        print(f"  writes with journal: {args.events / writes_s:,.0f} changes/s")
        print(f"  delivered {delivered} (receiver saw {_Handler.count}) in {elapsed:.2f} s: "
              f"{delivered / elapsed:,.0f} deliveries/s")
        return 0 if delivered == total else 1
    finally:
        receiver.shutdown()
        receiver.server_close()
        ctx.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="sqlite", choices=("sqlite", "yaml", "postgres"))
    p.add_argument("--events", type=int, default=500, help="harness creates (each is one event)")
    p.add_argument("--webhooks", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    if args.backend == "postgres":
        with postgres_database() as dsn:
            return run_in_tempdir("xpresso-bench-webhooks-", args.keep, lambda tmp, servers: run(args, tmp, dsn))
    return run_in_tempdir("xpresso-bench-webhooks-", args.keep, lambda tmp, servers: run(args, tmp))


if __name__ == "__main__":
    sys.exit(main())
