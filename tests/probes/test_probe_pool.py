"""The running probe service's pool (CONTRACT §8, issue 8 "Probing scales and shares"): never more
than ``probes.concurrency`` probes at once, all on the service's own threads, and requests are
answered while every probe slot is stuck. A plugin prober the test holds (cloud engines have no
shipped prober), so the test decides when probes finish; real storage and a real app."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from falcon.testing import TestClient

from tests.conftest import make_settings, seed
from tests.probes.conftest import ProbeWorld
from xpresso_env.app import build_context, create_app
from xpresso_env.hookspecs import hookimpl
from xpresso_env.plugin import make_plugin_manager
from xpresso_env.probes.protocol import ProbeResult, ProberInfo

CONCURRENCY = 3
RECORDS = 10


class HeldProber:
    name = "held"

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.running = 0
        self.peak = 0
        self.done = 0
        self.threads: set[str] = set()
        self.release = threading.Event()

    def probe(self, target):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.current_thread().name)
            self.lock.notify_all()
        self.release.wait(30)
        with self.lock:
            self.running -= 1
            self.done += 1
            self.lock.notify_all()
        return ProbeResult(ok=True, detail="held and released")

    def wait(self, check, timeout_s: float = 20.0) -> None:
        """Block until ``check()`` holds (a bound, not a timing assertion)."""
        with self.lock:
            assert self.lock.wait_for(check, timeout_s), (self.running, self.done)


class HeldPlugin:
    def __init__(self, prober: HeldProber) -> None:
        self.prober = prober

    @hookimpl
    def xpresso_probers(self):
        return [ProberInfo(name="held", description="a prober the test holds", kind="engine", types=("cloud",),
                           factory=lambda settings: self.prober)]


def test_at_most_concurrency_probes_run_and_never_on_a_request_thread(tmp_path: Path):
    prober = HeldProber()
    s = make_settings(tmp_path, "sqlite", extra={"probes": {"enabled": True, "concurrency": CONCURRENCY}})
    ctx = build_context(s, pm=make_plugin_manager(extra_plugins=[HeldPlugin(prober)]), check_schema=False,
                        images=False)
    ctx.storage.init()
    try:
        w = ProbeWorld(ctx=ctx, client=TestClient(create_app(ctx)), tokens=seed(ctx))
        ids = [w.engine(f"c{n}", "https://cloud.invalid", type="cloud") for n in range(RECORDS)]
        ctx.start()
        prober.wait(lambda: prober.running == CONCURRENCY)
        # The scheduler claims up to twice the pool ahead; once it has, the extra claimed jobs
        # wait in the pool's queue: none of them may reach the prober while the slots are held.
        deadline = time.monotonic() + 20
        while ctx.probes.status()["in_flight"] < 2 * CONCURRENCY:
            assert time.monotonic() < deadline, ctx.probes.status()
            time.sleep(0.02)
        # every slot is stuck, and the API still answers (probes are not on request threads)
        for _ in range(3):
            assert w.get("/api/v2/engines").status_code == 200
            assert w.get(f"/api/v2/engines/{ids[0]}/state").status_code == 200
        with prober.lock:
            assert prober.running == CONCURRENCY and prober.peak == CONCURRENCY
        prober.release.set()
        prober.wait(lambda: prober.done == RECORDS)
        assert prober.peak == CONCURRENCY
        assert prober.threads and all(t.startswith("xpresso-probe") for t in prober.threads), prober.threads
        for record_id in ids:
            deadline = time.monotonic() + 20
            while w.record("engines", record_id)["operational_state"] != "ONLINE":
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        prober.release.set()
        ctx.close()
